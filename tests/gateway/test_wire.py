"""Daraja's wire format: STK password, Nairobi timestamps, code normalisation, callback bodies."""

from __future__ import annotations

import base64
import copy
import json
from datetime import UTC, datetime

import pytest

from gateway.config import SANDBOX_PASSKEY
from gateway.daraja.wire import (
    MalformedCallback,
    StkCallback,
    code_str,
    nairobi_timestamp,
    parse_expires_in,
    parse_stk_callback,
    stk_password,
)

# daraja-reference.md §2, official sample request.
OFFICIAL_PASSWORD = ("MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQyYzkx"
                     "OTIwMjEwNjI4MDkyNDA4")

# daraja-reference.md §4, success sample (with the Balance item carrying no Value).
SUCCESS_SAMPLE = json.loads("""
{"Body": {"stkCallback": {
  "MerchantRequestID": "29115-34620561-1",
  "CheckoutRequestID": "ws_CO_191220191020363925",
  "ResultCode": 0,
  "ResultDesc": "The service request is processed successfully.",
  "CallbackMetadata": {"Item": [
    {"Name": "Amount", "Value": 1.00},
    {"Name": "MpesaReceiptNumber", "Value": "NLJ7RT61SV"},
    {"Name": "Balance"},
    {"Name": "TransactionDate", "Value": 20191219102115},
    {"Name": "PhoneNumber", "Value": 254708374149}
  ]}
}}}
""")

FAILURE_SAMPLE = json.loads(
    '{"Body": {"stkCallback": {"MerchantRequestID": "f1e2-4b95-a71d-b30d3cdbb7a7942864", '
    '"CheckoutRequestID": "ws_CO_21072024125243250722943992", "ResultCode": 1032, '
    '"ResultDesc": "Request cancelled by user"}}}')


# -- password and timestamp -------------------------------------------------------------------

def test_stk_password_matches_the_official_sample():
    assert stk_password("174379", SANDBOX_PASSKEY, "20210628092408") == OFFICIAL_PASSWORD


def test_stk_password_is_base64_of_plain_concatenation():
    password = stk_password("600000", "key", "20260101000000")
    assert base64.b64decode(password).decode() == "600000key20260101000000"


def test_nairobi_timestamp_renders_utc_instant_in_utc_plus_3():
    moment = datetime(2026, 1, 1, 21, 30, 0, tzinfo=UTC)
    assert nairobi_timestamp(moment) == "20260102003000"


def test_nairobi_timestamp_is_fourteen_digits_by_default():
    stamp = nairobi_timestamp()
    assert len(stamp) == 14 and stamp.isdigit()


def test_nairobi_timestamp_rejects_naive_datetime():
    with pytest.raises(ValueError):
        nairobi_timestamp(datetime(2026, 1, 1, 21, 30, 0))


# -- expires_in and codes ---------------------------------------------------------------------

@pytest.mark.parametrize("value", ["3599", 3599, " 3599 "])
def test_parse_expires_in_accepts_string_and_number(value):
    assert parse_expires_in(value) == 3599


@pytest.mark.parametrize("value", ["0", 0, "-5", "abc", "", None])
def test_parse_expires_in_rejects_non_positive_or_non_numeric(value):
    with pytest.raises(ValueError):
        parse_expires_in(value)


@pytest.mark.parametrize("value, expected", [
    (0, "0"), ("0", "0"), ("1032", "1032"), (1032, "1032"), (1032.0, "1032"), (0.0, "0"),
    ("SFC_IC0003", "SFC_IC0003"), (" 1032 ", "1032"), ("E3008", "E3008"),
])
def test_code_str_gives_the_canonical_string(value, expected):
    assert code_str(value) == expected


@pytest.mark.parametrize("value", [True, False, None, "", "   "])
def test_code_str_rejects_values_that_are_not_codes(value):
    with pytest.raises(ValueError):
        code_str(value)


# -- parse_stk_callback -----------------------------------------------------------------------

def test_parse_success_sample_reads_every_item():
    cb = parse_stk_callback(SUCCESS_SAMPLE)
    assert cb == StkCallback(
        merchant_request_id="29115-34620561-1", checkout_request_id="ws_CO_191220191020363925",
        result_code="0", result_desc="The service request is processed successfully.",
        amount=1.0, receipt="NLJ7RT61SV", transaction_date="20191219102115", phone="254708374149")
    assert cb.succeeded


def test_parse_success_reads_items_by_name_when_reordered():
    body = copy.deepcopy(SUCCESS_SAMPLE)
    items = body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    items.reverse()
    cb = parse_stk_callback(body)
    assert cb.receipt == "NLJ7RT61SV"
    assert cb.amount == 1.0
    assert cb.transaction_date == "20191219102115"
    assert cb.phone == "254708374149"


def test_parse_success_without_balance_item():
    body = copy.deepcopy(SUCCESS_SAMPLE)
    items = body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    body["Body"]["stkCallback"]["CallbackMetadata"]["Item"] = [i for i in items if i["Name"] != "Balance"]
    assert parse_stk_callback(body).receipt == "NLJ7RT61SV"


def test_parse_failure_sample_has_no_metadata():
    cb = parse_stk_callback(FAILURE_SAMPLE)
    assert cb.result_code == "1032"
    assert cb.result_desc == "Request cancelled by user"
    assert cb.checkout_request_id == "ws_CO_21072024125243250722943992"
    assert cb.merchant_request_id == "f1e2-4b95-a71d-b30d3cdbb7a7942864"
    assert cb.receipt is None and cb.amount is None and cb.phone is None and cb.transaction_date is None
    assert not cb.succeeded


