"""The simulator's fault injection and control API over real HTTP: faults, the journal, the clock,
reset, trigger, Buy Goods till checks, rate limits, single tokens and callback retries.

The tests start `create_standalone_app` with short timings and a recording callback receiver.
(How the gateway meets these faults: tests/gateway/test_daraja_faults.py.)
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from simulator.app import build_simulator, create_standalone_app
from simulator.runner import SimulatorRunner
from simulator.settings import load_simulator_settings
from tests.daraja_http import (
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    INTERACTIVE,
    NOWHERE,
    OAUTH,
    PAYS,
    PUSH,
    QUERY,
    SANDBOX_PASSKEY,
    SHORTCODE,
    Sim,
    assert_daraja_error,
    eventually,
    items,
    nairobi_timestamp,
    push_body,
    stk,
    stk_password,
)

TILL = "600123"


def other(i: int) -> str:
    """Distinct interactive numbers, so that pushes do not lock each other."""
    return f"2547110000{i:02d}"


FAST_ENV = {
    "SIMULATOR_AUTO_ANSWER_SECONDS": "0.2",
    "SIMULATOR_CALLBACK_DELAY_SECONDS": "0.05",
    "SIMULATOR_PROMPT_LIFETIME_SECONDS": "30",
    "SIMULATOR_LATE_CALLBACK_SECONDS": "1.5",
}
QUIET = 0.4  # longer than any callback due in a test that expects no more











class Receiver:
    """A merchant's callback endpoint: records every body; answers the statuses
    queued in `statuses` first, then 200, each after `delay` seconds."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.raw: list[str] = []  # the bytes as they came, for what a JSON parser would hide
        self.statuses: list[int] = []
        self.delay = 0.0
        self.url = ""

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.raw.append(await request.text())
            self.bodies.append(json.loads(self.raw[-1]))
            status = self.statuses.pop(0) if self.statuses else 200
            await asyncio.sleep(self.delay)
            return web.json_response({"ResultCode": 0 if status == 200 else 1, "ResultDesc": "Accepted"},
                                     status=status)

        app = web.Application()
        app.router.add_post("/cb", handle)
        return app

    async def wait_for(self, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
        await eventually(lambda: len(self.bodies) >= count, timeout, f"{count} callback(s) received")
        return self.bodies


@pytest.fixture
async def start() -> Any:
    """`await start(SETTING="value")`: a standalone simulator with FAST_ENV plus those settings."""
    clients: list[TestClient] = []

    async def start_sim(**overrides: str) -> Sim:
        client = TestClient(TestServer(create_standalone_app(load_simulator_settings({**FAST_ENV, **overrides}))))
        await client.start_server()
        clients.append(client)
        return Sim(client)

    yield start_sim
    for client in clients:
        # Bounded: a shutdown that races a simulator change can hang (see the runner test below);
        # the time-out's cancellation reaches the stuck runner a second time and stops it.
        await asyncio.wait_for(client.close(), 3)


@pytest.fixture
async def sim(start: Any) -> Sim:
    return await start()


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    rec = Receiver()
    server = await aiohttp_server(rec.app())
    rec.url = str(server.make_url("/cb"))
    return rec


# -- next-N faults -----------------------------------------------------------------------------------


async def test_next_n_fault_hits_exactly_n_pushes_and_the_next_push_is_normal(sim):
    status, fault = await sim.api("POST", "/faults", {"count": 2, "push": "error"})
    assert status == 201
    assert fault == {"remaining": 2, "msisdn": None, "behaviour": {"push": "error"}}

    await assert_daraja_error(await sim.post_push(other(1)), 500, "500.003.1001", "Internal Server Error")
    assert (await sim.api("GET", "/faults"))[1]["next"] == [
        {"remaining": 1, "msisdn": None, "behaviour": {"push": "error"}}]
    await assert_daraja_error(await sim.post_push(other(2)), 500, "500.003.1001", "Internal Server Error")
    assert (await sim.api("GET", "/faults"))[1] == {"next": [], "subscribers": {}}
    assert (await sim.post_push(other(3))).status == 200
    assert [p["msisdn"] for p in await sim.prompts()] == [other(3)]


async def test_msisdn_scoped_fault_only_hits_pushes_to_that_number(sim):
    status, _ = await sim.api("POST", "/faults", {"msisdn": other(1), "push": "busy"})
    assert status == 201

    assert (await sim.post_push(other(2))).status == 200  # another number: untouched, fault still queued
    assert (await sim.api("GET", "/faults"))[1]["next"] == [
        {"remaining": 1, "msisdn": other(1), "behaviour": {"push": "busy"}}]
    await assert_daraja_error(await sim.post_push(other(1)), 500, "500.003.02",
                              "System is busy. Please try again in few minutes.")
    assert (await sim.post_push(other(1))).status == 200  # used up


@pytest.mark.parametrize("body, message", [
    (b"not json", "body must be a JSON object"),
    (b"[]", "body must be a JSON object"),
    ({}, "say what to change"),
    ({"count": 3}, "say what to change"),
    ({"push": "explode"}, "fault: push must be one of accept, locked, error, busy, timeout, slow"),
    ({"callback": "sometimes"}, "fault: callback must be one of once, never, twice, late"),
    ({"callback": "never", "count": 0}, "count must be a whole number from 1 to 10000"),
    ({"callback": "never", "count": True}, "count must be a whole number from 1 to 10000"),
    ({"callback": "never", "count": "2"}, "count must be a whole number from 1 to 10000"),
    ({"callback": "never", "msisdn": "0712345678"}, "msisdn must be a Safaricom number like 254708374149"),
    ({"callback_delay": -1}, "fault: callback_delay must be a number of seconds from 0 to 3600"),
    ({"delay": "5"}, "fault: delay must be a number of seconds from 0 to 3600"),
    ({"outcome": "has spaces"}, 'fault: outcome must be "interactive" or a ResultCode such as "1032"'),
    ({"balance": -5}, "fault: balance must be a whole number of KES"),
], ids=["not-json", "list", "empty", "count-only", "bad-push", "bad-callback", "count-0", "count-bool",
        "count-string", "local-msisdn", "negative-delay", "string-delay", "bad-outcome", "negative-balance"])
async def test_fault_with_a_bad_body_is_400_with_a_clear_error_and_queues_nothing(sim, body, message):
    if isinstance(body, bytes):
        status, answer = await sim.api("POST", "/faults", raw=body)
    else:
        status, answer = await sim.api("POST", "/faults", body)
    assert status == 400 and list(answer) == ["error"] and answer["error"].startswith(message), answer
    assert (await sim.api("GET", "/faults"))[1] == {"next": [], "subscribers": {}}


async def test_fault_with_an_unknown_field_is_refused_rather_than_silently_dropped(sim):
    status, answer = await sim.api("POST", "/faults", {"push": "error", "callbak": "never"})
    assert status == 400, answer
    assert "callbak" in answer["error"]


async def test_get_lists_queued_and_subscriber_faults_and_delete_clears_both(sim):
    await sim.api("POST", "/faults", {"count": 3, "callback": "twice"})
    await sim.api("POST", "/faults", {"msisdn": other(1), "push": "locked"})
    await sim.api("PUT", f"/subscribers/{other(2)}/faults", {"push": "error"})
    status, listed = await sim.api("GET", "/faults")
    assert status == 200
    assert listed == {
        "next": [{"remaining": 3, "msisdn": None, "behaviour": {"callback": "twice"}},
                 {"remaining": 1, "msisdn": other(1), "behaviour": {"push": "locked"}}],
        "subscribers": {other(2): {"push": "error"}},
    }
    assert await sim.api("DELETE", "/faults") == (200, {"next": [], "subscribers": {}})
    assert (await sim.api("GET", "/faults"))[1] == {"next": [], "subscribers": {}}
    assert (await sim.post_push(other(1))).status == 200
    assert (await sim.post_push(other(2))).status == 200


# -- subscriber faults ---------------------------------------------------------------------------------


async def test_subscriber_fault_hits_every_push_to_that_number_until_deleted(sim):
    assert await sim.api("PUT", f"/subscribers/{other(1)}/faults", {"push": "locked"}) == (200, {"push": "locked"})
    for _ in range(2):  # standing, not used up
        await assert_daraja_error(await sim.post_push(other(1)), 500, "500.001.1001",
                                  "Unable to lock subscriber, a transaction is already in process for the "
                                  "current subscriber")
    assert (await sim.post_push(other(2))).status == 200
    assert await sim.api("DELETE", f"/subscribers/{other(1)}/faults") == (204, None)
    assert (await sim.api("GET", "/faults"))[1]["subscribers"] == {}
    assert (await sim.post_push(other(1))).status == 200


async def test_subscriber_fault_put_replaces_the_previous_one(sim, receiver):
    await sim.api("PUT", f"/subscribers/{PAYS}/faults", {"push": "error"})
    await sim.api("PUT", f"/subscribers/{PAYS}/faults", {"callback": "never"})
    cid = await sim.push(PAYS, receiver.url)  # no longer refused
    assert (await sim.wait_settled(cid))["resultCode"] == "0"
    await asyncio.sleep(QUIET)
    assert receiver.bodies == []


@pytest.mark.parametrize("msisdn, body, message", [
    ("0712345678", {"push": "error"}, "msisdn must be a Safaricom number like 254708374149"),
    (other(1), {}, "say what to change"),
    (other(1), {"query": "never"}, "fault: query must be one of normal, error, timeout, slow"),
], ids=["local-msisdn", "empty", "bad-query"])
async def test_subscriber_fault_with_a_bad_number_or_body_is_400(sim, msisdn, body, message):
    status, answer = await sim.api("PUT", f"/subscribers/{msisdn}/faults", body)
    assert status == 400 and answer["error"].startswith(message), answer
    assert (await sim.api("GET", "/faults"))[1]["subscribers"] == {}


async def test_subscriber_fault_balance_makes_a_larger_payment_fail_with_result_code_1(sim):
    status, answer = await sim.api("PUT", f"/subscribers/{other(1)}/faults", {"outcome": "0", "balance": 50})
    if status == 400:  # refusing `balance` as a fault would also end the silent mismatch
        return
    assert status == 200, answer
    cid = await sim.push(other(1), Amount=100)
    assert (await sim.wait_settled(cid))["resultCode"] == "1"


# -- push behaviours -----------------------------------------------------------------------------------


@pytest.mark.parametrize("push, code, message", [
    ("locked", "500.001.1001",
     "Unable to lock subscriber, a transaction is already in process for the current subscriber"),
    ("error", "500.003.1001", "Internal Server Error"),
    ("busy", "500.003.02", "System is busy. Please try again in few minutes."),
])
async def test_push_fault_refuses_at_once_with_darajas_500_and_prompts_nobody(sim, push, code, message):
    await sim.api("POST", "/faults", {"push": push})
    await assert_daraja_error(await sim.post_push(other(1)), 500, code, message)
    assert await sim.prompts(msisdn=other(1)) == []


async def test_push_fault_slow_answers_normally_after_the_delay(sim):
    await sim.api("POST", "/faults", {"push": "slow", "delay": 0.5})
    started = time.monotonic()
    resp = await sim.post_push(other(1))
    elapsed = time.monotonic() - started
    assert resp.status == 200
    body = await resp.json()
    assert body["ResponseCode"] == "0" and body["CustomerMessage"] == "Success. Request accepted for processing"
    assert elapsed >= 0.5
    assert [p["checkoutRequestId"] for p in await sim.prompts(msisdn=other(1))] == [body["CheckoutRequestID"]]


async def test_push_fault_timeout_leaves_the_client_without_an_id_while_the_customer_is_prompted(sim, receiver):
    await sim.api("POST", "/faults", {"push": "timeout", "delay": 1.0})
    with pytest.raises(asyncio.TimeoutError):
        await sim.post_push(other(1), receiver.url, timeout=aiohttp.ClientTimeout(total=0.3))
    [prompt] = await sim.prompts(msisdn=other(1), state="open")  # the customer's phone shows the prompt
    status, _ = await sim.api("POST", f"/prompts/{prompt['checkoutRequestId']}/pin", {"pin": "12345"})
    assert status == 200
    [body] = await receiver.wait_for(1)  # paid, under an id the merchant never received
    assert (stk(body)["CheckoutRequestID"], stk(body)["ResultCode"]) == (prompt["checkoutRequestId"], 0)


# -- query behaviours ----------------------------------------------------------------------------------


async def test_query_fault_error_is_500_internal_server_error(sim):
    await sim.api("POST", "/faults", {"query": "error"})
    cid = await sim.push(PAYS)
    assert (await sim.wait_settled(cid))["resultCode"] == "0"
    for _ in range(2):  # every query about that prompt
        await assert_daraja_error(await sim.query(cid), 500, "500.003.1001", "Internal Server Error")
    normal = await sim.push(other(1))  # the fault belonged to the first push only
    pending = await sim.query(normal)
    assert (pending.status, (await pending.json())["ResultCode"]) == (200, "4999")


async def test_query_fault_slow_answers_normally_after_the_delay_and_the_push_is_not_delayed(sim):
    # 3 s: the push (token already in hand) finishing sooner is a clear sign even on a loaded machine
    await sim.api("POST", "/faults", {"query": "slow", "delay": 3.0})
    await sim.token()
    started = time.monotonic()
    cid = await sim.push(PAYS)
    assert time.monotonic() - started < 3.0
    started = time.monotonic()
    resp = await sim.query(cid)
    assert time.monotonic() - started >= 3.0
    body = await resp.json()
    assert (resp.status, body["ResultCode"], body["ResultDesc"]) == (
        200, "0", "The service request is processed successfully.")


# -- callback behaviours -------------------------------------------------------------------------------


async def test_callback_fault_never_pays_without_calling_back_and_the_next_push_calls_back(sim, receiver):
    await sim.api("POST", "/faults", {"callback": "never"})
    cid = await sim.push(PAYS, receiver.url)
    assert (await sim.wait_settled(cid))["resultCode"] == "0"
    await asyncio.sleep(QUIET)
    assert receiver.bodies == []
    assert (await sim.prompt(cid))["callbacks"] == []
    second = await sim.push(PAYS, receiver.url)
    [body] = await receiver.wait_for(1)
    assert stk(body)["CheckoutRequestID"] == second


async def test_callback_fault_twice_delivers_the_same_body_two_times(sim, receiver):
    await sim.api("POST", "/faults", {"callback": "twice"})
    cid = await sim.push(INTERACTIVE, receiver.url)
    status, _ = await sim.api("POST", f"/prompts/{cid}/pin", {"pin": "12345"})
    assert status == 200
    first, second = await receiver.wait_for(2)
    await asyncio.sleep(QUIET)
    assert len(receiver.bodies) == 2
    assert first == second and stk(first)["ResultCode"] == 0


async def test_callback_fault_late_waits_callback_delay_after_settlement(sim, receiver):
    # 3 s: the "not yet" look below (0.5 s after settlement) keeps seconds of margin on a loaded machine
    await sim.api("POST", "/faults", {"callback": "late", "callback_delay": 3.0})
    cid = await sim.push(PAYS, receiver.url)
    settled = await sim.wait_settled(cid)
    await asyncio.sleep(0.5)
    assert receiver.bodies == []
    [body] = await receiver.wait_for(1, timeout=8.0)
    prompt = await sim.wait_callbacks(cid)
    assert stk(body)["CheckoutRequestID"] == cid and items(body)["MpesaReceiptNumber"] == settled["receipt"]
    # settled at the auto answer (0.2 s), then 3.0 s more
    assert prompt["callbacks"][0]["at"] - prompt["createdAt"] >= 3.2 - 0.01


async def test_callback_amount_is_written_with_two_decimals_unless_a_fault_asks_for_an_integer(sim, receiver):
    await sim.api("POST", "/faults", {"amount_format": "integer"})
    await sim.push(PAYS, receiver.url, Amount=100)
    await sim.push(other(1), receiver.url, Amount=100)  # not faulted: answered by hand below
    [integer] = await receiver.wait_for(1)
    assert type(items(integer)["Amount"]) is int and '{"Name":"Amount","Value":100}' in receiver.raw[0]
    [open_prompt] = await sim.prompts(msisdn=other(1))
    await sim.api("POST", f"/prompts/{open_prompt['checkoutRequestId']}/pin", {"pin": "12345"})
    _, decimal = await receiver.wait_for(2)
    assert isinstance(items(decimal)["Amount"], float) and '{"Name":"Amount","Value":100.00}' in receiver.raw[1]


async def test_callback_fault_balance_item_absent_leaves_the_balance_item_out(sim, receiver):
    await sim.api("POST", "/faults", {"balance_item": "absent"})
    first = await sim.push(PAYS, receiver.url)
    await receiver.wait_for(1)
    await sim.push(PAYS, receiver.url)  # the next one, not faulted, has the empty Balance item
    bodies = await receiver.wait_for(2)
    by_id = {stk(b)["CheckoutRequestID"]: b for b in bodies}
    faulted = by_id.pop(first)
    [normal] = by_id.values()
    assert [i["Name"] for i in stk(faulted)["CallbackMetadata"]["Item"]] == [
        "Amount", "MpesaReceiptNumber", "TransactionDate", "PhoneNumber"]
    assert {"Name": "Balance"} in stk(normal)["CallbackMetadata"]["Item"]


async def test_callback_fault_outcome_sfc_ic0003_arrives_as_a_string_code_without_metadata(sim, receiver):
    await sim.api("POST", "/faults", {"outcome": "SFC_IC0003"})
    cid = await sim.push(INTERACTIVE, receiver.url)  # a scripted outcome: no PIN needed
    [body] = await receiver.wait_for(1)
    assert stk(body)["CheckoutRequestID"] == cid
    assert stk(body)["ResultCode"] == "SFC_IC0003"
    assert stk(body)["ResultDesc"] == "The operator does not exist."
    assert "CallbackMetadata" not in stk(body)


# -- callback retries ----------------------------------------------------------------------------------


async def test_failed_callback_is_retried_until_the_receiver_accepts_when_retries_are_on(start, receiver):
    sim = await start(SIMULATOR_CALLBACK_RETRIES="2", SIMULATOR_CALLBACK_RETRY_DELAY_SECONDS="0.1")
    receiver.statuses = [500, 500]
    cid = await sim.push(PAYS, receiver.url)
    prompt = await sim.wait_callbacks(cid, 3)
    assert [(c["status"], c["attempt"]) for c in prompt["callbacks"]] == [(500, 1), (500, 2), (200, 3)]
    await asyncio.sleep(QUIET)
    assert len(receiver.bodies) == 3
    assert receiver.bodies[0] == receiver.bodies[1] == receiver.bodies[2]
    assert len((await sim.prompt(cid))["callbacks"]) == 3


async def test_failed_callback_is_attempted_only_once_by_default(start, receiver):
    sim = await start(SIMULATOR_CALLBACK_RETRY_DELAY_SECONDS="0.1")
    receiver.statuses = [500, 500, 500]
    cid = await sim.push(PAYS, receiver.url)
    await sim.wait_callbacks(cid, 1)
    await asyncio.sleep(QUIET)
    prompt = await sim.prompt(cid)
    assert [(c["status"], c["attempt"]) for c in prompt["callbacks"]] == [(500, 1)]
    assert len(receiver.bodies) == 1


async def test_simulator_runner_stops_when_shut_down_right_after_a_change():
    sim = build_simulator(load_simulator_settings(FAST_ENV))
    async with aiohttp.ClientSession() as session:
        task = asyncio.create_task(SimulatorRunner(sim, session).run())
        await asyncio.sleep(0.05)  # idle, waiting for work
        sim.advance_clock(1)  # any change wakes the runner (a PIN, a settlement, a recorded callback) ...
        task.cancel()  # ... and the app is shut down in that same moment
        done, _ = await asyncio.wait({task}, timeout=1.5)  # it wakes at least once a second
        if task not in done:  # a second cancellation does stop it: leave nothing running
            task.cancel()
            await asyncio.wait({task}, timeout=1.5)
        assert task in done, "the runner kept running after it was cancelled"


# -- journal -------------------------------------------------------------------------------------------


async def test_journal_lists_requests_and_callbacks_newest_first_with_status_and_duration(sim, receiver):
    await sim.token()
    cid = await sim.push(PAYS, receiver.url)
    await sim.wait_callbacks(cid)
    assert (await sim.query(cid)).status == 200

    entries = await sim.journal()
    assert [(e["kind"], e["method"], e["url"], e["status"]) for e in entries] == [
        ("request", "POST", QUERY, 200),
        ("callback", "POST", receiver.url, 200),
        ("request", "POST", PUSH, 200),
        ("request", "GET", OAUTH + "?grant_type=client_credentials", 200),
    ]
    ids = [e["id"] for e in entries]
    assert ids == sorted(ids, reverse=True)
    assert all(isinstance(e["durationMs"], (int, float)) and e["durationMs"] >= 0 for e in entries)
    assert [e["checkoutRequestId"] for e in entries] == [cid, cid, cid, None]
    assert entries[1]["requestBody"] == receiver.bodies[0]
    assert [e["id"] for e in await sim.journal(kind="callback")] == [entries[1]["id"]]
    assert [e["id"] for e in await sim.journal(checkoutRequestId=cid)] == ids[:3]
    assert [e["id"] for e in await sim.journal(limit="2")] == ids[:2]


async def test_journal_masks_the_authorization_header_the_password_and_the_access_token(sim):
    token = await sim.token()
    ts = nairobi_timestamp()
    password = stk_password(SHORTCODE, SANDBOX_PASSKEY, ts)
    body = {**push_body(PAYS), "Timestamp": ts, "Password": password}
    resp = await sim.client.post(PUSH, json=body, headers={"Authorization": f"Bearer {token}"})
    assert resp.status == 200
    cid = (await resp.json())["CheckoutRequestID"]
    assert (await sim.query(cid)).status in (200, 500)

    entries = await sim.journal()
    text = json.dumps(entries)
    credentials = base64.b64encode(f"{DEMO_CONSUMER_KEY}:{DEMO_CONSUMER_SECRET}".encode()).decode()
    for secret in (token, password, SANDBOX_PASSKEY, DEMO_CONSUMER_SECRET, credentials):
        assert secret not in text
    oauth, push = entries[-1], entries[-2]
    headers = {k.lower(): v for k, v in push["requestHeaders"].items()}
    assert headers["authorization"] == "Bearer …"
    assert {k.lower(): v for k, v in oauth["requestHeaders"].items()}["authorization"] == "Basic …"
    assert push["requestBody"]["Password"].endswith("…")
    assert push["requestBody"]["PhoneNumber"] == PAYS  # only secrets are masked
    assert oauth["responseBody"]["access_token"].endswith("…")


async def test_journal_masks_a_token_sent_without_the_bearer_scheme(sim):
    token = await sim.token()
    resp = await sim.client.post(PUSH, json=push_body(), headers={"Authorization": token})
    await assert_daraja_error(resp, 404, "404.001.03", "Invalid Access Token")
    assert token not in json.dumps(await sim.journal())


async def test_journal_masks_the_password_in_a_body_that_is_not_valid_json(sim):
    body = push_body()
    raw = json.dumps(body)[:-1] + ",}"  # a trailing comma: not JSON
    resp = await sim.client.post(PUSH, data=raw, headers={"Authorization": f"Bearer {await sim.token()}",
                                                          "Content-Type": "application/json"})
    await assert_daraja_error(resp, 400, "400.002.05", "Invalid Request Payload")
    assert body["Password"] not in json.dumps(await sim.journal())


async def test_oversized_push_body_still_gets_darajas_invalid_request_payload(sim):
    resp = await sim.client.post(PUSH, data=b'{"x": "' + b"a" * (70 * 1024) + b'"}',
                                 headers={"Authorization": f"Bearer {await sim.token()}",
                                          "Content-Type": "application/json"})
    assert (resp.status, resp.content_type) == (400, "application/json"), await resp.text()
    await assert_daraja_error(resp, 400, "400.002.05", "Invalid Request Payload")


async def test_journal_with_a_negative_limit_is_400(sim):
    status, body = await sim.api("GET", "/journal", params={"limit": "-1"})
    assert status == 400, body
    assert "limit" in body["error"]


async def test_resend_posts_the_same_callback_body_again_and_records_a_new_attempt(sim, receiver):
    cid = await sim.push(PAYS, receiver.url)
    prompt = await sim.wait_callbacks(cid)
    journal_id = prompt["callbacks"][0]["journalId"]
    status, answer = await sim.api("POST", f"/callbacks/{journal_id}/resend")
    assert (status, answer) == (202, {"checkoutRequestId": cid, "url": receiver.url, "queued": True})
    first, again = await receiver.wait_for(2)
    assert again == first
    prompt = await sim.wait_callbacks(cid, 2)
    assert [c["status"] for c in prompt["callbacks"]] == [200, 200]
    assert prompt["callbacks"][1]["journalId"] not in (None, journal_id)
    assert len(await sim.journal(kind="callback")) == 2


async def test_resend_of_an_unknown_or_non_callback_journal_entry_is_404(sim):
    await sim.push(other(1))  # journals a request (and an OAuth request)
    [request_entry, *_] = await sim.journal(kind="request")
    for journal_id in ("99999", "abc", str(request_entry["id"])):
        assert await sim.api("POST", f"/callbacks/{journal_id}/resend") == (
            404, {"error": "no such callback in the journal"})


# -- clock and tokens ----------------------------------------------------------------------------------


async def test_advancing_the_clock_expires_open_prompts_with_1037_and_expires_tokens(start, receiver):
    sim = await start(SIMULATOR_TOKEN_LIFETIME_SECONDS="20")
    old_token = await sim.token()
    cid = await sim.push(INTERACTIVE, receiver.url)
    status, clock = await sim.api("POST", "/clock", {"advanceSeconds": 31})
    assert status == 200 and clock["offsetSeconds"] == 31.0
    assert abs(clock["now"] - (time.time() + 31)) < 5

    prompt = await sim.prompt(cid)
    assert (prompt["state"], prompt["resultCode"]) == ("settled", "1037")
    [body] = await receiver.wait_for(1)
    assert (stk(body)["ResultCode"], stk(body)["ResultDesc"]) == (1037, "DS timeout user cannot be reached.")
    await assert_daraja_error(await sim.post_push(other(1), token=old_token), 404, "404.001.03",
                              "Invalid Access Token")
    assert (await sim.post_push(other(1), token=await sim.new_token())).status == 200
    status, clock = await sim.api("GET", "/clock")
    assert status == 200 and clock["offsetSeconds"] == 31.0


@pytest.mark.parametrize("body", [
    {"advanceSeconds": 0}, {"advanceSeconds": -5}, {"advanceSeconds": "10"}, {"advanceSeconds": True},
    {"advanceSeconds": None}, {}, {"advanceSeconds": 2_592_001}, b"[]", b"nope",
], ids=["zero", "negative", "string", "bool", "null", "missing", "over-30-days", "list", "not-json"])
async def test_clock_rejects_a_bad_advance_with_400_and_does_not_move(sim, body):
    if isinstance(body, bytes):
        status, answer = await sim.api("POST", "/clock", raw=body)
    else:
        status, answer = await sim.api("POST", "/clock", body)
    assert (status, answer) == (400, {"error": "advanceSeconds must be a number of seconds from 0 to 2592000"})
    assert (await sim.api("GET", "/clock"))[1]["offsetSeconds"] == 0.0


async def test_expiring_tokens_rejects_the_old_token_and_a_new_one_works(sim):
    old_token = await sim.token()
    assert (await sim.post_push(other(1), token=old_token)).status == 200
    assert await sim.api("POST", "/tokens/expire") == (200, {"expired": 1})
    await assert_daraja_error(await sim.post_push(other(2), token=old_token), 404, "404.001.03",
                              "Invalid Access Token")
    await assert_daraja_error(await sim.query("ws_CO_x", token=old_token), 404, "404.001.03", "Invalid Access Token")
    assert (await sim.post_push(other(2), token=await sim.new_token())).status == 200


async def test_by_default_a_second_token_leaves_the_first_valid(sim):
    first, second = await sim.new_token(), await sim.new_token()
    assert first != second
    assert (await sim.post_push(other(1), token=first)).status == 200
    assert (await sim.post_push(other(2), token=second)).status == 200


async def test_single_token_setting_makes_a_second_token_invalidate_the_first(start):
    sim = await start(SIMULATOR_SINGLE_TOKEN="true")
    first, second = await sim.new_token(), await sim.new_token()
    await assert_daraja_error(await sim.post_push(other(1), token=first), 404, "404.001.03", "Invalid Access Token")
    assert (await sim.post_push(other(1), token=second)).status == 200


# -- reset ---------------------------------------------------------------------------------------------


async def test_reset_forgets_prompts_tokens_subscribers_faults_journal_and_clock(sim):
    old_token = await sim.token()
    await sim.push(INTERACTIVE)
    await sim.api("PUT", f"/subscribers/{other(1)}/faults", {"push": "error"})
    await sim.api("POST", "/faults", {"count": 5, "callback": "never"})
    await sim.api("POST", "/clock", {"advanceSeconds": 5})
    assert await sim.prompts() and await sim.journal() and (await sim.api("GET", "/subscribers"))[1]

    assert await sim.api("POST", "/reset") == (200, {"reset": True})
    assert await sim.prompts() == []
    assert await sim.journal() == []
    assert (await sim.api("GET", "/subscribers"))[1] == []
    assert (await sim.api("GET", "/faults"))[1] == {"next": [], "subscribers": {}}
    assert (await sim.api("GET", "/clock"))[1]["offsetSeconds"] == 0.0
    await assert_daraja_error(await sim.post_push(INTERACTIVE, token=old_token), 404, "404.001.03",
                              "Invalid Access Token")
    new_token = await sim.new_token()
    assert (await sim.post_push(INTERACTIVE, token=new_token)).status == 200  # no lock left over
    assert (await sim.post_push(other(1), token=new_token)).status == 200  # no subscriber fault left over


async def test_reset_also_forgets_a_callback_that_was_in_flight(sim, receiver):
    receiver.delay = 0.5  # the merchant's endpoint is slow to answer
    await sim.push(PAYS, receiver.url)
    await receiver.wait_for(1)  # the callback POST has arrived and is waiting for its answer
    assert await sim.api("POST", "/reset") == (200, {"reset": True})
    await asyncio.sleep(0.5 + QUIET)
    assert await sim.journal() == []


# -- trigger and ignore --------------------------------------------------------------------------------


async def test_trigger_puts_a_prompt_on_the_handset_and_its_callback_goes_to_the_callback_url(sim, receiver):
    status, prompt = await sim.api("POST", "/trigger", {"msisdn": other(1), "amount": 50,
                                                        "callbackUrl": receiver.url, "accountReference": "ORDER-9"})
    assert status == 201
    assert (prompt["state"], prompt["msisdn"], prompt["amount"], prompt["accountReference"]) == (
        "open", other(1), 50, "ORDER-9")
    assert [p["checkoutRequestId"] for p in await sim.prompts(state="open")] == [prompt["checkoutRequestId"]]
    await sim.api("POST", f"/prompts/{prompt['checkoutRequestId']}/pin", {"pin": "12345"})
    [body] = await receiver.wait_for(1)
    assert stk(body)["CheckoutRequestID"] == prompt["checkoutRequestId"]
    assert stk(body)["ResultCode"] == 0 and items(body)["Amount"] == 50


@pytest.mark.parametrize("body, message", [
    ({"msisdn": "0712345678", "amount": 10, "callbackUrl": NOWHERE},
     "msisdn must be a Safaricom number like 254708374149"),
    ({"amount": 10, "callbackUrl": NOWHERE}, "msisdn must be a Safaricom number like 254708374149"),
    ({"msisdn": INTERACTIVE, "amount": 0, "callbackUrl": NOWHERE}, "amount must be a whole number from 1 to 250000"),
    ({"msisdn": INTERACTIVE, "amount": 10.5, "callbackUrl": NOWHERE},
     "amount must be a whole number from 1 to 250000"),
    ({"msisdn": INTERACTIVE, "amount": True, "callbackUrl": NOWHERE},
     "amount must be a whole number from 1 to 250000"),
    ({"msisdn": INTERACTIVE, "amount": 250_001, "callbackUrl": NOWHERE},
     "amount must be a whole number from 1 to 250000"),
    ({"msisdn": INTERACTIVE, "amount": 10, "callbackUrl": "ftp://example.com/cb"},
     "callbackUrl must be an http(s) URL"),
    ({"msisdn": INTERACTIVE, "amount": 10}, "callbackUrl must be an http(s) URL"),
    (b"[1]", "body must be a JSON object"),
], ids=["local-msisdn", "no-msisdn", "amount-0", "amount-decimal", "amount-bool", "amount-too-big", "ftp-url",
        "no-url", "list"])
async def test_trigger_with_bad_input_is_400_and_prompts_nobody(sim, body, message):
    if isinstance(body, bytes):
        result = await sim.api("POST", "/trigger", raw=body)
    else:
        result = await sim.api("POST", "/trigger", body)
    assert result == (400, {"error": message})
    assert await sim.prompts() == []


async def test_ignore_times_the_prompt_out_now_with_1037(sim, receiver):
    cid = await sim.push(INTERACTIVE, receiver.url)
    status, prompt = await sim.api("POST", f"/prompts/{cid}/ignore")
    assert (status, prompt["state"], prompt["resultCode"]) == (200, "settled", "1037")
    [body] = await receiver.wait_for(1)
    assert (stk(body)["CheckoutRequestID"], stk(body)["ResultCode"]) == (cid, 1037)
    status, answer = await sim.api("POST", f"/prompts/{cid}/ignore")
    assert status == 409 and "already settled" in answer["error"]
    assert (await sim.api("POST", "/prompts/ws_CO_unknown/ignore"))[0] == 404


# -- Buy Goods -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("transaction_type, party_b, result_code", [
    ("CustomerBuyGoodsOnline", TILL, 0),
    ("CustomerBuyGoodsOnline", SHORTCODE, 2028),
    ("CustomerBuyGoodsOnline", "999999", "SFC_IC0003"),
    ("CustomerPayBillOnline", TILL, 2028),
], ids=["buy-goods-own-till", "buy-goods-to-the-paybill", "buy-goods-unknown-till", "paybill-to-a-till"])
async def test_party_b_is_checked_against_the_transaction_type_and_the_tills(start, receiver, transaction_type,
                                                                             party_b, result_code):
    sim = await start(SIMULATOR_TILLS=f"{TILL}:{SHORTCODE}")
    cid = await sim.push(PAYS, receiver.url, TransactionType=transaction_type, PartyB=party_b)
    [body] = await receiver.wait_for(1)
    assert stk(body)["CheckoutRequestID"] == cid
    assert stk(body)["ResultCode"] == result_code
    assert ("CallbackMetadata" in stk(body)) == (result_code == 0)


