"""The parts of the simulated Daraja, each without HTTP: the fault book, the callback queue,
Apigee's limits, the Password diagnosis, and the core's memory staying bounded under long load."""

from __future__ import annotations

import base64
import random

import pytest

import simulator.models as models
from simulator.callbacks import CallbackJob, CallbackQueue
from simulator.exceptions import QuotaViolation, SpikeArrestViolation, WrongCredentials
from simulator.faults import FaultBook, NextPushesFault, StandingFault
from simulator.limits import TrafficLimits
from simulator.models import SimulatedDaraja
from simulator.scenarios import interactive, load_catalogue
from simulator.settings import SimulatorSettings
from simulator.validation import check_password, diagnose_password
from tests.daraja_http import SANDBOX_PASSKEY, stk_password

T0 = 1_795_000_000.0  # 2026-11-18, a fixed moment for the fake clocks below
STAMP = "20261118140640"  # T0 on Nairobi's clock


# -- the fault book -------------------------------------------------------------------------------

def test_a_queued_fault_is_used_up_by_the_pushes_it_applies_to():
    book = FaultBook()
    fault = book.queue({"callback": "never"}, count=2, msisdn="254711000001")
    assert isinstance(fault, NextPushesFault) and fault.remaining == 2
    assert book.use("254711000002") == {}  # another number: untouched
    assert book.use("254711000001") == {"callback": "never"}
    assert book.to_json()["next"] == [{"remaining": 1, "msisdn": "254711000001", "behaviour": {"callback": "never"}}]
    assert book.use("254711000001") == {"callback": "never"}
    assert book.use("254711000001") == {}
    assert book.to_json() == {"next": [], "subscribers": {}}


def test_only_the_first_queued_fault_that_applies_is_used_per_push():
    book = FaultBook()
    book.queue({"push": "error"}, count=1)
    book.queue({"callback": "twice"}, count=1)
    assert book.use("254711000001") == {"push": "error"}
    assert book.use("254711000001") == {"callback": "twice"}


def test_a_standing_fault_stays_and_a_queued_one_overlays_it():
    book = FaultBook()
    standing = book.stand("254711000001", {"push": "slow", "delay": 2})
    assert isinstance(standing, StandingFault)
    book.queue({"push": "error"}, count=1)
    assert book.use("254711000001") == {"push": "error", "delay": 2}
    assert book.use("254711000001") == {"push": "slow", "delay": 2}
    book.stand("254711000001", {"callback": "late"})  # replaces
    assert book.to_json()["subscribers"] == {"254711000001": {"callback": "late"}}
    book.lift("254711000001")
    book.lift("254711000001")  # lifting twice is harmless
    assert book.use("254711000001") == {}


def test_the_book_keeps_its_own_copy_of_a_behaviour():
    behaviour = {"callback": "never"}
    book = FaultBook()
    book.stand("254711000001", behaviour)
    behaviour["callback"] = "twice"
    assert book.use("254711000001") == {"callback": "never"}


# -- the callback queue ----------------------------------------------------------------------------

@pytest.fixture
def queue() -> CallbackQueue:
    return CallbackQueue(SimulatorSettings(callback_delay=0.5, late_callback_delay=20.0, callback_retries=2,
                                           callback_retry_delay=1.0))


@pytest.mark.parametrize("callback, offsets", [("once", [0.5]), ("twice", [0.5, 0.55]), ("late", [20.0]),
                                               ("never", [])])
def test_a_settlement_schedules_its_callbacks_as_its_behaviour_says(queue, callback, offsets):
    behaviour = interactive("254711000001").overlaid({"callback": callback})
    queue.schedule_settlement("ws_CO_1", "http://shop/cb", {"Body": {}}, behaviour, settled_at=T0)
    assert queue.take_due(T0 + 100) == [CallbackJob(T0 + o, "ws_CO_1", "http://shop/cb", {"Body": {}})
                                        for o in offsets]


def test_a_behaviours_own_callback_delay_wins(queue):
    behaviour = interactive("254711000001").overlaid({"callback": "late", "callback_delay": 3})
    queue.schedule_settlement("ws_CO_1", "http://shop/cb", {}, behaviour, settled_at=T0)
    assert queue.next_due() == T0 + 3


def test_retries_double_their_delay_and_stop_at_the_setting(queue):
    job = CallbackJob(T0, "ws_CO_1", "http://shop/cb", {})
    queue.schedule(job)
    [first] = queue.take_due(T0)
    assert queue.retry(first, now=T0)
    [second] = queue.take_due(T0 + 1)
    assert (second.attempt, second.due_at) == (2, T0 + 1)
    assert queue.retry(second, now=T0 + 1)
    [third] = queue.take_due(T0 + 3)
    assert (third.attempt, third.due_at) == (3, T0 + 3)
    assert not queue.retry(third, now=T0 + 3)
    assert len(queue) == 0


