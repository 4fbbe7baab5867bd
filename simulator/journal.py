"""A bounded record of every request the simulator received and every callback it sent.

Secrets never enter it: Authorization headers, STK Passwords (base64 of the passkey) and access
tokens are masked before an entry is stored.
"""

from __future__ import annotations

import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

SECRET_FIELDS = ("Password", "access_token")
SECRET_HEADERS = ("authorization", "cookie")


def mask(value: str) -> str:
    return value[:4] + "…" if len(value) > 8 else "…"


def redact_headers(headers: Mapping[str, str]) -> dict[str, str]:
    return {k: (v.split(" ", 1)[0] + " …" if k.lower() in SECRET_HEADERS else v) for k, v in headers.items()}


def redact_body(body: Any) -> Any:
    if isinstance(body, dict):
        return {k: (mask(v) if k in SECRET_FIELDS and isinstance(v, str) else redact_body(v)) for k, v in body.items()}
    if isinstance(body, list):
        return [redact_body(v) for v in body]
    return body


def parse_body(raw: bytes) -> Any:
    """JSON if it is JSON, else the text (cut short), for display."""
    if not raw:
        return None
    try:
        return redact_body(json.loads(raw))
    except ValueError:
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


class Journal:
    def __init__(self, size: int = 2000) -> None:
        self._entries: deque[JournalEntry] = deque(maxlen=size)
        self._ids = itertools.count(1)

    def add(self, **fields: Any) -> JournalEntry:
        entry = JournalEntry(id=next(self._ids), **fields)
        self._entries.append(entry)
        return entry

    def get(self, entry_id: int) -> JournalEntry | None:
        return next((e for e in self._entries if e.id == entry_id), None)

    def entries(self, kind: str | None = None, checkout_request_id: str | None = None,
                limit: int = 200) -> list[JournalEntry]:
        found: Iterable[JournalEntry] = reversed(self._entries)
        if kind:
            found = (e for e in found if e.kind == kind)
        if checkout_request_id:
            found = (e for e in found if e.checkout_request_id == checkout_request_id)
        return list(itertools.islice(found, limit))

    def clear(self) -> None:
        self._entries.clear()
