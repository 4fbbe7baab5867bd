"""Daraja's wire format: the STK password, timestamps, field limits and callback parsing.

The gateway's own reading and writing of Daraja's format (the simulator has its own, written
apart, so that a mistake here is not mirrored there; tests/contract checks both against
Safaricom's examples). Every code that comes off the wire is compared as a string (`code_str`),
because Daraja sends `"0"` in one place, `0` in another and `"SFC_IC0003"` in a third.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

NAIROBI = ZoneInfo("Africa/Nairobi")
TIMESTAMP_FORMAT = "%Y%m%d%H%M%S"
ACCOUNT_REFERENCE_MAX = 12
TRANSACTION_DESC_MAX = 13


def nairobi_timestamp(now: datetime | None = None) -> str:
    """`YYYYMMDDHHmmss` in Africa/Nairobi time, as Daraja expects."""
    now = now or datetime.now(tz=NAIROBI)
    if now.tzinfo is None:
        raise ValueError("nairobi_timestamp needs an aware datetime")
    return now.astimezone(NAIROBI).strftime(TIMESTAMP_FORMAT)


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    """base64(BusinessShortCode + Passkey + Timestamp), plain concatenation."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode("ascii")


def parse_expires_in(value: Any) -> int:
    """Daraja sends `"3599"` (a string); its docs show a number. Accept both."""
    seconds = int(str(value).strip())
    if seconds <= 0:
        raise ValueError(f"expires_in must be positive, got {value!r}")
    return seconds


def code_str(value: Any) -> str:
    """A ResultCode/ResponseCode as Daraja's canonical string: 0 → "0", "1032" → "1032"."""
    if isinstance(value, bool) or value is None or (isinstance(value, float) and not math.isfinite(value)):
        raise ValueError(f"not a result code: {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    text = str(value).strip()
    if not text:
        raise ValueError("empty result code")
    return text


def trim(text: str, limit: int) -> str:
    return text.strip()[:limit].strip()


@dataclass(frozen=True)
class StkCallback:
    """The parts of `Body.stkCallback` the gateway acts on."""

    merchant_request_id: str
    checkout_request_id: str
    result_code: str
    result_desc: str
    amount: float | None = None
    receipt: str | None = None
    transaction_date: str | None = None
    phone: str | None = None

    @property
    def succeeded(self) -> bool:
        return self.result_code == "0"


class MalformedCallback(ValueError):
    """The body is not a Daraja STK callback."""


def parse_stk_callback(body: Any) -> StkCallback:
    """Read Daraja's callback body; items are read by Name, never by position. A value no Daraja
    callback could carry (a non-finite or absurd number, a huge string) makes the body malformed."""
    try:
        cb = body["Body"]["stkCallback"]
    except (TypeError, KeyError):
        raise MalformedCallback("missing Body.stkCallback") from None
    if not isinstance(cb, dict):
        raise MalformedCallback("Body.stkCallback must be an object")
    ids = {}
    for name in ("MerchantRequestID", "CheckoutRequestID"):
        value = cb.get(name)
        if not isinstance(value, str) or not value.strip() or len(value) > 100 or not encodable(value):
            raise MalformedCallback(f"{name} must be a non-empty string")
        ids[name] = value.strip()
    try:
        result_code = code_str(cb.get("ResultCode"))
    except ValueError:
        raise MalformedCallback("ResultCode is missing or not a code") from None
    if len(result_code) > 40 or not encodable(result_code):
        raise MalformedCallback("ResultCode is too long or not text")
    result_desc = cb.get("ResultDesc")
    result_desc = result_desc if isinstance(result_desc, str) and encodable(result_desc) else ""
    items = _metadata_items(cb.get("CallbackMetadata"))
    receipt = items.get("MpesaReceiptNumber")
    if receipt is not None and not (isinstance(receipt, str) and encodable(receipt) and len(receipt) <= 40):
        raise MalformedCallback("MpesaReceiptNumber is not a receipt number")
    if result_code == "0" and not (isinstance(receipt, str) and receipt.strip()):
        raise MalformedCallback("a success callback needs CallbackMetadata with MpesaReceiptNumber")
    return StkCallback(
        merchant_request_id=ids["MerchantRequestID"],
        checkout_request_id=ids["CheckoutRequestID"],
        result_code=result_code,
        result_desc=result_desc[:500],
        amount=_amount_item(items.get("Amount")),
        receipt=receipt.strip() if isinstance(receipt, str) else None,
        transaction_date=_digits_item(items.get("TransactionDate"), "TransactionDate"),
        phone=_digits_item(items.get("PhoneNumber"), "PhoneNumber"),
    )


# Far above any M-Pesa transaction (250,000 in 2025): a bigger Amount is not from Daraja.
_AMOUNT_CEILING = 1e9
_AMOUNT_TEXT = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,4})?")


def _amount_item(value: Any) -> float | None:
    """Amount arrives as 1, 1.00 or "1.00"; None when absent."""
    if value is None:
        return None
    if isinstance(value, str) and _AMOUNT_TEXT.fullmatch(value.strip()):
        value = float(value.strip())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise MalformedCallback("Amount is not a number")
    if not (math.isfinite(value) and 0 <= value <= _AMOUNT_CEILING):
        raise MalformedCallback("Amount is not a number M-Pesa could send")
    return float(value)


def _digits_item(value: Any, name: str) -> str | None:
    """TransactionDate and PhoneNumber: 14 and 12 digits as JSON numbers (or strings); kept as text."""
    if value is None or value == "":
        return None
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 10**20:
        return str(value)
    if isinstance(value, str) and len(value) <= 30 and encodable(value):
        return value.strip()  # masked numbers ("2547 ***** 126") are text
    raise MalformedCallback(f"{name} is not a value M-Pesa could send")


def encodable(text: str) -> bool:
    """Text that can be stored and sent as UTF-8 (no lone surrogates)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _metadata_items(metadata: Any) -> dict[str, Any]:
    if metadata is None:
        return {}
    items = metadata.get("Item") if isinstance(metadata, dict) else None
    if not isinstance(items, list):
        raise MalformedCallback("CallbackMetadata.Item must be a list")
    found: dict[str, Any] = {}
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("Name"), str):
            found[item["Name"]] = item.get("Value")  # Balance often has no Value
    return found
