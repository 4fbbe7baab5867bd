"""The Daraja wire facts the simulator checks and produces, written from Safaricom's documentation
(Lipa na M-Pesa Online: the request's Password and Timestamp, and the callback body).

- Timestamps are `YYYYMMDDHHmmss` on Nairobi's clock (EAT, UTC+3 all year).
- Password = base64 of BusinessShortCode, Passkey and Timestamp written one after the other.
- The callback Daraja POSTs is `{"Body": {"stkCallback": {…}}}`; ResultCode is a JSON number when
  it is numeric and a string otherwise (`"SFC_IC0003"`); a success carries `CallbackMetadata.Item`,
  a list of `{"Name", "Value"}` pairs in which TransactionDate and PhoneNumber are numbers and
  Balance usually has no Value. On the wire it is compact JSON, and Amount is written with two
  decimals, `{"Name":"Amount","Value":1.00}` (raw callbacks printed from 2018 to 2024).
"""

from __future__ import annotations

import base64
import functools
import hmac
import json
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

NAIROBI = ZoneInfo("Africa/Nairobi")
TIMESTAMP_PATTERN = "%Y%m%d%H%M%S"


def nairobi_time(at: float) -> datetime:
    """A moment (seconds since the epoch) on Nairobi's clock."""
    return datetime.fromtimestamp(at, tz=NAIROBI)


def daraja_timestamp(at: float) -> str:
    """`YYYYMMDDHHmmss` in Nairobi time: Daraja's Timestamp and the callback's TransactionDate."""
    return nairobi_time(at).strftime(TIMESTAMP_PATTERN)


@functools.lru_cache(maxsize=1024)  # clients send the same few (the current seconds) again and again
def read_timestamp(text: str) -> datetime | None:
    """A Daraja Timestamp as a Nairobi moment, or None if it is no date and time."""
    try:
        return datetime.strptime(text, TIMESTAMP_PATTERN).replace(tzinfo=NAIROBI)
    except ValueError:
        return None


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    """What Daraja expects in Password for this shortcode, passkey and Timestamp."""
    plain = "".join((shortcode, passkey, timestamp))
    return base64.b64encode(plain.encode("utf-8")).decode("ascii")


def password_matches(password: str, shortcode: str, passkey: str, timestamp: str) -> bool:
    """Whether `password` is the one Daraja expects, compared in constant time."""
    expected = stk_password(shortcode, passkey, timestamp)
    return hmac.compare_digest(password.encode("utf-8", "surrogatepass"), expected.encode("ascii"))


def _stk_callback(merchant_request_id: str, checkout_request_id: str, result_code: int | str,
                  result_desc: str, **extra: Any) -> dict[str, Any]:
    callback = {"MerchantRequestID": merchant_request_id, "CheckoutRequestID": checkout_request_id,
                "ResultCode": result_code, "ResultDesc": result_desc, **extra}
    return {"Body": {"stkCallback": callback}}


def paid_callback(*, merchant_request_id: str, checkout_request_id: str, result_desc: str, amount: int | float,
                  receipt: str, transaction_date: str, msisdn: str, balance_item: bool) -> dict[str, Any]:
    """The callback of a payment: Amount as given (a float is sent as `100.00`, an int as `100`),
    receipt, date and phone as numbers, and a Balance item without a Value when `balance_item`."""
    items: list[dict[str, Any]] = [{"Name": "Amount", "Value": amount},
                                   {"Name": "MpesaReceiptNumber", "Value": receipt}]
    if balance_item:
        items.append({"Name": "Balance"})
    items.append({"Name": "TransactionDate", "Value": int(transaction_date)})
    items.append({"Name": "PhoneNumber", "Value": int(msisdn)})
    return _stk_callback(merchant_request_id, checkout_request_id, 0, result_desc,
                         CallbackMetadata={"Item": items})


def failed_callback(*, merchant_request_id: str, checkout_request_id: str, result_code: str,
                    result_desc: str) -> dict[str, Any]:
    """The callback of a prompt that ended without payment: no CallbackMetadata."""
    numeric = result_code.isascii() and result_code.isdigit()
    return _stk_callback(merchant_request_id, checkout_request_id, int(result_code) if numeric else result_code,
                         result_desc)


_AMOUNT_MARK = "\u0000amount\u0000"


def callback_text(body: dict[str, Any]) -> str:
    """The callback's bytes as Daraja sends them: compact JSON, a decimal Amount written with two
    decimals (`100.00`, which no JSON library writes by itself), an integer one as it is (`100`)."""
    callback = body["Body"]["stkCallback"]
    items = callback.get("CallbackMetadata", {}).get("Item", [])
    amount = next((item.get("Value") for item in items if item.get("Name") == "Amount"), None)
    if not isinstance(amount, float):
        return json.dumps(body, separators=(",", ":"))
    marked_items = [{**item, "Value": _AMOUNT_MARK} if item.get("Name") == "Amount" else item for item in items]
    marked = {"Body": {"stkCallback": {**callback, "CallbackMetadata": {"Item": marked_items}}}}
    return json.dumps(marked, separators=(",", ":")).replace(json.dumps(_AMOUNT_MARK), f"{amount:.2f}")
