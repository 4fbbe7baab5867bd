"""Every scenario of the catalogue, through the gateway's HTTP API and the real simulator.

The gateway's Daraja client reaches the simulator over loopback HTTP, and the simulator's
callbacks reach the gateway's callback endpoint the same way: nothing here is faked.
"""

from __future__ import annotations

import asyncio
import re

import pytest

RECEIPT = re.compile(r"^[A-Z0-9]{10}$")


async def test_successful_payment_completes_with_the_receipt_the_simulator_issued(start_app):
    # The scripted answer 30 s on (the simulator's clock is moved there below: nothing waits), so the
    # first look surely comes before it; no STK query either, so the callback is what completes it.
    running = await start_app(SIMULATOR_AUTO_ANSWER_SECONDS="30", RECONCILE_AFTER_SECONDS="30")
    pushed = await running.push("0700000000", 100, accountReference="CART_1", description="Demo")
    assert pushed == {"http": 200, "success": True, "checkoutRequestId": pushed["checkoutRequestId"],
                      "message": "STK push sent successfully", "paymentToken": pushed["paymentToken"]}
    assert pushed["checkoutRequestId"].startswith("ws_CO_")
    assert len(pushed["paymentToken"]) >= 43  # 256 random bits, URL-safe base64
    first = await running.status(pushed["checkoutRequestId"])
    assert first["status"] == "pending" and first["message"] == "Waiting for user to complete payment"

    running.sim.advance_clock(30)  # the customer pays now
    done = await running.wait_status(pushed["checkoutRequestId"], "completed")
    prompt = running.sim.prompts[pushed["checkoutRequestId"]]
    assert done["success"] is True
    assert RECEIPT.match(done["transaction_id"])
    assert done["transaction_id"] == done["MpesaReceiptNumber"] == prompt.receipt
    stored = await running.payments.get(pushed["checkoutRequestId"])
    assert (stored.status, stored.settled_by, stored.receipt) == ("completed", "callback", prompt.receipt)
    assert stored.phone == "254700000000" and stored.amount == 100
    assert stored.raw_callback and prompt.receipt in stored.raw_callback


@pytest.mark.parametrize("phone, code, message", [
    ("254700000001", "1", "Insufficient M-Pesa balance"),
    ("254700000002", "1032", "User cancelled transaction"),
    ("254700000003", "2001", "Wrong M-Pesa PIN entered"),
    ("254700000004", "1037", "The phone could not be reached; check it is on and try again"),
    ("254700000005", "1019", "The payment request expired before it was completed"),
])
async def test_failure_scenarios_fail_with_the_reason_in_plain_words(start_app, phone, code, message):
    running = await start_app(RECONCILE_AFTER_SECONDS="10")  # the callback, not a query, settles these
    pushed = await running.push(phone, 50)
    assert pushed["success"] is True
    failed = await running.wait_status(pushed["checkoutRequestId"], "failed")
    assert failed == {"http": 200, "success": False, "status": "failed", "message": message, "resultCode": code,
                      "checkoutRequestId": pushed["checkoutRequestId"], "amount": 50,
                      "phoneMasked": phone[:4] + "****" + phone[-4:], "accountReference": "Payment",
                      "description": "Payment"}
    stored = await running.payments.get(pushed["checkoutRequestId"])
    assert stored.settled_by == "callback" and stored.receipt is None


async def test_refused_push_answers_409_and_stores_nothing(running):
    pushed = await running.push("254700000006", 100)
    assert pushed["http"] == 409
    assert pushed["success"] is False
    assert "already waiting on this phone" in pushed["message"]
    assert pushed["errorCode"] == "500.001.1001"
    assert await running.payments.store.count() == 0


async def test_lost_callback_is_settled_by_the_stk_query(running):
    pushed = await running.push("254700000007", 100)
    done = await running.wait_status(pushed["checkoutRequestId"], "completed")
    stored = await running.payments.get(pushed["checkoutRequestId"])
    assert stored.settled_by == "query"
    assert stored.result_code == "0"
    # A query carries no receipt; the answer says so rather than inventing one.
    assert done["transaction_id"] is None
    assert "receipt number has not arrived" in done["message"]
    assert running.sim.prompts[pushed["checkoutRequestId"]].callbacks == ()  # none was sent


async def test_duplicate_callback_changes_nothing(start_app):
    running = await start_app(RECONCILE_AFTER_SECONDS="30")  # the first callback, not a query, settles it
    pushed = await running.push("254700000008", 100)
    cid = pushed["checkoutRequestId"]
    await running.wait_status(cid, "completed")
    deadline = asyncio.get_running_loop().time() + 10
    # Both in the log, and both answers back at the simulator (it records one after the gateway's reply).
    while len(await running.payments.store.callback_log(cid)) < 2 or len(running.sim.prompts[cid].callbacks) < 2:
        assert asyncio.get_running_loop().time() < deadline, "second callback never arrived"
        await asyncio.sleep(0.05)
    log = await running.payments.store.callback_log(cid)
    assert [entry["outcome"] for entry in log] == ["applied", "duplicate"]
    stored = await running.payments.get(cid)
    assert stored.receipt == running.sim.prompts[cid].receipt
    assert [c.status for c in running.sim.prompts[cid].callbacks] == [200, 200]


