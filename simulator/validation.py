"""Daraja's checks of STK push and query bodies, and why a Password is wrong, as plain functions.

Each check raises the exception Daraja answers with (`InvalidField` naming the field, in the order
of Safaricom's sample request; `MerchantDoesNotExist`; `WrongCredentials`), so the model and the
HTTP layer never repeat a rule.
"""

from __future__ import annotations

import base64
import binascii
import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from .exceptions import InvalidField, MerchantDoesNotExist, WrongCredentials
from .phones import msisdn
from .wire import nairobi_time, password_matches, read_timestamp

TRANSACTION_TYPES = ("CustomerPayBillOnline", "CustomerBuyGoodsOnline")
MAX_AMOUNT = 250_000  # Safaricom's per-transaction maximum (2025 FAQ)


@dataclass(frozen=True)
class PushOrder:
    """An STK push whose fields passed Daraja's checks, in canonical string form."""

    shortcode: str
    password: str
    timestamp: str
    transaction_type: str
    amount: int
    party_a: str
    party_b: str
    phone: str
    callback_url: str
    account_reference: str
    description: str


@dataclass(frozen=True)
class QueryOrder:
    """An STK query whose fields passed Daraja's checks."""

    shortcode: str
    password: str
    timestamp: str
    checkout_request_id: str


def _digits(value: Any, lo: int, hi: int) -> str | None:
    """A JSON number or numeric string of lo..hi ASCII digits (Daraja takes both), as text."""
    if isinstance(value, bool):
        return None
    text = str(value) if isinstance(value, int) else value
    if not isinstance(text, str):
        return None
    text = text.strip()
    return text if text.isascii() and text.isdecimal() and lo <= len(text) <= hi else None


def _shortcode(value: Any) -> str | None:
    return _digits(value, 5, 7)


def _phone(value: Any) -> str | None:
    return msisdn(_digits(value, 12, 12))


def _text(value: Any) -> str | None:
    """Any string with something in it, as it was sent."""
    return value if isinstance(value, str) and value.strip() else None


def _timestamp(value: Any) -> str | None:
    text = _digits(value, 14, 14)
    return text if text is not None and read_timestamp(text) is not None else None


_AMOUNT = re.compile(r"[0-9]+(?:\.0+)?")  # no "1e2", "+7", "1_000" or non-ASCII digits