def test_a_reset_drops_waiting_callbacks_and_disowns_those_on_their_way(queue):
    queue.schedule(CallbackJob(T0, "ws_CO_1", "http://shop/cb", {}))
    [on_its_way] = queue.take_due(T0)
    queue.schedule(CallbackJob(T0 + 1, "ws_CO_2", "http://shop/cb", {}))
    queue.reset()
    assert queue.next_due() is None
    assert not queue.is_current(on_its_way.generation)
    assert not queue.retry(on_its_way, now=T0)


# -- Apigee's limits -------------------------------------------------------------------------------

def test_spike_arrest_counts_the_last_second():
    limits = TrafficLimits(per_second=2, quota=0)
    limits.count(T0)
    limits.count(T0 + 0.5)
    with pytest.raises(SpikeArrestViolation):
        limits.count(T0 + 0.9)
    limits.count(T0 + 1.0)


def test_the_quota_holds_until_reset():
    limits = TrafficLimits(per_second=0, quota=2)
    limits.count(T0)
    limits.count(T0 + 100)
    with pytest.raises(QuotaViolation):
        limits.count(T0 + 200)
    limits.reset()
    limits.count(T0 + 300)


# -- the Password diagnosis ------------------------------------------------------------------------

def test_an_unknown_shortcode_is_not_a_merchant_and_a_known_one_checks_its_passkey():
    merchants = {"174379": SANDBOX_PASSKEY}
    check_password(merchants, "174379", stk_password("174379", SANDBOX_PASSKEY, STAMP), STAMP, T0)
    with pytest.raises(WrongCredentials) as wrong:
        check_password(merchants, "174379", stk_password("174379", "other", STAMP), STAMP, T0)
    assert "passkey" in wrong.value.hint and SANDBOX_PASSKEY not in wrong.value.hint


@pytest.mark.parametrize("password, hint", [
    ("not base64!", "Password is not base64 of text"),
    ("pässword", "Password is not base64 of text"),  # not even ASCII: still a hint, not a crash
    (base64.b64encode(b"600000" + SANDBOX_PASSKEY.encode() + STAMP.encode()).decode(),
     "Password does not start with the BusinessShortCode 174379"),
    (base64.b64encode(f"174379{SANDBOX_PASSKEY}20200101000000".encode()).decode(),
     "Password was built with timestamp 20200101000000 but the Timestamp field says " + STAMP),
    (base64.b64encode(f"174379{SANDBOX_PASSKEY}".encode()).decode(), "Password does not end with the Timestamp"),
])
def test_a_wrong_password_is_explained(password, hint):
    assert diagnose_password("174379", SANDBOX_PASSKEY, password, STAMP, T0).startswith(hint)


def test_a_timestamp_three_hours_behind_is_suspected_of_being_utc():
    utc_stamp = "20261118110640"
    hint = diagnose_password("174379", SANDBOX_PASSKEY, stk_password("174379", "x", utc_stamp), utc_stamp, T0)
    assert "3 h behind Nairobi time" in hint and "UTC" in hint


# -- memory under long load -------------------------------------------------------------------------

class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def push_body(phone: str) -> dict[str, object]:
    return {"BusinessShortCode": "174379", "Password": stk_password("174379", SANDBOX_PASSKEY, STAMP),
            "Timestamp": STAMP, "TransactionType": "CustomerPayBillOnline", "Amount": 1, "PartyA": phone,
            "PartyB": "174379", "PhoneNumber": phone, "CallBackURL": "https://shop.example.com/cb",
            "AccountReference": "LOAD", "TransactionDesc": "Load"}


def test_many_pushes_through_the_model_keep_every_store_under_its_cap(monkeypatch):
    monkeypatch.setattr(models, "MAX_SETTLED_PROMPTS", 200)
    monkeypatch.setattr(models, "MAX_SUBSCRIBERS", 150)
    clock = Clock()
    sim = SimulatedDaraja(SimulatorSettings(), catalogue=load_catalogue(), clock=clock, rng=random.Random(3))
    numbers = [f"2547{11_000_000 + i:08d}" for i in range(600)]  # more customers than the cap
    largest = dict.fromkeys(sim.state_sizes(), 0)
    for _ in range(4):
        for i, phone in enumerate(numbers):
            prompt = sim.push(push_body(phone))
            if i % 3 == 0:
                sim.enter_pin(prompt.checkout_request_id, "12345")  # a payment and its receipt
            elif i % 3 == 1:
                sim.cancel(prompt.checkout_request_id)
            # every third prompt stays open until it expires
            clock.now += 0.01
            sim.take_due_callbacks()
            largest = {k: max(v, sim.state_sizes()[k]) for k, v in largest.items()}
        clock.now += 61  # the open ones expire, and their callbacks fall due a moment later
        sim.take_due_callbacks()
        clock.now += 1
        sim.take_due_callbacks()
    open_at_most = len(numbers) // 3 + 1
    assert largest["prompts"] <= 200 + open_at_most
    assert largest["receipts"] <= largest["prompts"]
    assert largest["subscribers"] <= 150 + open_at_most  # customers with an open prompt are kept
    final = sim.state_sizes()
    assert final["prompts"] <= 200 + open_at_most and final["subscribers"] <= 150 and final["callbacks"] == 0
    assert final["receipts"] == sum(1 for p in sim.prompts.values() if p.receipt)
    assert sim.tokens_issued == 0 and final["tokens"] == 0