# -- rate limits ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["current", "legacy"])
async def test_spike_arrest_refuses_the_fourth_request_within_a_second(start, profile):
    sim = await start(SIMULATOR_SPIKE_ARREST_PER_SECOND="3", SIMULATOR_PROFILE=profile)
    await sim.token()
    # The window is the simulator's own second, read from its clock around the four requests. A machine
    # too loaded to send them within one second starts again in a fresh second, with fresh numbers.
    for attempt in range(3):
        numbers = [other(4 * attempt + i) for i in range(4)]
        started = (await sim.api("GET", "/clock"))[1]["now"]
        for number in numbers[:3]:
            assert (await sim.post_push(number)).status == 200
        resp = await sim.post_push(numbers[3])
        if (await sim.api("GET", "/clock"))[1]["now"] - started < 1.0:
            break
        await sim.api("POST", "/clock", {"advanceSeconds": 1.1})
    else:
        pytest.fail("three tries could not send four requests within one second of the simulator's clock")
    if profile == "legacy":
        await assert_daraja_error(resp, 500, "500.003.02", "Error Occurred: Spike Arrest Violation")
    else:  # Apigee refuses in front of Daraja, in its own shape
        assert resp.status == 429
        fault = (await resp.json())["fault"]
        assert fault["detail"] == {"errorcode": "policies.ratelimit.SpikeArrestViolation"}
        assert fault["faultstring"].startswith(
            "Spike arrest violation. Allowed rate : MessageRate{messagesPerPeriod=3,")
    assert await sim.prompts(msisdn=numbers[3]) == []
    await sim.api("POST", "/clock", {"advanceSeconds": 1.1})  # the next second
    assert (await sim.post_push(numbers[3])).status == 200


