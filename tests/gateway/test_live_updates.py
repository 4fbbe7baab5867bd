"""Server-sent events: the pay page hears about a payment the moment its callback lands, and the
virtual phone hears about its prompts."""

from __future__ import annotations

import asyncio
import json

import pytest


async def read_events(resp, count: int, timeout: float = 10.0) -> list[tuple[str, object]]:
    """Read `count` SSE events (event name, parsed JSON data) from an open response."""
    events: list[tuple[str, object]] = []
    name, data = "message", []

    async def reader() -> None:
        nonlocal name, data
        async for raw in resp.content:
            line = raw.decode().rstrip("\r\n")
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].strip())
            elif line == "" and data:
                events.append((name, json.loads("\n".join(data))))
                name, data = "message", []
                if len(events) == count:
                    return

    await asyncio.wait_for(reader(), timeout)
    return events


async def test_payment_stream_sends_pending_then_completed_and_ends(start_app):
    # A customer who pays when the test says so (a scripted number pays 0.25 s after its prompt,
    # before a loaded machine may have opened the stream), and no STK query in between: the
    # callback, and nothing else, completes the payment.
    running = await start_app(SIMULATOR_PROMPT_LIFETIME_SECONDS="30", RECONCILE_AFTER_SECONDS="30")
    pushed = await running.push("0712345678", 100)
    cid = pushed["checkoutRequestId"]
    resp = await running.client.get(f"/stkpush/{cid}/events")
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events = await read_events(resp, 1)
    answered = await running.client.post(f"/simulator/api/prompts/{cid}/pin", json={"pin": "12345"})
    assert answered.status == 200, await answered.text()
    events += await read_events(resp, 1)
    assert [e[0] for e in events] == ["status", "status"]
    assert events[0][1]["status"] == "pending"
    assert events[1][1]["status"] == "completed"
    assert events[1][1]["transaction_id"] == running.sim.prompts[cid].receipt
    assert await resp.content.read() == b""  # the stream closes once the payment is settled
    assert running.payments.events.subscriber_count(cid) == 0


async def test_payment_stream_of_a_settled_payment_sends_the_final_state_at_once(running):
    pushed = await running.push("254700000002", 10)
    await running.wait_status(pushed["checkoutRequestId"], "failed")
    resp = await running.client.get(f"/stkpush/{pushed['checkoutRequestId']}/events")
    [(name, body)] = await read_events(resp, 1)
    assert (name, body["status"], body["message"]) == ("status", "failed", "User cancelled transaction")


async def test_payment_stream_for_an_unknown_id_is_404(running):
    resp = await running.client.get("/stkpush/ws_CO_nope/events")
    assert (resp.status, await resp.json()) == (404, {"success": False, "message": "Transaction not found"})


async def test_payment_stream_ends_when_the_polling_window_is_over(start_app):
    running = await start_app(CHECKOUT_POLL_TIMEOUT_SECONDS="0.1", SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    pushed = await running.push("254712345678", 10)  # interactive: stays pending (for 30 s)
    resp = await running.client.get(f"/stkpush/{pushed['checkoutRequestId']}/events")
    [(name, body)] = await read_events(resp, 1)
    assert body["status"] == "pending"
    # Closed after the window (0.2 s), still pending: long before the prompt could expire.
    assert await asyncio.wait_for(resp.content.read(), 10) == b""
    assert running.payments.events.subscriber_count(pushed["checkoutRequestId"]) == 0


async def test_simulator_feed_shows_a_new_prompt_for_that_number(start_app):
    running = await start_app(SIMULATOR_PROMPT_LIFETIME_SECONDS="30")  # still open when the feed is read
    resp = await running.client.get("/simulator/api/events?msisdn=254712345678")
    [(name, first)] = await read_events(resp, 1)
    assert (name, first) == ("prompts", [])
    pushed = await running.push("0712345678", 42)
    [(name, prompts)] = await read_events(resp, 1)
    assert prompts[0]["checkoutRequestId"] == pushed["checkoutRequestId"]
    assert prompts[0]["state"] == "open"
    assert prompts[0]["promptText"] == "Do you want to pay Ksh 42 to Demo Shop? Enter M-PESA PIN"
    resp.close()


async def test_simulator_feed_rejects_a_bad_number(running):
    resp = await running.client.get("/simulator/api/events?msisdn=07")
    assert resp.status == 400


@pytest.mark.parametrize("profile, ending", [
    ("current", "New M-PESA balance is Ksh{balance:,.2f}. Amount you can transact within the day is 499,900.00."),
    ("legacy", ". New M-PESA balance is Ksh{balance:,.2f}. Transaction cost, Ksh0.00."),
])
async def test_paid_prompt_carries_the_mpesa_confirmation_sms(start_app, profile, ending):
    running = await start_app(SIMULATOR_PROFILE=profile, SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    pushed = await running.push("0712345678", 100, accountReference="CART_1")  # the PIN: before it expires
    cid = pushed["checkoutRequestId"]
    resp = await running.client.post(f"/simulator/api/prompts/{cid}/pin", json={"pin": "12345"})
    prompt = await resp.json()
    balance = prompt["balanceAfter"]
    assert prompt["smsText"].startswith(
        f"{prompt['receipt']} Confirmed. Ksh100.00 sent to Demo Shop for account CART_1 on ")
    assert prompt["smsText"].endswith(ending.format(balance=balance))
    subscriber = await (await running.client.get("/simulator/api/subscribers/254712345678")).json()
    assert subscriber["balance"] == balance