async def test_late_callback_adds_the_receipt_to_a_payment_the_query_already_completed(start_app):
    # The late callback 30 s after the payment, by the simulator's clock: the query (0.6-1.1 s) surely
    # settles it first, however slow the machine; then the clock is moved on and the callback comes.
    running = await start_app(SIMULATOR_LATE_CALLBACK_SECONDS="30")
    pushed = await running.push("254700000009", 100)
    cid = pushed["checkoutRequestId"]
    early = await running.wait_status(cid, "completed")
    assert early["transaction_id"] is None  # settled by the query before the late callback
    assert running.sim.prompts[cid].callbacks == ()
    running.sim.advance_clock(30)
    deadline = asyncio.get_running_loop().time() + 10
    while (await running.status(cid))["transaction_id"] is None:
        assert asyncio.get_running_loop().time() < deadline, "late callback never added the receipt"
        await asyncio.sleep(0.05)
    final = await running.status(cid)
    assert final["transaction_id"] == running.sim.prompts[cid].receipt
    assert [e["outcome"] for e in await running.payments.store.callback_log(cid)] == ["receipt_added"]


async def _answer(running, cid: str, action: str, **body):
    resp = await running.client.post(f"/simulator/api/prompts/{cid}/{action}", json=body)
    assert resp.status == 200, await resp.text()
    return await resp.json()


async def test_interactive_number_pays_when_the_correct_pin_is_entered(start_app):
    # Open 30 s: answered well before it expires; no query meanwhile, so the callback brings the receipt.
    running = await start_app(SIMULATOR_PROMPT_LIFETIME_SECONDS="30", RECONCILE_AFTER_SECONDS="30")
    pushed = await running.push("0708374149", 250)
    cid = pushed["checkoutRequestId"]
    await asyncio.sleep(0.3)
    assert (await running.status(cid))["status"] == "pending"  # waits for the customer
    answered = await _answer(running, cid, "pin", pin="12345")
    done = await running.wait_status(cid, "completed")
    assert done["transaction_id"] == answered["receipt"]


@pytest.mark.parametrize("action, body, message", [
    ("pin", {"pin": "00000"}, "Wrong M-Pesa PIN entered"),
    ("cancel", {}, "User cancelled transaction"),
])
async def test_interactive_number_fails_on_wrong_pin_or_cancel(start_app, action, body, message):
    running = await start_app(SIMULATOR_PROMPT_LIFETIME_SECONDS="30")  # answered well before it expires
    pushed = await running.push("254712345678", 10)
    await _answer(running, pushed["checkoutRequestId"], action, **body)
    failed = await running.wait_status(pushed["checkoutRequestId"], "failed")
    assert failed["message"] == message


async def test_unanswered_interactive_prompt_fails_as_unreachable_when_it_expires(running):
    pushed = await running.push("254712345679", 10)
    failed = await running.wait_status(pushed["checkoutRequestId"], "failed", timeout=8)
    assert failed["resultCode"] == "1037"