def test_parse_non_numeric_result_code_is_kept_as_string():
    body = copy.deepcopy(FAILURE_SAMPLE)
    body["Body"]["stkCallback"].update(ResultCode="SFC_IC0003", ResultDesc="The operator does not exist.")
    cb = parse_stk_callback(body)
    assert cb.result_code == "SFC_IC0003"
    assert not cb.succeeded


def test_parse_string_zero_result_code_is_success():
    body = copy.deepcopy(SUCCESS_SAMPLE)
    body["Body"]["stkCallback"]["ResultCode"] = "0"
    assert parse_stk_callback(body).succeeded


def _without(path: list[str]) -> dict:
    body = copy.deepcopy(SUCCESS_SAMPLE)
    target = body
    for key in path[:-1]:
        target = target[key]
    del target[path[-1]]
    return body


def _replacing(path: list[str], value) -> dict:
    body = copy.deepcopy(SUCCESS_SAMPLE)
    target = body
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return body


@pytest.mark.parametrize("body", [
    pytest.param({}, id="empty object"),
    pytest.param(None, id="null"),
    pytest.param([], id="list"),
    pytest.param("Body", id="string"),
    pytest.param(_without(["Body"]), id="missing Body"),
    pytest.param({"Body": {}}, id="missing stkCallback"),
    pytest.param({"Body": []}, id="Body not an object"),
    pytest.param(_replacing(["Body", "stkCallback"], "ws_CO_1"), id="stkCallback a string"),
    pytest.param(_replacing(["Body", "stkCallback"], [1, 2]), id="stkCallback a list"),
    pytest.param(_without(["Body", "stkCallback", "CheckoutRequestID"]), id="missing CheckoutRequestID"),
    pytest.param(_replacing(["Body", "stkCallback", "CheckoutRequestID"], ""), id="blank CheckoutRequestID"),
    pytest.param(_replacing(["Body", "stkCallback", "CheckoutRequestID"], 12345), id="numeric CheckoutRequestID"),
    pytest.param(_without(["Body", "stkCallback", "MerchantRequestID"]), id="missing MerchantRequestID"),
    pytest.param(_without(["Body", "stkCallback", "ResultCode"]), id="missing ResultCode"),
    pytest.param(_replacing(["Body", "stkCallback", "ResultCode"], True), id="boolean ResultCode"),
    pytest.param(_without(["Body", "stkCallback", "CallbackMetadata"]), id="success without metadata"),
    pytest.param(_replacing(["Body", "stkCallback", "CallbackMetadata", "Item"],
                            [{"Name": "Amount", "Value": 1}]), id="success with no receipt"),
    pytest.param(_replacing(["Body", "stkCallback", "CallbackMetadata", "Item"], {"Name": "Amount"}),
                 id="Item not a list"),
    pytest.param(_replacing(["Body", "stkCallback", "CallbackMetadata"], "items"), id="metadata a string"),
])
def test_malformed_callback_bodies_raise_malformed_callback(body):
    with pytest.raises(MalformedCallback):
        parse_stk_callback(body)


# -- Daraja's callback bodies, read --------------------------------------------------------------
# (The simulator builds them with its own code, tested in tests/simulator; both are checked
# against Safaricom's examples in tests/contract.)

SUCCESS = {"Body": {"stkCallback": {
    "MerchantRequestID": "abcd-1234-ef56-0123456789ab42",
    "CheckoutRequestID": "ws_CO_01012026000000123712345678",
    "ResultCode": 0,
    "ResultDesc": "The service request is processed successfully.",
    "CallbackMetadata": {"Item": [
        {"Name": "Amount", "Value": 100},
        {"Name": "MpesaReceiptNumber", "Value": "UA1ABCDEFG"},
        {"Name": "Balance"},
        {"Name": "TransactionDate", "Value": 20260101000000},
        {"Name": "PhoneNumber", "Value": 254712345678},
    ]},
}}}


def test_success_callback_is_read_by_name():
    cb = parse_stk_callback(json.loads(json.dumps(SUCCESS)))
    assert cb == StkCallback(
        merchant_request_id="abcd-1234-ef56-0123456789ab42", checkout_request_id="ws_CO_01012026000000123712345678",
        result_code="0", result_desc="The service request is processed successfully.",
        amount=100.0, receipt="UA1ABCDEFG", transaction_date="20260101000000", phone="254712345678")


def test_success_callback_items_in_another_order_without_balance_read_the_same():
    items = SUCCESS["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    shuffled = [items[4], items[1], items[3], items[0]]
    body = {"Body": {"stkCallback": {**SUCCESS["Body"]["stkCallback"], "CallbackMetadata": {"Item": shuffled}}}}
    assert parse_stk_callback(body) == parse_stk_callback(SUCCESS)


@pytest.mark.parametrize("code, desc", [(1032, "Request cancelled by user"), (1, "insufficient"),
                                        ("SFC_IC0003", "The operator does not exist."), (2001, "bad pin"),
                                        ("1037", "DS timeout user cannot be reached.")])
def test_failure_callback_is_read_with_its_code_as_text(code, desc):
    body = {"Body": {"stkCallback": {"MerchantRequestID": "m-1", "CheckoutRequestID": "ws_CO_1",
                                     "ResultCode": code, "ResultDesc": desc}}}
    cb = parse_stk_callback(body)
    assert (cb.result_code, cb.result_desc, cb.checkout_request_id, cb.merchant_request_id) == \
        (str(code), desc, "ws_CO_1", "m-1")
    assert cb.receipt is None and not cb.succeeded