def test_a_forgotten_customer_comes_back_as_the_same_person(monkeypatch):
    monkeypatch.setattr(models, "MAX_SUBSCRIBERS", 2)
    sim = SimulatedDaraja(SimulatorSettings(), catalogue=load_catalogue(), clock=Clock())
    first = sim.subscriber("254711000001")
    name, balance = first.name, first.balance
    sim.subscriber("254711000002")
    sim.subscriber("254711000001")  # seen again: now the most recent
    sim.subscriber("254711000003")  # over the cap: 254711000002 is the least recently seen
    assert set(sim.subscribers) == {"254711000001", "254711000003"}
    for i in range(4, 8):
        sim.subscriber(f"25471100000{i}")
    again = sim.subscriber("254711000001")
    assert again is not first and (again.name, again.balance) == (name, balance)


def test_a_customer_with_an_open_prompt_is_not_forgotten(monkeypatch):
    monkeypatch.setattr(models, "MAX_SUBSCRIBERS", 2)
    sim = SimulatedDaraja(SimulatorSettings(), catalogue=load_catalogue(), clock=Clock())
    sim.add_faults({"balance": 7}, count=1)
    prompt = sim.push(push_body("254711000001"))  # the fault sets this customer's balance to 7
    for i in range(2, 9):
        sim.subscriber(f"25471100000{i}")
    assert "254711000001" in sim.subscribers
    assert sim.enter_pin(prompt.checkout_request_id, "12345").result_code == "0"
    assert sim.subscriber("254711000001").balance == 6


def test_a_new_customer_is_kept_when_every_other_one_has_an_open_prompt(monkeypatch):
    monkeypatch.setattr(models, "MAX_SUBSCRIBERS", 2)
    sim = SimulatedDaraja(SimulatorSettings(lock_subscriber=False), catalogue=load_catalogue(), clock=Clock())
    sim.push(push_body("254711000001"))
    sim.push(push_body("254711000002"))
    sim.add_faults({"balance": 7}, count=1)
    prompt = sim.push(push_body("254711000003"))  # past the cap, but nobody else may be forgotten
    assert set(sim.subscribers) == {"254711000001", "254711000002", "254711000003"}
    assert sim.enter_pin(prompt.checkout_request_id, "12345").result_code == "0"
    assert sim.subscriber("254711000003").balance == 6  # the balance the fault set, not a new customer's


def test_a_customers_name_does_not_depend_on_when_it_is_first_shown():
    numbers = ["254711000001", "254700000001", "254722333444"]  # 254700000001: a catalogue number
    first = SimulatedDaraja(SimulatorSettings(), catalogue=load_catalogue(), clock=Clock())
    shown_at_once = [(first.subscriber(n).name, first.subscriber(n).balance) for n in numbers]
    later = SimulatedDaraja(SimulatorSettings(), catalogue=load_catalogue(), clock=Clock())
    customers = [later.subscriber(n) for n in numbers]
    later.subscriber("254799888777").name  # noqa: B018 - another customer's name drawn in between
    assert [(c.name, c.balance) for c in reversed(customers)] == list(reversed(shown_at_once))
    assert len({name for name, _ in shown_at_once}) == 3 and all(name.strip() for name, _ in shown_at_once)


def test_a_callback_url_with_any_whitespace_character_is_refused():
    from simulator.exceptions import InvalidField
    from simulator.validation import validate_push
    spaces = [chr(c) for c in range(0x110000) if chr(c).isspace()]
    assert len(spaces) > 20  # tab, newline, no-break space, the Unicode spaces …
    for space in spaces:
        body = {**push_body("254711000001"), "CallBackURL": f"https://shop.example.com/cb{space}x"}
        with pytest.raises(InvalidField) as refused:
            validate_push(body)
        assert "CallBackURL" in str(refused.value.error_message), repr(space)
    assert validate_push(push_body("254711000001")).callback_url == "https://shop.example.com/cb"


def test_a_push_leaves_two_objects_for_the_garbage_collector():
    # Under load every open prompt stays in memory, and the collector's full passes walk all of
    # them while every request waits: what a push keeps is what the slowest answers wait for.
    import gc
    sim = SimulatedDaraja(SimulatorSettings(lock_subscriber=False), catalogue=load_catalogue(), clock=Clock())
    for i in range(100):  # the dicts and lists grow past their first sizes
        sim.push(push_body(f"2547{12_000_000 + i:08d}"))
    gc.collect()
    before = len(gc.get_objects())
    for i in range(2000):
        sim.push(push_body(f"2547{13_000_000 + i:08d}"))
    gc.collect()
    assert (len(gc.get_objects()) - before) / 2000 < 2.5  # the prompt and its customer