async def test_quota_refuses_every_request_past_it_until_reset(start):
    sim = await start(SIMULATOR_QUOTA="2")
    cid = await sim.push(other(1))
    assert (await sim.query(cid)).status == 200  # still open: ResultCode 4999, but counted
    await assert_daraja_error(await sim.post_push(other(2)), 500, "500.003.03", "Quota Violation")
    await assert_daraja_error(await sim.query(cid), 500, "500.003.03", "Quota Violation")
    await sim.api("POST", "/reset")
    assert (await sim.post_push(other(2), token=await sim.new_token())).status == 200


# -- the catalogue file --------------------------------------------------------------------------------


async def test_scenarios_file_entries_with_fault_fields_change_those_numbers(start, receiver, tmp_path):
    scenarios = tmp_path / "scenarios.json"
    scenarios.write_text(json.dumps([
        {"msisdn": "254711111111", "title": "Daraja fails this one", "push": "error"},
        {"msisdn": "254722222222", "title": "Slow decimal callback", "outcome": "0", "callback_delay": 3.0,
         "amount_format": "decimal", "balance": 1000},
    ]))
    sim = await start(SIMULATOR_SCENARIOS_FILE=str(scenarios))
    status, catalogue = await sim.api("GET", "/scenarios")
    assert status == 200
    listed = {s["msisdn"]: s for s in catalogue}
    assert listed["254711111111"]["push"] == "error" and listed["254722222222"]["callback_delay"] == 3.0

    await assert_daraja_error(await sim.post_push("254711111111"), 500, "500.003.1001", "Internal Server Error")
    cid = await sim.push("254722222222", receiver.url, Amount=100)
    await sim.wait_settled(cid)
    await asyncio.sleep(0.4)
    assert receiver.bodies == []  # the 3 s callback delay (seconds of margin under load), not the default 0.05 s
    [body] = await receiver.wait_for(1, timeout=8.0)
    prompt = await sim.wait_callbacks(cid)
    assert prompt["callbacks"][0]["at"] - prompt["settledAt"] >= 3.0 - 0.01
    assert items(body)["Amount"] == 100.0 and isinstance(items(body)["Amount"], float)
    assert (await sim.prompt(cid))["balanceAfter"] == 900