async def test_late_success_after_local_timeout_still_completes_the_payment(start_app):
    running = await start_app(PAYMENT_TIMEOUT_SECONDS="0.8", RECONCILE_AFTER_SECONDS="0.2",
                              SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    pushed = await running.push("254712345600", 75)
    cid = pushed["checkoutRequestId"]
    given_up = await running.wait_status(cid, "failed")
    assert given_up["resultCode"] == "timeout"
    assert given_up["message"] == "Payment not confirmed: M-Pesa did not answer in time"
    await _answer(running, cid, "pin", pin="12345")  # the customer pays after all
    receipt = running.sim.prompts[cid].receipt
    for _ in range(200):  # the late callback (or a query first, then the callback's receipt)
        if (await running.status(cid)).get("transaction_id") == receipt:
            break
        await asyncio.sleep(0.05)
    stored = await running.payments.get(cid)
    assert (stored.status, stored.receipt, stored.late) == ("completed", receipt, True)
    assert [e["outcome"] for e in await running.payments.store.callback_log(cid)] in (
        ["late_success"], ["receipt_added"])


async def test_query_never_downgrades_a_completed_payment(running):
    pushed = await running.push("0700000000", 100)
    cid = pushed["checkoutRequestId"]
    await running.wait_status(cid, "completed")
    tx = await running.payments.get(cid)
    assert await running.payments._settle_from_query(tx, "1032", "Request cancelled by user") is False
    assert (await running.payments.get(cid)).status == "completed"


async def test_failure_callback_after_success_keeps_the_success(start_app):
    running = await start_app(RECONCILE_AFTER_SECONDS="30")  # the genuine callback settles it, before ours
    pushed = await running.push("0700000000", 100)
    cid = pushed["checkoutRequestId"]
    await running.wait_status(cid, "completed")
    tx = await running.payments.get(cid)
    body = {"Body": {"stkCallback": {"MerchantRequestID": tx.merchant_request_id, "CheckoutRequestID": cid,
                                     "ResultCode": 1032, "ResultDesc": "Request cancelled by user"}}}
    resp = await running.client.post(running.settings.callback_path, json=body)
    assert resp.status == 200
    assert (await running.status(cid))["status"] == "completed"
    assert (await running.payments.store.callback_log(cid))[-1]["outcome"] == "conflict"


async def test_payments_without_callback_are_queried_with_backoff_not_per_poll(start_app):
    running = await start_app(RECONCILE_AFTER_SECONDS="0.3", RECONCILE_INTERVAL_SECONDS="0.4",
                              RECONCILE_MAX_INTERVAL_SECONDS="10", SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    loop = asyncio.get_running_loop()
    started = loop.time()
    pushed = await running.push("254712345601", 10)
    cid = pushed["checkoutRequestId"]
    for _ in range(40):  # a browser polling hard for about 2 s
        await running.status(cid)
        await asyncio.sleep(0.05)
    stored = await running.payments.get(cid)
    elapsed = loop.time() - started
    # Queries at ~0.3 s, then +0.4, +0.8, +1.6, ...: never sooner, however often it was polled. So at
    # most three within two seconds; on a loaded machine the 40 polls take longer, and the bound is
    # taken from the time they really took (a query per poll, or no doubling, still exceeds it).
    due = [0.3 + 0.4 * (2 ** k - 1) for k in range(8)]
    assert 1 <= stored.query_attempts <= sum(1 for at in due if at <= elapsed), elapsed
    assert stored.status == "pending"


async def test_payment_given_up_locally_is_still_checked_and_a_later_paid_query_completes_it(start_app):
    running = await start_app(PAYMENT_TIMEOUT_SECONDS="0.8", RECONCILE_AFTER_SECONDS="0.2",
                              RECONCILE_INTERVAL_SECONDS="0.2", RECONCILE_MAX_INTERVAL_SECONDS="0.2",
                              SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    await running.client.post("/simulator/api/faults", json={"callback": "never"})  # only a query can tell
    pushed = await running.push("254712345602", 40)
    cid = pushed["checkoutRequestId"]
    assert (await running.wait_status(cid, "failed"))["resultCode"] == "timeout"
    await _answer(running, cid, "pin", pin="12345")  # the customer pays after the gateway gave up
    done = await running.wait_status(cid, "completed", timeout=10)
    stored = await running.payments.get(cid)
    assert (stored.settled_by, stored.late, stored.next_query_at) == ("query", True, None)
    assert done["transaction_id"] is None  # a query carries no receipt
    assert await running.payments.store.callback_log(cid) == []


async def test_payment_given_up_locally_takes_the_real_reason_when_daraja_settles_it_as_failed(start_app):
    running = await start_app(PAYMENT_TIMEOUT_SECONDS="0.8", RECONCILE_AFTER_SECONDS="0.2",
                              RECONCILE_INTERVAL_SECONDS="0.2", RECONCILE_MAX_INTERVAL_SECONDS="0.2",
                              SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    await running.client.post("/simulator/api/faults", json={"callback": "never"})
    pushed = await running.push("254712345603", 40)
    cid = pushed["checkoutRequestId"]
    await running.wait_status(cid, "failed")
    await _answer(running, cid, "cancel")
    for _ in range(200):
        stored = await running.payments.get(cid)
        if stored.result_code == "1032":
            break
        await asyncio.sleep(0.05)
    assert (stored.status, stored.result_code, stored.next_query_at) == ("failed", "1032", None)
    assert (await running.status(cid))["message"] == "User cancelled transaction"


@pytest.mark.parametrize("phone", ["254700000001", "254700000002", "254700000004"],
                         ids=["insufficient", "cancelled", "unreachable"])
async def test_the_customer_reads_the_same_reason_whichever_daraja_wording_comes(start_app, phone):
    """The simulator's profiles send each of these with its wording before and since late 2025."""
    answers, descs = {}, {}
    for profile in ("current", "legacy"):
        running = await start_app(SIMULATOR_PROFILE=profile, RECONCILE_AFTER_SECONDS="10")
        pushed = await running.push(phone, 50)
        answers[profile] = await running.wait_status(pushed["checkoutRequestId"], "failed")
        stored = await running.payments.get(pushed["checkoutRequestId"])
        assert stored.result_desc == running.sim.prompts[pushed["checkoutRequestId"]].result_desc
        descs[profile] = stored.result_desc
    assert descs["current"] != descs["legacy"]  # the wordings differ …
    assert answers["current"]["message"] == answers["legacy"]["message"]  # … what the customer reads does not
    assert answers["current"]["resultCode"] == answers["legacy"]["resultCode"]
