"""Callbacks are matched, then verified, never trusted: every forgery leaves the payment as it was.

Daraja's callbacks carry no signature. With the right MerchantRequestID (which an attacker could
read in simulator mode from the simulator's prompt list), each of these was applied on an
earlier version; here each one is kept in the callback log as `unverified` and changes nothing,
because Daraja's own STK query does not confirm it. Genuine callbacks still settle payments.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from tests.conftest import Running
from tests.daraja_http import eventually

INTERACTIVE = "254712345678"  # the prompt waits for the customer: Daraja says "still open"


@pytest.fixture
async def running(start_app: Any) -> Running:
    """The app, with prompts that stay open 30 s (a payment asserted "pending", or answered by hand,
    is not expired meanwhile by a loaded machine) and no reconciliation query for 30 s: here
    callbacks settle payments, and every STK query is one a callback asked for."""
    return await start_app(SIMULATOR_PROMPT_LIFETIME_SECONDS="30", RECONCILE_AFTER_SECONDS="30")


def success(cid: str, merchant: str, *, amount: Any = 100, receipt: str = "UAB1C2D3E4",
            phone: Any = 254712345678) -> dict[str, Any]:
    return {"Body": {"stkCallback": {
        "MerchantRequestID": merchant, "CheckoutRequestID": cid, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [
            {"Name": "Amount", "Value": amount}, {"Name": "MpesaReceiptNumber", "Value": receipt},
            {"Name": "Balance"}, {"Name": "TransactionDate", "Value": 20261201120000},
            {"Name": "PhoneNumber", "Value": phone}]}}}}


def failure(cid: str, merchant: str, code: int = 1032, desc: str = "Request Cancelled by user.") -> dict[str, Any]:
    return {"Body": {"stkCallback": {"MerchantRequestID": merchant, "CheckoutRequestID": cid,
                                     "ResultCode": code, "ResultDesc": desc}}}


async def post_callback(running: Running, body: dict[str, Any]) -> None:
    resp = await running.client.post(running.settings.callback_path, json=body)
    assert (resp.status, await resp.json()) == (200, {"ResultCode": 0, "ResultDesc": "Accepted"})


async def final_outcomes(running: Running, cid: str, count: int = 1, timeout: float = 5.0) -> list[str]:
    """The callback log's outcomes for `cid`, once the last `count` have been decided."""
    async def decided() -> list[str] | None:
        outcomes = [row["outcome"] for row in await running.payments.store.callback_log(cid)]
        if len(outcomes) >= count and not {"received", "verifying"} & set(outcomes):
            return outcomes
        return None
    return await eventually(decided, timeout, f"callbacks for {cid} decided")


async def open_payment(running: Running, phone: str = INTERACTIVE, amount: int = 100) -> tuple[str, str]:
    pushed = await running.push(phone, amount)
    assert pushed["http"] == 200, pushed
    cid = pushed["checkoutRequestId"]
    return cid, running.sim.prompts[cid].merchant_request_id  # what the simulator's prompt list shows


async def assert_unchanged(running: Running, cid: str, status: str = "pending") -> None:
    stored = await running.payments.get(cid)
    assert stored is not None and stored.status == status, stored
    if status == "pending":
        assert stored.receipt is None and stored.settled_by is None


async def test_forged_success_with_a_smaller_amount_changes_nothing(running):
    cid, merchant = await open_payment(running)
    await post_callback(running, success(cid, merchant, amount=1))
    assert await final_outcomes(running, cid) == ["unverified"]
    await assert_unchanged(running, cid)
    [row] = await running.payments.store.callback_log(cid)
    assert "Amount 1 is not the KES 100 asked" in row["note"]
    assert (await running.status(cid))["status"] == "pending"


async def test_forged_success_from_another_phone_changes_nothing(running):
    cid, merchant = await open_payment(running)
    await post_callback(running, success(cid, merchant, phone=254799999999))
    assert await final_outcomes(running, cid) == ["unverified"]
    await assert_unchanged(running, cid)


