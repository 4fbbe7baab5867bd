"""The simulator's own Daraja wire code and identifiers, checked against Safaricom's published
sample and the shapes seen on the real wire (not against the gateway's code), and its one phone rule."""

from __future__ import annotations

import random
import re
from datetime import UTC, datetime

import pytest

from simulator.ids import DarajaIds
from simulator.phones import msisdn
from simulator.wire import (
    daraja_timestamp,
    failed_callback,
    nairobi_time,
    paid_callback,
    password_matches,
    read_timestamp,
    stk_password,
)
from tests.daraja_http import REQUEST_ID, SANDBOX_PASSKEY

# Safaricom's sample STK push request (Daraja's M-Pesa Express page): its Password and Timestamp.
SAMPLE_TIMESTAMP = "20210628092408"
SAMPLE_PASSWORD = ("MTc0Mzc5YmZiMjc5ZjlhYTliZGJjZjE1OGU5N2RkNzFhNDY3Y2QyZTBjODkzMDU5YjEwZjc4ZTZiNzJhZGExZWQyYzkx"
                   "OTIwMjEwNjI4MDkyNDA4")
# 2026-11-26 10:15:30.250 in Nairobi (07:15:30.250 UTC).
T0 = datetime(2026, 11, 26, 7, 15, 30, 250000, tzinfo=UTC).timestamp()


# -- Password and timestamps ------------------------------------------------------------------------

def test_password_of_safaricoms_sample_request():
    assert stk_password("174379", SANDBOX_PASSKEY, SAMPLE_TIMESTAMP) == SAMPLE_PASSWORD


def test_password_check_accepts_the_sample_and_nothing_else():
    assert password_matches(SAMPLE_PASSWORD, "174379", SANDBOX_PASSKEY, SAMPLE_TIMESTAMP)
    assert not password_matches(SAMPLE_PASSWORD, "174379", SANDBOX_PASSKEY, "20210628092409")
    assert not password_matches(SAMPLE_PASSWORD, "600000", SANDBOX_PASSKEY, SAMPLE_TIMESTAMP)
    assert not password_matches(SAMPLE_PASSWORD + "=", "174379", SANDBOX_PASSKEY, SAMPLE_TIMESTAMP)
    assert not password_matches("\udcff", "174379", SANDBOX_PASSKEY, SAMPLE_TIMESTAMP)  # no crash on junk


def test_timestamps_are_on_nairobis_clock():
    assert daraja_timestamp(T0) == "20261126101530"
    assert nairobi_time(T0).utcoffset().total_seconds() == 3 * 3600
    assert read_timestamp("20261126101530") == nairobi_time(T0).replace(microsecond=0)
    assert read_timestamp("20261332101530") is None


# -- callback bodies ----------------------------------------------------------------------------------

def test_paid_callback_is_darajas_success_body_exactly():
    body = paid_callback(merchant_request_id="m-1", checkout_request_id="ws_CO_1", receipt="UKQ2UOAC4E",
                         result_desc="The service request is processed successfully.", amount=100,
                         transaction_date="20261126101530", msisdn="254708374149", balance_item=True)
    assert body == {"Body": {"stkCallback": {
        "MerchantRequestID": "m-1",
        "CheckoutRequestID": "ws_CO_1",
        "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": 100},
            {"Name": "MpesaReceiptNumber", "Value": "UKQ2UOAC4E"},
            {"Name": "Balance"},
            {"Name": "TransactionDate", "Value": 20261126101530},
            {"Name": "PhoneNumber", "Value": 254708374149},
        ]},
    }}}
    assert list(body["Body"]["stkCallback"]) == ["MerchantRequestID", "CheckoutRequestID", "ResultCode",
                                                 "ResultDesc", "CallbackMetadata"]


def test_paid_callback_without_the_balance_item_and_with_a_decimal_amount():
    body = paid_callback(merchant_request_id="m", checkout_request_id="c", result_desc="ok", amount=100.0,
                         receipt="R", transaction_date="20261126101530", msisdn="254708374149", balance_item=False)
    items = body["Body"]["stkCallback"]["CallbackMetadata"]["Item"]
    assert [i["Name"] for i in items] == ["Amount", "MpesaReceiptNumber", "TransactionDate", "PhoneNumber"]
    assert isinstance(items[0]["Value"], float)


