"""Daraja's faults as the gateway meets them, through the mounted simulator: a push whose answer
is lost, a late callback after the gateway's own time-out, a spike arrest."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.payments import token_matches
from gateway.storage import Transaction
from tests.daraja_http import INTERACTIVE, PAYS, QUERY, Sim, eventually, items, stk


async def test_gateway_push_whose_answer_is_lost_is_504_and_its_callback_is_adopted(start_app):
    # The gateway gives up on Daraja after 1 s; the simulator holds the push's answer 3 s and calls back
    # 3 s after the auto answer (0.2 s): seconds for the "nothing stored yet" check on a loaded machine.
    app = await start_app(DARAJA_TIMEOUT_SECONDS="1")
    await app.payments.daraja.tokens.get()  # (an OAuth request over 1 s would make the push a 503)
    sim = Sim(app.client, "/daraja")
    status, _ = await sim.api("POST", "/faults", {"push": "timeout", "delay": 3, "callback_delay": 3})
    assert status == 201
    pushed = await app.push("0700000000", 100)
    # Not "try again": the prompt may be on the phone, and a blind retry could charge twice.
    assert (pushed["http"], pushed["success"]) == (504, False)
    assert "check your phone before trying again" in pushed["message"]
    assert await app.payments.store.count() == 0
    [prompt] = await sim.prompts(msisdn=PAYS)  # yet the customer was prompted, and pays
    cid = prompt["checkoutRequestId"]

    async def settled_log():
        rows = await app.payments.store.callback_log(cid)
        return rows if rows and rows[0]["outcome"] not in ("received", "verifying") else None

    # The callback comes at about 3.2 s; a verifying query that times out is asked again by the recovery pass.
    rows = await eventually(settled_log, 10.0, "the callback matched")
    assert [r["outcome"] for r in rows] == ["adopted"]  # matched to the push whose answer was lost
    logged = json.loads(rows[0]["body"])
    assert stk(logged)["ResultCode"] == 0
    receipt = items(logged)["MpesaReceiptNumber"]
    assert receipt == (await sim.prompt(cid))["receipt"]
    # Not at face value: Daraja's STK query confirmed the id before anything was stored.
    queries = [e for e in await sim.journal(kind="request") if e["url"].endswith(QUERY)]
    assert [e["requestBody"]["CheckoutRequestID"] for e in queries][:1] == [cid]
    done = await app.status(cid)
    assert (done["http"], done["status"], done["transaction_id"]) == (200, "completed", receipt)
    stored = await app.payments.get(cid)
    assert (stored.phone, stored.amount, stored.settled_by) == ("254700000000", 100, "callback")
    assert [c["status"] for c in (await sim.wait_callbacks(cid))["callbacks"]] == [200]  # the gateway said OK


async def test_stray_callback_that_matches_no_lost_push_is_kept_but_creates_nothing(start_app):
    app = await start_app()
    cid = "ws_CO_261120261000000712000999"
    body = {"Body": {"stkCallback": {"MerchantRequestID": "1-2-3", "CheckoutRequestID": cid,
                                     "ResultCode": 1032, "ResultDesc": "Request cancelled by user"}}}
    resp = await app.client.post(app.settings.callback_path, json=body)
    assert resp.status == 200
    assert [r["outcome"] for r in await app.payments.store.callback_log(cid)] == ["unknown"]
    assert await app.payments.store.count() == 0


async def test_gateway_fails_a_payment_at_its_own_timeout_then_completes_it_when_the_late_callback_comes(
        start_app):
    app = await start_app(PAYMENT_TIMEOUT_SECONDS="1")
    sim = Sim(app.client, "/daraja")
    # The callback comes 6 s after the answer: the gateway gives up at its next pass after 1 s, with
    # seconds to spare on a loaded machine (as in test_orders' late success; 3 s can race the give-up).
    await sim.api("POST", "/faults", {"callback": "late", "callback_delay": 6, "query": "error"})
    pushed = await app.push("0700000000", 100)
    assert pushed["http"] == 200
    cid = pushed["checkoutRequestId"]

    failed = await app.wait_status(cid, "failed", timeout=5)
    assert failed["resultCode"] == "timeout"
    prompt = await sim.prompt(cid)
    assert (prompt["resultCode"], prompt["callbacks"]) == ("0", [])  # paid; the callback is still to come
    queries = [e for e in await sim.journal(kind="request") if e["url"].endswith(QUERY)]
    assert queries and {e["status"] for e in queries} == {500}

    completed = await app.wait_status(cid, "completed", timeout=10)
    assert completed["transaction_id"] == prompt["receipt"]
    stored = await app.payments.get(cid)
    assert (stored.late, stored.settled_by, stored.receipt) == (True, "callback", prompt["receipt"])
    assert [r["outcome"] for r in await app.payments.store.callback_log(cid)] == ["late_success"]
    assert [c["status"] for c in (await sim.wait_callbacks(cid))["callbacks"]] == [200]


@pytest.mark.parametrize("profile, error_code", [("current", "policies.ratelimit.SpikeArrestViolation"),
                                                 ("legacy", "500.003.02")])
async def test_gateway_turns_a_spike_arrest_into_503_with_retry_after(start_app, profile, error_code):
    """Apigee's own fault (HTTP 429) and Daraja's envelope (HTTP 500) read the same."""
    app = await start_app(SIMULATOR_SPIKE_ARREST_PER_SECOND="1", SIMULATOR_PROFILE=profile)
    # The window is the simulator's own second, read from its clock around the two pushes. A machine too
    # loaded to make them within one second starts again in a fresh second, with fresh numbers.
    for attempt in range(3):
        started = app.sim.clock()
        # numbers outside the catalogue wait for the customer: nothing else happens
        assert (await app.push(f"07110001{attempt}0", 100))["http"] == 200
        stored = await app.payments.store.count()
        resp = await app.client.post("/stkpush", json={"phone": f"07110001{attempt}1", "amount": 100})
        body = await resp.json()
        if app.sim.clock() - started < 1.0:
            break
        app.sim.advance_clock(1.1)
    else:
        pytest.fail("three tries could not make two pushes within one second of the simulator's clock")
    assert resp.status == 503
    assert resp.headers.get("Retry-After", "").isdigit()
    assert (body["success"], body["errorCode"], body["message"]) == (
        False, error_code, "M-Pesa is busy. Please try again shortly.")
    assert await app.payments.store.count() == stored  # the refused push stored nothing


async def test_a_push_answered_after_its_payment_was_adopted_keeps_that_row_and_gets_its_token(start_app):
    """The push's answer can come after its payment is stored: its callback came first, an STK query
    confirmed the id and the payment was adopted from the push's attempt (another worker's doing,
    on PostgreSQL). The stored row stands (status, receipt, attempt adopted); the answer adds only
    what the adoption could not know, the browser's token and the MerchantRequestID."""
    app = await start_app()
    sim = Sim(app.client, "/daraja")
    status, _ = await sim.api("POST", "/faults", {"push": "slow", "delay": 2.0})  # time to adopt it meanwhile
    assert status == 201
    pushing = asyncio.create_task(app.push("0708374149", 100))  # INTERACTIVE: its prompt waits
    [prompt] = await eventually(lambda: sim.prompts(msisdn=INTERACTIVE), 3.0, "the prompt on the phone")
    cid = prompt["checkoutRequestId"]
    store = app.payments.store
    [attempt] = await store.open_attempts(INTERACTIVE, 100, 0)
    async with store.transaction() as t:  # what the adoption stores, as `_settle_verified` does
        await t.insert(Transaction(checkout_request_id=cid, merchant_request_id="", phone=INTERACTIVE, amount=100,
                                   account_reference=attempt.account_reference, description=attempt.description,
                                   status="completed", result_code="0", receipt="UAB1CD2EF3", settled_by="callback"))
        assert await t.set_attempt(attempt.id, "adopted", cid)
    assert not pushing.done()  # the answer is still on its way

    pushed = await pushing
    assert (pushed["http"], pushed["checkoutRequestId"]) == (200, cid)
    stored = await app.payments.get(cid)
    assert stored is not None
    assert (stored.status, stored.receipt, stored.amount) == ("completed", "UAB1CD2EF3", 100)
    assert stored.merchant_request_id == (await sim.prompt(cid))["merchantRequestId"]
    assert token_matches(stored, pushed["paymentToken"])
    assert (await store.attempt(attempt.id)).state == "adopted"
    assert await store.count() == 1
    shown = await app.status(cid)  # the browser that pushed sees its payment, with the details its token shows
    assert (shown["status"], shown["transaction_id"], shown["amount"]) == ("completed", "UAB1CD2EF3", 100)