async def test_forged_success_with_a_receipt_another_payment_holds_changes_nothing(running):
    paid = await running.push("0700000000", 100)
    done = await running.wait_status(paid["checkoutRequestId"], "completed")
    cid, merchant = await open_payment(running)
    await post_callback(running, success(cid, merchant, receipt=done["transaction_id"]))
    assert await final_outcomes(running, cid) == ["unverified"]
    await assert_unchanged(running, cid)
    [row] = await running.payments.store.callback_log(cid)
    assert f"receipt {done['transaction_id']} already belongs to payment" in row["note"]


async def test_forged_success_after_a_genuine_cancel_changes_nothing(running):
    cid, merchant = await open_payment(running)
    running.sim.cancel(cid)  # the customer really cancels: Daraja's 1032 callback follows
    await running.wait_status(cid, "failed")
    await final_outcomes(running, cid)
    await post_callback(running, success(cid, merchant))
    assert await final_outcomes(running, cid, 2) == ["verified", "unverified"]
    stored = await running.payments.get(cid)
    assert (stored.status, stored.result_code, stored.receipt) == ("failed", "1032", None)


async def test_forged_failure_for_a_payment_daraja_says_is_open_changes_nothing(running):
    """A believed failure would tell the customer to pay again while the first prompt is live."""
    cid, merchant = await open_payment(running)
    await post_callback(running, failure(cid, merchant))
    assert await final_outcomes(running, cid) == ["unverified"]
    await assert_unchanged(running, cid)
    [row] = await running.payments.store.callback_log(cid)
    assert "still open" in row["note"]
    running.sim.enter_pin(cid, "12345")  # the customer can still pay, and it is recorded
    assert (await running.wait_status(cid, "completed"))["transaction_id"] == running.sim.prompts[cid].receipt


async def test_forged_callback_with_another_merchant_request_id_is_not_even_queried(running):
    cid, _ = await open_payment(running)
    queries_before = running.stk_queries()
    await post_callback(running, success(cid, "1234-5678-9abc-forged"))
    assert await final_outcomes(running, cid) == ["unverified"]
    await assert_unchanged(running, cid)
    assert running.stk_queries() == queries_before