@pytest.mark.parametrize("code, sent", [("1032", 1032), ("1", 1), ("SFC_IC0003", "SFC_IC0003"), ("E3008", "E3008")])
def test_failed_callback_has_no_metadata_and_numeric_codes_as_numbers(code, sent):
    assert failed_callback(merchant_request_id="m", checkout_request_id="c", result_code=code,
                           result_desc="Request cancelled by user") == {"Body": {"stkCallback": {
                               "MerchantRequestID": "m", "CheckoutRequestID": "c", "ResultCode": sent,
                               "ResultDesc": "Request cancelled by user"}}}


# -- identifiers --------------------------------------------------------------------------------------

@pytest.fixture
def ids() -> DarajaIds:
    return DarajaIds(random.Random(7))


def test_checkout_request_id_is_ws_co_nairobi_time_unpadded_millis_and_subscriber(ids):
    assert ids.checkout_request_id("254708374149", T0, taken=set()) == "ws_CO_26112026101530250708374149"
    assert ids.checkout_request_id("254708374149", T0 - 0.25 + 0.062, taken=set()) == \
        "ws_CO_2611202610153062708374149"


def test_checkout_request_id_takes_the_next_free_millisecond(ids):
    taken = {"ws_CO_26112026101530250708374149"}
    assert ids.checkout_request_id("254708374149", T0, taken) == "ws_CO_26112026101530251708374149"


def test_request_ids_have_the_2024_shape_and_differ(ids):
    first, second = ids.request_id(), ids.request_id()
    assert REQUEST_ID.fullmatch(first) and re.fullmatch(r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\d+", first)
    assert first != second


def test_access_tokens_are_28_letters_and_digits(ids):
    assert re.fullmatch(r"[A-Za-z0-9]{28}", ids.access_token())


@pytest.mark.parametrize("when, prefix", [
    (datetime(2026, 11, 26, 7, tzinfo=UTC), "UKQ"),  # U = 2026, K = November, Q = 26th
    (datetime(2017, 1, 1, 9, tzinfo=UTC), "LA1"),
    (datetime(2026, 3, 25, 22, tzinfo=UTC), "UCQ"),  # already the 26th in Nairobi
    (datetime(2032, 12, 31, 9, tzinfo=UTC), "AL"),  # the year letter wraps after Z
])
def test_receipt_is_the_nairobi_date_in_three_characters_then_seven_random(ids, when, prefix):
    receipt = ids.receipt(when.timestamp(), taken=set())
    assert re.fullmatch(r"[A-Z0-9]{10}", receipt) and receipt.startswith(prefix)


def test_receipt_never_repeats_one_taken():
    taken = {DarajaIds(random.Random(1)).receipt(T0, taken=set())}
    assert DarajaIds(random.Random(1)).receipt(T0, taken) not in taken


# -- the phone rule -----------------------------------------------------------------------------------

@pytest.mark.parametrize("raw", ["254708374149", "254700000000", "254110000001", "254115999999"])
def test_daraja_form_of_a_safaricom_number_is_accepted(raw):
    assert msisdn(raw) == raw == msisdn(raw, typed=True)


@pytest.mark.parametrize("raw", ["0712345678", "+254712345678", "254116000000", "254120000000", "254800000000",
                                 "2547083741490", "25470837414", " 254708374149", "254708374149\n",
                                 "２５４７０８３７４１４９", 254708374149, None, ""])
def test_anything_else_is_not_a_daraja_msisdn(raw):
    assert msisdn(raw) is None


@pytest.mark.parametrize("raw, canonical", [
    ("0712345678", "254712345678"), ("0712 345 678", "254712345678"), ("+254 712-345-678", "254712345678"),
    ("254712345678", "254712345678"), ("0110000001", "254110000001"), ("+254115999999", "254115999999"),
])
def test_a_typed_number_is_read_in_every_local_form(raw, canonical):
    assert msisdn(raw, typed=True) == canonical


@pytest.mark.parametrize("raw", ["712345678", "0812345678", "0116000000", "07123456789", "+2540712345678", "07"])
def test_a_typed_number_outside_safaricoms_ranges_is_refused(raw):
    assert msisdn(raw, typed=True) is None