def _amount(value: Any) -> int | None:
    """Whole shillings from 1 to MAX_AMOUNT, as a number, a whole float or a string of digits."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        if not _AMOUNT.fullmatch(value.strip()):
            return None
        value = float(value.strip())
    if isinstance(value, float):
        if not value.is_integer():
            return None
        value = int(value)
    return value if isinstance(value, int) and 1 <= value <= MAX_AMOUNT else None


_SPACE = re.compile(r"\s")  # for a str, exactly the characters str.isspace() accepts


def _callback_url(value: Any) -> str | None:
    """An http(s) URL as sent: Daraja refuses one with stray spaces (LNMOnlineAndroidSample#40)."""
    if not isinstance(value, str) or len(value) > 500 or _SPACE.search(value):
        return None
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError on a port out of range
    except ValueError:
        return None
    return value if parts.scheme in ("http", "https") and parts.hostname else None


def _checked(body: Mapping[str, Any], checks: list[tuple[str, str, Callable[[Any], Any]]]) -> dict[str, Any]:
    """Each field through its check, in order; the first that fails is reported under its name."""
    values = {}
    for name, reported, check in checks:
        value = check(body.get(name))
        if value is None:
            raise InvalidField(reported)
        values[name] = value
    return values


@functools.lru_cache(maxsize=8)  # one list per setting, not one per push
def _push_checks(account_reference_max: int) -> list[tuple[str, str, Callable[[Any], Any]]]:
    def account_reference(value: Any) -> str | None:
        if not _text(value):
            return None
        return value if not account_reference_max or len(value) <= account_reference_max else None

    return [
        ("BusinessShortCode", "BusinessShortCode", _shortcode),
        ("Password", "Password", _text),
        ("Timestamp", "Timestamp", _timestamp),
        ("TransactionType", "TransactionType", lambda v: v if v in TRANSACTION_TYPES else None),
        ("Amount", "Amount", _amount),
        ("PhoneNumber", "PhoneNumber", _phone),
        ("PartyA", "PartyA", _phone),
        ("PartyB", "PartyB", _shortcode),
        ("CallBackURL", "CallBackURL", _callback_url),
        ("AccountReference", "AccountReference", account_reference),
        # A missing TransactionDesc is reported by its internal name, "Remarks".
        ("TransactionDesc", "Remarks", lambda v: v.strip() if _text(v) else None),
    ]


def validate_push(body: Mapping[str, Any], *, account_reference_max: int = 0) -> PushOrder:
    """Daraja's field checks of an STK push, in the order of its sample request, except that a bad
    PhoneNumber is reported before a bad PartyA (osen-wc-mpesa#65: both bad, "Invalid PhoneNumber").
    `account_reference_max` 0: no length limit (Daraja accepts more than its documented 12)."""
    values = _checked(body, _push_checks(account_reference_max))
    return PushOrder(
        shortcode=values["BusinessShortCode"], password=values["Password"], timestamp=values["Timestamp"],
        transaction_type=values["TransactionType"], amount=values["Amount"], party_a=values["PartyA"],
        party_b=values["PartyB"], phone=values["PhoneNumber"], callback_url=values["CallBackURL"],
        account_reference=values["AccountReference"], description=values["TransactionDesc"],
    )


def validate_query(body: Mapping[str, Any]) -> QueryOrder:
    """Daraja's field checks of an STK query."""
    values = _checked(body, [
        ("BusinessShortCode", "BusinessShortCode", _shortcode),
        ("Password", "Password", _text),
        ("Timestamp", "Timestamp", _timestamp),
        ("CheckoutRequestID", "CheckoutRequestID", lambda v: v.strip() if _text(v) else None),
    ])
    return QueryOrder(shortcode=values["BusinessShortCode"], password=values["Password"],
                      timestamp=values["Timestamp"], checkout_request_id=values["CheckoutRequestID"])


def check_password(merchants: Mapping[str, str], shortcode: str, password: str, timestamp: str, now: float) -> None:
    """Daraja's merchant and Password check; a wrong Password carries a hint for the developer."""
    passkey = merchants.get(shortcode)
    if passkey is None:
        raise MerchantDoesNotExist()
    if not password_matches(password, shortcode, passkey, timestamp):
        raise WrongCredentials(hint=diagnose_password(shortcode, passkey, password, timestamp, now))


def diagnose_password(shortcode: str, passkey: str, password: str, timestamp: str, now: float) -> str:
    """Why a Password is wrong, in words (Daraja only ever says "Wrong credentials"). The passkey
    itself never appears in the answer."""
    try:
        decoded = base64.b64decode(password, validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        return "Password is not base64 of text: it must be base64(BusinessShortCode + Passkey + Timestamp)"
    if not decoded.startswith(shortcode):
        return f"Password does not start with the BusinessShortCode {shortcode} once base64-decoded"
    rest = decoded[len(shortcode):]
    inner_stamp = rest[-14:]
    if len(rest) >= 14 and inner_stamp.isdigit() and rest[:-14] == passkey and inner_stamp != timestamp:
        return (f"Password was built with timestamp {inner_stamp} but the Timestamp field says {timestamp}: "
                "use the same value for both")
    if not rest.endswith(timestamp):
        return "Password does not end with the Timestamp field once base64-decoded"
    if rest[:-len(timestamp)] != passkey:
        hint = f"the passkey inside the Password does not match shortcode {shortcode}'s passkey"
    else:
        hint = "Password does not match base64(BusinessShortCode + Passkey + Timestamp)"
    return hint + _clock_note(timestamp, now)


def _clock_note(timestamp: str, now: float) -> str:
    """A note when the Timestamp is half an hour or more away from Nairobi's clock."""
    stamped = read_timestamp(timestamp)
    if stamped is None:
        return ""
    hours = (stamped - nairobi_time(now)).total_seconds() / 3600
    if abs(hours) < 0.5:
        return ""
    note = f"; also, the Timestamp is {abs(hours):.0f} h {'behind' if hours < 0 else 'ahead of'} Nairobi time"
    if round(hours) == -3:
        note += " (built in UTC? Daraja expects Africa/Nairobi time)"
    return note
