"""What a checkout request must look like: phone and amount rules, and field trimming.

The messages here are part of the public contract (clients match on them); keep them exact.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from .daraja.wire import ACCOUNT_REFERENCE_MAX, TRANSACTION_DESC_MAX, encodable, trim

INVALID_PHONE = "Invalid phone number format"
_PHONE = re.compile(r"(?:\+254|254|0)([17][0-9]{8})")
_SEPARATORS = re.compile(r"[\s\-]")


class CheckoutError(ValueError):
    def __init__(self, message: str, field: str) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


def normalise_phone(raw: Any) -> str:
    """07XXXXXXXX, 01XXXXXXXX, 2547…, 2541…, +254… (spaces or dashes tolerated) → 2547…/2541…"""
    if not isinstance(raw, str):
        raise CheckoutError(INVALID_PHONE, "phone")
    match = _PHONE.fullmatch(_SEPARATORS.sub("", raw))
    if not match:
        raise CheckoutError(INVALID_PHONE, "phone")
    return "254" + match.group(1)


def amount_message(max_amount: int) -> str:
    return f"Amount must be between 1 and {max_amount:,}"


def whole_number(raw: Any) -> int | None:
    """A whole number in the forms an amount may take: a JSON integer, a whole float (100.0 from a
    JavaScript number), or a string of up to 15 ASCII digits. Anything else (true, 1.5, "1e3"): None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdecimal() and len(raw.strip()) <= 15:
        return int(raw.strip())
    return None


def parse_amount(raw: Any, max_amount: int) -> int:
    """A whole number of KES from 1 to `max_amount`. Decimals are rejected, never rounded."""
    value = whole_number(raw)
    if value is None or not 1 <= value <= max_amount:
        raise CheckoutError(amount_message(max_amount), "amount")
    return value


# Invisible characters that change how the text around them reads (bidi overrides, zero-width
# spaces, the BOM, …: Unicode's "format" category) and line or paragraph separators: refused in
# what the customer reads on the page and the phone, and the shop searches for. Joiners stay:
# emoji sequences and some scripts need them.
_JOINERS = frozenset("\u200c\u200d")
_HIDDEN = frozenset(("Cf", "Co", "Zl", "Zp"))
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")  # C0, DEL and C1


def is_clean_text(text: str) -> bool:
    """Text that can be stored and sent as UTF-8, without control characters."""
    return encodable(text) and _CONTROL.search(text) is None


def is_visible_text(text: str) -> bool:
    """No invisible formatting (a right-to-left override would show "INV-1042" as something else)."""
    return not any(unicodedata.category(c) in _HIDDEN and c not in _JOINERS for c in text)


def _optional_text(body: dict[str, Any], name: str, default: str, limit: int) -> str:
    value = body.get(name)
    if value is None:
        return default
    if not isinstance(value, str):
        raise CheckoutError(f"{name} must be a string", name)
    if not is_clean_text(value) or not is_visible_text(value):
        raise CheckoutError(f"{name} has characters that cannot be sent to M-Pesa", name)
    # Daraja's limits: trimmed rather than rejected, so a long cart reference still pays.
    return trim(value, limit) or default


@dataclass(frozen=True)
class Checkout:
    phone: str
    amount: int
    account_reference: str
    description: str
    order_id: str | None = None  # the shop's order it pays (gateway/orders.py), carried into the payment


def parse_checkout(body: dict[str, Any], max_amount: int) -> Checkout:
    return Checkout(
        phone=normalise_phone(body.get("phone")),
        amount=parse_amount(body.get("amount"), max_amount),
        account_reference=_optional_text(body, "accountReference", "Payment", ACCOUNT_REFERENCE_MAX),
        description=_optional_text(body, "description", "Payment", TRANSACTION_DESC_MAX),
    )


def mask_phone(phone: str) -> str:
    """254712345678 → 2547****5678, for pages and logs."""
    return phone[:4] + "*" * (len(phone) - 8) + phone[-4:] if len(phone) > 8 else phone
