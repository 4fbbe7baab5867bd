"""The simulated Daraja driven directly, without HTTP, on a fake clock."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pytest

from simulator.exceptions import (
    BadClientCredentials,
    InvalidAccessToken,
    InvalidField,
    MerchantDoesNotExist,
    SubscriberLocked,
    WrongCredentials,
)
from simulator.models import PromptClosed, SimulatedDaraja
from simulator.scenarios import load_catalogue
from simulator.settings import SimulatorSettings
from simulator.validation import validate_push
from tests.daraja_http import DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET, SANDBOX_PASSKEY, items, stk, stk_password

# 2026-11-26 10:15:30.250 in Nairobi (07:15:30.250 UTC).
T0 = datetime(2026, 11, 26, 7, 15, 30, 250000, tzinfo=UTC).timestamp()
NAIROBI_STAMP = "20261126101530"
UTC_STAMP = "20261126071530"  # the same instant written in UTC: 3 h behind Nairobi
SANDBOX_PHONE = "254708374149"
OTHER_PHONE = "254712345678"  # not in the catalogue: interactive
CALLBACK = "https://shop.example.com/mpesa/callback"
MISSING = object()  # a push_body() field value meaning "leave the field out"

AUTO = SimulatorSettings().auto_answer_delay
LIFETIME = SimulatorSettings().prompt_lifetime
CB_DELAY = SimulatorSettings().callback_delay
LATE = SimulatorSettings().late_callback_delay


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


def make_sim(clock: Clock, **settings: object) -> SimulatedDaraja:
    """The sandbox merchant (174379) and the demo credentials, with these settings changed."""
    return SimulatedDaraja(SimulatorSettings(**settings), catalogue=load_catalogue(), clock=clock)


@pytest.fixture
def sim(clock: Clock) -> SimulatedDaraja:
    return make_sim(clock)


def push_body(phone: str = SANDBOX_PHONE, amount: object = 100, *, timestamp: str = NAIROBI_STAMP,
              passkey: str = SANDBOX_PASSKEY, **fields: object) -> dict:
    body = {
        "BusinessShortCode": "174379",
        "Password": stk_password("174379", passkey, timestamp),
        "Timestamp": timestamp,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": amount,
        "PartyA": phone,
        "PartyB": "174379",
        "PhoneNumber": phone,
        "CallBackURL": CALLBACK,
        "AccountReference": "CART_1",
        "TransactionDesc": "Shoes",
    }
    body.update(fields)
    return {k: v for k, v in body.items() if v is not MISSING}



def query_body(checkout_request_id: str) -> dict:
    return {"BusinessShortCode": "174379", "Password": stk_password("174379", SANDBOX_PASSKEY, NAIROBI_STAMP),
            "Timestamp": NAIROBI_STAMP, "CheckoutRequestID": checkout_request_id}


def settle_at(sim: SimulatedDaraja, clock: Clock, at: float, checkout_request_id: str):
    clock.now = at
    return sim.prompt(checkout_request_id)


# -- OAuth ------------------------------------------------------------------------------------

def test_issue_token_returns_28_alphanumeric_chars_and_lifetime(sim):
    token, lifetime = sim.issue_token(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)
    assert re.fullmatch(r"[A-Za-z0-9]{28}", token)
    assert lifetime == 3599
    assert sim.tokens_issued == 1


def test_issue_token_lifetime_follows_settings(clock):
    assert make_sim(clock, token_lifetime=120).issue_token(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)[1] == 120


def test_each_issued_token_is_new(sim):
    first, _ = sim.issue_token(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)
    second, _ = sim.issue_token(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)
    assert first != second


@pytest.mark.parametrize("key, secret", [("wrong", DEMO_CONSUMER_SECRET), (DEMO_CONSUMER_KEY, "wrong"), ("", "")])
def test_wrong_key_or_secret_raises_bad_client_credentials(sim, key, secret):
    with pytest.raises(BadClientCredentials):
        sim.issue_token(key, secret)
    assert sim.tokens_issued == 0


def test_issued_token_passes_check_until_it_expires(sim, clock):
    token, lifetime = sim.issue_token(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)
    sim.check_token(token)
    clock.now += lifetime - 0.01
    sim.check_token(token)
    clock.now += 0.01
    with pytest.raises(InvalidAccessToken):
        sim.check_token(token)


@pytest.mark.parametrize("token", ["unknown-token", "", None])
def test_unknown_token_raises_invalid_access_token(sim, token):
    sim.issue_token(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)
    with pytest.raises(InvalidAccessToken):
        sim.check_token(token)


# -- field validation -------------------------------------------------------------------------

@pytest.mark.parametrize("field, value, reported", [
    ("BusinessShortCode", "abc", "BusinessShortCode"),
    ("BusinessShortCode", "1234", "BusinessShortCode"),
    ("BusinessShortCode", "12345678", "BusinessShortCode"),
    ("BusinessShortCode", MISSING, "BusinessShortCode"),
    ("BusinessShortCode", True, "BusinessShortCode"),
    ("Password", "", "Password"),
    ("Password", MISSING, "Password"),
    ("Password", 12345, "Password"),
    ("Timestamp", "2026112610153", "Timestamp"),
    ("Timestamp", "20261332101530", "Timestamp"),
    ("Timestamp", "2026-11-26 10:15", "Timestamp"),
    ("Timestamp", MISSING, "Timestamp"),
    ("TransactionType", "CustomerPayBill", "TransactionType"),
    ("TransactionType", MISSING, "TransactionType"),
    ("Amount", 0, "Amount"),
    ("Amount", -1, "Amount"),
    ("Amount", 1.5, "Amount"),
    ("Amount", "1.5", "Amount"),
    ("Amount", "abc", "Amount"),
    ("Amount", True, "Amount"),
    ("Amount", 250_001, "Amount"),
    ("Amount", MISSING, "Amount"),
    ("PartyA", "0712345678", "PartyA"),
    ("PartyA", 254800000000, "PartyA"),
    ("PartyA", MISSING, "PartyA"),
    ("PartyB", "abc", "PartyB"),
    ("PartyB", "12", "PartyB"),
    ("PartyB", MISSING, "PartyB"),
    ("PhoneNumber", 254800000000, "PhoneNumber"),
    ("PhoneNumber", "254800000000", "PhoneNumber"),
    ("PhoneNumber", "0712345678", "PhoneNumber"),
    ("PhoneNumber", "2547083741490", "PhoneNumber"),
    ("PhoneNumber", "254116000000", "PhoneNumber"),
    ("PhoneNumber", MISSING, "PhoneNumber"),
    ("CallBackURL", "not a url", "CallBackURL"),
    ("CallBackURL", "ftp://shop.example.com/cb", "CallBackURL"),
    ("CallBackURL", MISSING, "CallBackURL"),
    ("AccountReference", "", "AccountReference"),
    ("AccountReference", MISSING, "AccountReference"),
    ("TransactionDesc", MISSING, "Remarks"),
    ("TransactionDesc", "  ", "Remarks"),
])
def test_invalid_push_field_raises_invalid_field_naming_it(sim, field, value, reported):
    with pytest.raises(InvalidField) as info:
        validate_push(push_body(**{field: value}), account_reference_max=12)
    assert info.value.field == reported
    assert info.value.error_message == f"Bad Request - Invalid {reported}"
    assert info.value.error_code == "400.002.02"
    with pytest.raises(InvalidField) as pushed:  # the model checks a push with these rules, first
        sim.push(push_body(**{field: value}))
    assert pushed.value.field == reported
    assert not sim.prompts


def test_account_reference_of_12_chars_is_accepted(sim):
    assert sim.push(push_body(AccountReference="A" * 12)).account_reference == "A" * 12


def test_account_reference_longer_than_the_documented_12_is_accepted_as_daraja_does(sim):
    """The 2026 sandbox accepted 15 characters, a 2018 report 14: the limit is not enforced at push time."""
    assert sim.push(push_body(AccountReference="A" * 15)).account_reference == "A" * 15


def test_account_reference_limit_can_be_set_to_the_documented_12(clock):
    with pytest.raises(InvalidField) as info:
        make_sim(clock, account_reference_max=12).push(push_body(AccountReference="A" * 13))
    assert info.value.field == "AccountReference"


def test_account_reference_limit_follows_settings(clock):
    assert make_sim(clock, account_reference_max=15).push(
        push_body(AccountReference="A" * 15)).account_reference == "A" * 15


def test_numbers_and_numeric_strings_are_both_accepted(sim):
    as_numbers = validate_push(push_body(BusinessShortCode=174379, Amount=100, PartyA=254708374149,
                                         PartyB=174379, PhoneNumber=254708374149), account_reference_max=12)
    as_strings = validate_push(push_body(BusinessShortCode="174379", Amount="100", PartyA="254708374149",
                                         PartyB="174379", PhoneNumber="254708374149"), account_reference_max=12)
    assert as_numbers == as_strings
    assert (as_numbers.shortcode, as_numbers.amount, as_numbers.party_a, as_numbers.party_b, as_numbers.phone) == \
        ("174379", 100, SANDBOX_PHONE, "174379", SANDBOX_PHONE)


def test_push_with_numeric_fields_as_numbers_opens_a_prompt(sim):
    prompt = sim.push(push_body(BusinessShortCode=174379, Amount=1, PartyA=254708374149, PartyB=174379,
                                PhoneNumber=254708374149))
    assert prompt.open and prompt.msisdn == SANDBOX_PHONE and prompt.amount == 1


def test_official_sample_request_fields_are_accepted(sim):
    body = {"BusinessShortCode": 174379, "Password": stk_password("174379", SANDBOX_PASSKEY, "20210628092408"),
            "Timestamp": "20210628092408", "TransactionType": "CustomerPayBillOnline", "Amount": "1",
            "PartyA": "254722000000", "PartyB": "174379", "PhoneNumber": "254722111111",
            "CallBackURL": "https://mydomain.com/path", "AccountReference": "accountref", "TransactionDesc": "txndesc"}
    prompt = sim.push(body)
    assert prompt.msisdn == "254722111111"


# -- merchant and password --------------------------------------------------------------------

def test_unknown_shortcode_raises_merchant_does_not_exist(sim):
    body = push_body(BusinessShortCode="600000", Password=stk_password("600000", SANDBOX_PASSKEY, NAIROBI_STAMP))
    with pytest.raises(MerchantDoesNotExist):
        sim.push(body)


def test_password_built_with_another_timestamp_is_wrong_credentials_with_timestamp_hint(sim):
    body = push_body(Password=stk_password("174379", SANDBOX_PASSKEY, "20261126101529"))
    with pytest.raises(WrongCredentials) as info:
        sim.push(body)
    assert info.value.error_message == "Wrong credentials"
    assert "20261126101529" in info.value.hint and NAIROBI_STAMP in info.value.hint
    assert "timestamp" in info.value.hint.lower()
    assert not sim.prompts


def test_wrong_passkey_with_utc_timestamp_hint_mentions_utc(sim):
    body = push_body(timestamp=UTC_STAMP, passkey="not-the-passkey")
    with pytest.raises(WrongCredentials) as info:
        sim.push(body)
    assert "UTC" in info.value.hint
    assert "3 h behind" in info.value.hint


def test_wrong_passkey_with_nairobi_timestamp_hint_does_not_blame_utc(sim):
    with pytest.raises(WrongCredentials) as info:
        sim.push(push_body(passkey="not-the-passkey"))
    assert "passkey" in info.value.hint
    assert "UTC" not in info.value.hint


def test_utc_timestamp_with_a_correct_password_is_accepted(sim):
    assert sim.push(push_body(timestamp=UTC_STAMP)).open


# -- identifiers ------------------------------------------------------------------------------

def test_checkout_request_id_is_ws_co_nairobi_time_millis_and_subscriber(sim):
    prompt = sim.push(push_body())
    assert prompt.checkout_request_id == "ws_CO_26112026101530" + "250" + "708374149"
    assert re.fullmatch(r"ws_CO_\d{14}\d{1,3}\d{9}", prompt.checkout_request_id)


def test_checkout_request_id_millis_are_unpadded(sim, clock):
    clock.now = T0 - 0.25 + 0.0625  # .062 s
    prompt = sim.push(push_body())
    assert prompt.checkout_request_id == "ws_CO_26112026101530" + "62" + "708374149"


def test_merchant_request_id_has_the_2024_shape(sim):
    prompt = sim.push(push_body())
    assert re.fullmatch(r"^[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\d+$", prompt.merchant_request_id)


def test_receipt_is_10_upper_alphanumerics_encoding_the_nairobi_date(sim):
    prompt = sim.enter_pin(sim.push(push_body()).checkout_request_id, "12345")
    assert re.fullmatch(r"[A-Z0-9]{10}", prompt.receipt)
    assert prompt.receipt.startswith("UKQ")


def test_receipt_date_prefix_uses_nairobi_not_utc_day(clock):
    clock.now = datetime(2026, 3, 25, 22, 0, tzinfo=UTC).timestamp()  # 26 Mar 01:00 in Nairobi
    sim = make_sim(clock)
    prompt = sim.enter_pin(sim.push(push_body()).checkout_request_id, "12345")
    assert prompt.receipt.startswith("UCQ")
    assert prompt.transaction_date == "20260326010000"


def test_receipt_stays_alphanumeric_after_2031(clock):
    clock.now = datetime(2032, 1, 1, 9, 0, tzinfo=UTC).timestamp()
    sim = make_sim(clock)
    prompt = sim.enter_pin(sim.push(push_body()).checkout_request_id, "12345")
    assert re.fullmatch(r"[A-Z0-9]{10}", prompt.receipt)


# -- scripted numbers -------------------------------------------------------------------------

def test_scripted_cancel_number_settles_with_1032_after_auto_answer_delay(sim, clock):
    cid = sim.push(push_body("254700000002")).checkout_request_id
    assert settle_at(sim, clock, T0 + AUTO - 0.01, cid).open
    prompt = settle_at(sim, clock, T0 + AUTO, cid)
    assert prompt.state == "settled"
    assert prompt.result_code == "1032"
    assert prompt.result_desc == "Request Cancelled by user."  # the current profile's wording


def test_scripted_number_does_not_settle_while_the_clock_stands_still(sim):
    cid = sim.push(push_body("254700000002")).checkout_request_id
    assert sim.prompt(cid).open


def test_expiring_number_settles_with_1019_only_at_prompt_lifetime(sim, clock):
    cid = sim.push(push_body("254700000005")).checkout_request_id
    assert settle_at(sim, clock, T0 + AUTO, cid).open
    assert settle_at(sim, clock, T0 + LIFETIME - 0.01, cid).open
    prompt = settle_at(sim, clock, T0 + LIFETIME, cid)
    assert prompt.result_code == "1019"
    assert prompt.result_desc == "Transaction has expired"


def test_interactive_number_times_out_with_1037_at_prompt_lifetime(sim, clock):
    cid = sim.push(push_body(SANDBOX_PHONE)).checkout_request_id
    assert settle_at(sim, clock, T0 + LIFETIME - 0.01, cid).open
    prompt = settle_at(sim, clock, T0 + LIFETIME, cid)
    assert prompt.result_code == "1037"
    assert prompt.receipt is None


def test_prompt_lifetime_follows_settings(clock):
    sim = make_sim(clock, prompt_lifetime=5.0)
    cid = sim.push(push_body(SANDBOX_PHONE)).checkout_request_id
    assert settle_at(sim, clock, T0 + 5.0, cid).result_code == "1037"


def test_scripted_failure_schedules_a_failure_callback(sim, clock):
    cid = sim.push(push_body("254700000002")).checkout_request_id
    settle_at(sim, clock, T0 + AUTO, cid)
    clock.now = T0 + AUTO + CB_DELAY
    jobs = sim.take_due_callbacks()
    assert len(jobs) == 1
    cb = stk(jobs[0].body)
    assert (cb["CheckoutRequestID"], cb["ResultCode"], "CallbackMetadata" in cb) == (cid, 1032, False)


# -- the handset ------------------------------------------------------------------------------

def test_right_pin_pays_and_schedules_success_callback_after_delay(sim, clock):
    before = sim.subscriber(SANDBOX_PHONE).balance
    prompt = sim.push(push_body(SANDBOX_PHONE, 100))
    paid = sim.enter_pin(prompt.checkout_request_id, "12345")
    assert paid.state == "settled" and paid.result_code == "0"
    assert paid.receipt
    assert sim.subscriber(SANDBOX_PHONE).balance == before - 100 == paid.balance_after
    assert paid.transaction_date == NAIROBI_STAMP

    clock.now = T0 + CB_DELAY - 0.01
    assert sim.take_due_callbacks() == []
    clock.now = T0 + CB_DELAY
    jobs = sim.take_due_callbacks()
    assert len(jobs) == 1
    assert jobs[0].url == CALLBACK
    assert jobs[0].checkout_request_id == prompt.checkout_request_id
    cb, paid_items = stk(jobs[0].body), items(jobs[0].body)
    assert cb["ResultCode"] == 0
    assert (paid_items["MpesaReceiptNumber"], paid_items["Amount"], str(paid_items["PhoneNumber"]),
            cb["MerchantRequestID"]) == \
        (paid.receipt, 100.0, SANDBOX_PHONE, paid.merchant_request_id)
    assert sim.take_due_callbacks() == []


def test_wrong_pin_settles_with_2001_and_takes_no_money(sim):
    before = sim.subscriber(SANDBOX_PHONE).balance
    prompt = sim.enter_pin(sim.push(push_body(SANDBOX_PHONE)).checkout_request_id, "00000")
    assert prompt.result_code == "2001"
    assert prompt.receipt is None
    assert sim.subscriber(SANDBOX_PHONE).balance == before


def test_pin_follows_settings(clock):
    sim = make_sim(clock, pin="9999")
    assert sim.enter_pin(sim.push(push_body()).checkout_request_id, "9999").result_code == "0"


def test_cancel_settles_with_1032(sim):
    prompt = sim.cancel(sim.push(push_body(SANDBOX_PHONE)).checkout_request_id)
    assert prompt.result_code == "1032"
    assert prompt.receipt is None


@pytest.mark.parametrize("act", [lambda s, cid: s.enter_pin(cid, "12345"), lambda s, cid: s.cancel(cid)])
def test_acting_on_a_settled_prompt_raises_prompt_closed(sim, act):
    cid = sim.push(push_body(SANDBOX_PHONE)).checkout_request_id
    sim.cancel(cid)
    with pytest.raises(PromptClosed):
        act(sim, cid)
    assert sim.prompt(cid).result_code == "1032"


def test_acting_on_an_expired_prompt_raises_prompt_closed(sim, clock):
    cid = sim.push(push_body(SANDBOX_PHONE)).checkout_request_id
    clock.now = T0 + LIFETIME
    with pytest.raises(PromptClosed):
        sim.enter_pin(cid, "12345")


def test_payment_above_the_balance_settles_with_result_code_1(sim):
    subscriber = sim.subscriber(OTHER_PHONE)
    amount = subscriber.balance + 1
    before = subscriber.balance
    prompt = sim.enter_pin(sim.push(push_body(OTHER_PHONE, amount)).checkout_request_id, "12345")
    assert prompt.result_code == "1"
    assert prompt.receipt is None
    assert sim.subscriber(OTHER_PHONE).balance == before


def test_payment_of_exactly_the_balance_succeeds(sim):
    amount = sim.subscriber(OTHER_PHONE).balance
    prompt = sim.enter_pin(sim.push(push_body(OTHER_PHONE, amount)).checkout_request_id, "12345")
    assert prompt.result_code == "0"
    assert sim.subscriber(OTHER_PHONE).balance == 0


# -- subscriber lock --------------------------------------------------------------------------

def test_locked_scenario_number_raises_subscriber_locked(sim):
    with pytest.raises(SubscriberLocked):
        sim.push(push_body("254700000006"))
    assert not sim.prompts


def test_second_push_to_a_phone_with_an_open_prompt_raises_subscriber_locked(sim):
    sim.push(push_body(SANDBOX_PHONE))
    with pytest.raises(SubscriberLocked):
        sim.push(push_body(SANDBOX_PHONE))
    assert len(sim.prompts) == 1


def test_push_after_the_open_prompt_settles_is_accepted(sim):
    sim.cancel(sim.push(push_body(SANDBOX_PHONE)).checkout_request_id)
    assert sim.push(push_body(SANDBOX_PHONE)).open


def test_open_prompt_on_another_phone_does_not_lock(sim):
    sim.push(push_body(SANDBOX_PHONE))
    assert sim.push(push_body(OTHER_PHONE)).open


def test_second_push_is_accepted_when_lock_subscriber_is_off(clock):
    sim = make_sim(clock, lock_subscriber=False)
    first = sim.push(push_body(SANDBOX_PHONE))
    second = sim.push(push_body(SANDBOX_PHONE))
    assert first.open and second.open
    assert first.checkout_request_id != second.checkout_request_id


# -- callback behaviours ----------------------------------------------------------------------

def _pay_scripted(sim, clock, phone):
    cid = sim.push(push_body(phone)).checkout_request_id
    prompt = settle_at(sim, clock, T0 + AUTO, cid)
    assert prompt.result_code == "0"
    return prompt


def test_lost_callback_number_schedules_no_callback(sim, clock):
    _pay_scripted(sim, clock, "254700000007")
    clock.now = T0 + AUTO + LATE + 100
    assert sim.take_due_callbacks() == []
    assert sim.next_wakeup() is None


def test_twice_callback_number_schedules_two_callbacks(sim, clock):
    prompt = _pay_scripted(sim, clock, "254700000008")
    clock.now = T0 + AUTO + CB_DELAY + 1
    jobs = sim.take_due_callbacks()
    assert len(jobs) == 2
    assert jobs[0].body == jobs[1].body
    assert all(items(j.body)["MpesaReceiptNumber"] == prompt.receipt for j in jobs)


def test_late_callback_number_schedules_one_callback_at_late_delay(sim, clock):
    _pay_scripted(sim, clock, "254700000009")
    clock.now = T0 + AUTO + LATE - 0.01
    assert sim.take_due_callbacks() == []
    clock.now = T0 + AUTO + LATE
    jobs = sim.take_due_callbacks()
    assert len(jobs) == 1
    assert stk(jobs[0].body)["ResultCode"] == 0


def test_ordinary_payment_schedules_exactly_one_callback(sim, clock):
    _pay_scripted(sim, clock, "254700000000")
    clock.now = T0 + AUTO + LATE + 100
    assert len(sim.take_due_callbacks()) == 1


# -- subscribers ------------------------------------------------------------------------------

@pytest.mark.parametrize("msisdn", [OTHER_PHONE, SANDBOX_PHONE, "254110000001"])
def test_subscriber_is_the_same_across_simulator_instances(clock, msisdn):
    first = make_sim(clock)
    second = make_sim(clock)
    second.subscriber("254799999999")  # a different creation order must not matter
    a, b = first.subscriber(msisdn), second.subscriber(msisdn)
    assert a.name and (a.name, a.balance) == (b.name, b.balance)


def test_catalogue_balance_is_used_for_the_subscriber(sim):
    assert sim.subscriber("254700000000").balance == 500_000
    assert sim.subscriber(SANDBOX_PHONE).balance == 250_000


def test_non_catalogue_subscriber_balance_is_within_the_random_range(sim):
    assert 2_000 <= sim.subscriber(OTHER_PHONE).balance <= 80_000


# -- query ------------------------------------------------------------------------------------

def test_query_returns_the_prompt(sim):
    prompt = sim.push(push_body(SANDBOX_PHONE))
    assert sim.query(query_body(prompt.checkout_request_id)) is prompt


def test_query_catches_up_with_the_clock(sim, clock):
    cid = sim.push(push_body("254700000002")).checkout_request_id
    clock.now = T0 + AUTO
    assert sim.query(query_body(cid)).result_code == "1032"


def test_query_for_unknown_id_raises_invalid_checkout_request_id(sim):
    sim.push(push_body(SANDBOX_PHONE))
    with pytest.raises(InvalidField) as info:
        sim.query(query_body("ws_CO_26112026101530999708374149"))
    assert info.value.field == "CheckoutRequestID"


def test_query_with_wrong_password_raises_wrong_credentials(sim):
    cid = sim.push(push_body(SANDBOX_PHONE)).checkout_request_id
    body = {**query_body(cid), "Password": stk_password("174379", "not-the-passkey", NAIROBI_STAMP)}
    with pytest.raises(WrongCredentials):
        sim.query(body)


def test_oldest_settled_prompts_are_forgotten_past_the_cap(clock, monkeypatch):
    import simulator.models as models
    monkeypatch.setattr(models, "MAX_SETTLED_PROMPTS", 3)
    sim = make_sim(clock)
    ids = []
    for i in range(6):
        prompt = sim.push(push_body(f"2547{11000000 + i:08d}"))
        ids.append(prompt.checkout_request_id)
        sim.cancel(prompt.checkout_request_id)
    open_prompt = sim.push(push_body("254712999999"))
    assert open_prompt.checkout_request_id in sim.prompts
    assert [cid for cid in ids if cid in sim.prompts] == ids[-3:]
