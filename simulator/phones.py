"""The simulator's one phone rule: which numbers belong to Safaricom subscribers, and in what forms.

Daraja's `PartyA`/`PhoneNumber`, the catalogue, the control API and the virtual phone's address
all use `msisdn()`. The browser's copy of the rule is `static/js/sim-format.js`.
"""

from __future__ import annotations

import re
from typing import Any

# The nine digits after the country code on Safaricom's ranges: 07XX XXX XXX and 0110-0115 XXX XXX.
_SUBSCRIBER = r"(7[0-9]{8}|11[0-5][0-9]{6})"
_CANONICAL = re.compile(r"254" + _SUBSCRIBER)
_TYPED = re.compile(r"(?:\+254|254|0)" + _SUBSCRIBER)
_SEPARATORS = re.compile(r"[\s\-]")


def msisdn(raw: Any, *, typed: bool = False) -> str | None:
    """The subscriber's MSISDN (`2547XXXXXXXX` or `2541[0-5]XXXXXXX`), or None if `raw` is not one.

    Daraja and the control API take only that form. A number a person typed (`typed=True`, the
    virtual phone's address) may also be `07…`, `011…` or `+254…`, with spaces or dashes."""
    if not isinstance(raw, str):
        return None
    match = _TYPED.fullmatch(_SEPARATORS.sub("", raw)) if typed else _CANONICAL.fullmatch(raw)
    return "254" + match.group(1) if match else None
