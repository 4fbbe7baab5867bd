"""A bounded record of every request the simulator received and every callback it sent.

Secrets never leave it: Authorization headers, STK Passwords (base64 of the passkey) and access
tokens are masked when an entry is first read, and every read goes through `Journal.get` or
`Journal.entries` (an entry is recorded with every request, and nearly all are never read: masking
them all on the way in was a twentieth of the simulator's CPU time per push).
"""

from __future__ import annotations

import itertools
import json
import re
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

# Field names (any letter case) whose values are secrets, whatever a client puts in its body.
SECRET_FIELDS = {"password", "passkey", "access_token", "consumer_secret", "consumersecret", "secret",
                 "securitycredential", "initiatorpassword", "client_secret"}
SECRET_HEADERS = ("authorization", "cookie")


def mask(value: str) -> str:
    return value[:4] + "…" if len(value) > 8 else "…"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Keep only the scheme of credentials ("Bearer …"); a bare value is masked whole."""
    def masked(value: str) -> str:
        scheme, space, _ = value.partition(" ")
        return f"{scheme} …" if space and scheme.lower() in ("bearer", "basic") else "…"
    return {k: (masked(v) if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


# `"Password": "…"`, `Password=…` and the like inside a body that is not JSON (or is broken JSON).
_SECRET_IN_TEXT = re.compile(
    r'("?(?:' + "|".join(sorted(SECRET_FIELDS)) + r')"?\s*[:=]\s*"?)([^"&,\s}]+)', re.IGNORECASE)
# Every name in SECRET_FIELDS contains one of these: an ASCII text without any of them, in any
# letter case, cannot match _SECRET_IN_TEXT, and most texts (phone numbers, header values) are such.
# (A non-ASCII text always goes through the pattern: IGNORECASE also matches "ſ" for "s".)
SECRET_MARKERS = ("pass", "secret", "access_token", "securitycredential")


def _may_name_a_secret(text: str) -> bool:
    if not text.isascii():
        return True
    lowered = text.lower()  # the markers spelled out: this runs for every text of every request
    return "pass" in lowered or "secret" in lowered or "access_token" in lowered or "securitycredential" in lowered


def redact_body(body: Any, secrets: frozenset[str] = frozenset()) -> Any:
    """Mask secret-named fields, `Password=…`-like text, and any known secret value."""
    if isinstance(body, str):  # the commonest, first
        if _may_name_a_secret(body):
            body = _SECRET_IN_TEXT.sub(r"\1…", body)
        for secret in secrets:
            if secret and secret in body:
                body = body.replace(secret, "…")
        return body
    if isinstance(body, dict):
        return {k: (mask(v) if k.lower() in SECRET_FIELDS and isinstance(v, str) else redact_body(v, secrets))
                for k, v in body.items()}
    if isinstance(body, list):
        return [redact_body(v, secrets) for v in body]
    return body


def parse_body(raw: bytes) -> Any:
    """JSON if it is JSON, else the text (cut short), for display. `Journal.add` masks secrets."""
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return raw[:2000].decode("utf-8", "replace")


@dataclass
class JournalEntry:
    id: int
    at: float
    kind: str  # "request" (to the simulator) or "callback" (from it)
    method: str
    url: str
    status: int | None
    duration_ms: float | None
    request_headers: dict[str, str] = field(default_factory=dict)
    request_body: Any = None
    response_body: Any = None
    error: str | None = None
    checkout_request_id: str | None = None
    attempt: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "at": self.at, "kind": self.kind, "method": self.method, "url": self.url,
                "status": self.status, "durationMs": self.duration_ms, "requestHeaders": self.request_headers,
                "requestBody": self.request_body, "responseBody": self.response_body, "error": self.error,
                "checkoutRequestId": self.checkout_request_id, "attempt": self.attempt}


TOO_DEEP = "(nested too deeply to show)"


def _masked(value: Any, secrets: frozenset[str]) -> Any:
    """`redact_body`, or TOO_DEEP for JSON nested deeper than masking can walk (json.loads reads
    600 levels; the walk runs out of Python's recursion limit first): never shown unmasked."""
    try:
        return redact_body(value, secrets)
    except RecursionError:
        return TOO_DEEP


class _Recorded:
    """An entry as recorded, its secrets not yet masked; `shown` masks them, once."""

    __slots__ = ("id", "kind", "checkout_request_id", "_fields", "_entry")

    def __init__(self, entry_id: int, fields: dict[str, Any]) -> None:
        self.id = entry_id
        self.kind: str = fields["kind"]
        self.checkout_request_id: str | None = fields.get("checkout_request_id")
        self._fields: dict[str, Any] | None = fields
        self._entry: JournalEntry | None = None

    def shown(self, secrets: frozenset[str]) -> JournalEntry:
        if self._entry is None:
            fields, self._fields = self._fields, None  # the unmasked values are kept no longer
            assert fields is not None
            for name in ("request_body", "response_body", "error", "url"):
                if fields.get(name) is not None:
                    fields[name] = _masked(fields[name], secrets)
            if "request_headers" in fields:
                fields["request_headers"] = _masked(redact_headers(fields["request_headers"]), secrets)
            self._entry = JournalEntry(id=self.id, **fields)
        return self._entry


class Journal:
    def __init__(self, size: int = 2000, secrets: Iterable[str] = ()) -> None:
        self._entries: deque[_Recorded] = deque(maxlen=size)
        self._ids = itertools.count(1)
        # Values never stored, wherever they appear (passkeys, the consumer secret); short ones are
        # left alone so that masking cannot garble ordinary text.
        self.secrets = frozenset(s for s in secrets if len(s) >= 6)

    def add(self, **fields: Any) -> int:
        """Record an exchange (JournalEntry's fields): its id. Its values are kept as given until the
        entry is first read and masked, so a caller must not change them afterwards (none does: a
        request's are recorded once it is answered, a callback's body is the one sent)."""
        entry_id = next(self._ids)
        self._entries.append(_Recorded(entry_id, fields))
        return entry_id

    def get(self, entry_id: int) -> JournalEntry | None:
        found = next((e for e in self._entries if e.id == entry_id), None)
        return found.shown(self.secrets) if found is not None else None

    def entries(self, kind: str | None = None, checkout_request_id: str | None = None,
                limit: int = 200) -> list[JournalEntry]:
        found: Iterable[_Recorded] = reversed(self._entries)
        if kind:
            found = (e for e in found if e.kind == kind)
        if checkout_request_id:
            found = (e for e in found if e.checkout_request_id == checkout_request_id)
        return [e.shown(self.secrets) for e in itertools.islice(found, limit)]

    def clear(self) -> None:
        self._entries.clear()