async def test_forged_callback_for_a_push_whose_answer_was_lost_is_not_adopted(start_app):
    """Adoption by phone and amount is confirmed with Daraja: an id it does not know adopts nothing."""
    running = await start_app(DARAJA_TIMEOUT_SECONDS="0.3", SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    await running.payments.daraja.tokens.get()  # (an OAuth request over 0.3 s would make the push a 503)
    await running.client.post("/simulator/api/faults", json={"push": "timeout", "delay": 1})
    lost = await running.push(INTERACTIVE, 100)
    assert lost["http"] == 504
    forged_id = "ws_CO_011220261200000001" + INTERACTIVE[3:]  # the shape Daraja uses, the victim's number
    await post_callback(running, success(forged_id, "forged-merchant"))
    assert await final_outcomes(running, forged_id) == ["unverified"]
    assert await running.payments.store.count() == 0
    [row] = await running.payments.store.callback_log(forged_id)
    assert "Invalid CheckoutRequestID" in row["note"]
    # The genuine prompt is still open; when the customer pays, its callback is matched after all.
    [prompt] = [p for p in running.sim.prompts.values() if p.msisdn == INTERACTIVE]
    running.sim.enter_pin(prompt.checkout_request_id, "12345")
    assert await final_outcomes(running, prompt.checkout_request_id) == ["adopted"]
    stored = await running.payments.get(prompt.checkout_request_id)
    assert (stored.status, stored.receipt, stored.amount) == ("completed", prompt.receipt, 100)


async def test_forged_callback_while_the_genuine_push_is_in_flight_is_not_adopted(start_app):
    running = await start_app(SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    await running.client.post("/simulator/api/faults", json={"push": "slow", "delay": 0.6})
    push = asyncio.create_task(running.push(INTERACTIVE, 100))
    await asyncio.sleep(0.2)  # the push is on its way; its answer is not back
    forged_id = "ws_CO_011220261200000002" + INTERACTIVE[3:]
    await post_callback(running, success(forged_id, "forged-merchant"))
    pushed = await push
    assert pushed["http"] == 200
    assert await final_outcomes(running, forged_id) in (["unknown"], ["unverified"])
    assert await running.payments.store.count() == 1
    await assert_unchanged(running, pushed["checkoutRequestId"])


async def test_forged_callbacks_never_show_payment_received(running):
    cid, merchant = await open_payment(running)
    for body in (success(cid, merchant, amount=1), success(cid, "x-y-z"), failure(cid, merchant)):
        await post_callback(running, body)
    await final_outcomes(running, cid, 3)
    page = await running.client.get(f"/confirmation.html?checkoutRequestId={cid}")
    html = await page.text()
    assert "Payment received" not in html and "Waiting for M-Pesa" in html


# -- genuine callbacks still settle payments ---------------------------------------------------


async def test_genuine_failure_is_confirmed_by_a_query_then_applied(running):
    cid, _ = await open_payment(running)
    running.sim.cancel(cid)
    failed = await running.wait_status(cid, "failed")
    assert failed["resultCode"] == "1032"
    assert await final_outcomes(running, cid) == ["verified"]
    stored = await running.payments.get(cid)
    assert stored.settled_by == "callback"


async def test_matching_success_is_applied_without_a_query(running):
    cid, _ = await open_payment(running)
    queries_before = running.stk_queries()
    running.sim.enter_pin(cid, "12345")
    done = await running.wait_status(cid, "completed")
    assert done["transaction_id"] == running.sim.prompts[cid].receipt
    assert await final_outcomes(running, cid) == ["applied"]
    assert running.stk_queries() == queries_before


async def test_success_callback_carrying_amount_as_a_decimal_still_matches(running):
    cid, merchant = await open_payment(running)
    running.sim.add_faults({"callback": "never"}, count=1)  # the genuine one is lost; ours stands in
    prompt = running.sim.enter_pin(cid, "12345")
    await post_callback(running, success(cid, merchant, amount=100.0, receipt=prompt.receipt))
    assert await final_outcomes(running, cid) == ["applied"]
    body = json.dumps(success(cid, merchant, amount=100.0, receipt=prompt.receipt))
    assert '"Value": 100.0' in body


async def test_two_hundred_forged_adoptions_complete_nothing(start_app):
    """The earlier version adopted 200 of 200: a made-up id ending in the number of a phone whose
    push lost its answer completed that push's payment, unpaid."""
    running = await start_app(DARAJA_TIMEOUT_SECONDS="0.3", SIMULATOR_PROMPT_LIFETIME_SECONDS="30",
                              PUSH_LIMIT_PER_PHONE="0")
    phones = [f"2547150{i:05d}" for i in range(200)]
    # The token first: on a loaded machine an OAuth request over 0.3 s would make these 503s (nothing sent).
    await running.payments.daraja.tokens.get()
    await running.client.post("/simulator/api/faults", json={"count": 200, "push": "timeout", "delay": 1})
    lost = await asyncio.gather(*(running.push(p, 100) for p in phones))
    assert {a["http"] for a in lost} == {504}
    forged = [f"ws_CO_01122026120000{i % 1000}{p[3:]}" for i, p in enumerate(phones)]
    for cid, phone in zip(forged, phones, strict=True):
        await post_callback(running, success(cid, "forged-merchant", phone=int(phone)))
    outcomes = [(await final_outcomes(running, cid, timeout=30))[0] for cid in forged]
    print(f"\n200 forged callbacks for pushes whose answer was lost: {outcomes.count('adopted')} adopted, "
          f"{outcomes.count('unverified')} unverified")
    assert outcomes == ["unverified"] * 200
    assert await running.payments.store.count() == 0
    html = await (await running.client.get(f"/confirmation.html?checkoutRequestId={forged[0]}")).text()
    assert "Payment received" not in html
