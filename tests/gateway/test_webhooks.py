"""Signed webhooks to the shop, from the outbox: a real receiver (an aiohttp server on 127.0.0.1)
and the real app (gateway + simulator over loopback HTTP). Signatures are checked here with hmac,
independently of the gateway's code."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import logging
import runpy
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp import web

from gateway.config import load_settings
from gateway.storage import SqliteTransactionStore
from gateway.storage_pg import open_store
from gateway.webhooks import Deliveries, resend_event, retry_delay
from tests.conftest import free_port, sqlite_only
from tests.gateway.test_restart_durability import gateway_env, start_server, stop_server

ROOT = Path(__file__).resolve().parents[2]
VERIFY_DIR = Path(__file__).parent / "webhook_verify"
SECRET = "whsec_test_6f1d0c2a9b8e4f7a5c3d2e1b0a9f8e7d"

PAYMENT_FIELDS = ["checkoutRequestId", "orderId", "status", "amount", "phone", "receipt", "resultCode",
                  "resultDesc", "message", "settledBy", "late", "createdAt", "settledAt"]


@dataclass
class Delivery:
    at: float  # time.monotonic() when it arrived
    headers: dict[str, str]
    body: bytes
    received: float = field(default_factory=time.time)  # the wall clock when it arrived

    @property
    def event(self) -> dict[str, Any]:
        return json.loads(self.body)


@dataclass
class Receiver:
    """The shop's webhook endpoint. `answers` are used in turn (then `default`): an HTTP status, or
    ("sleep", seconds) to answer 200 only after that long."""

    deliveries: list[Delivery] = field(default_factory=list)
    answers: list[Any] = field(default_factory=list)
    default: Any = 200
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.deliveries.append(Delivery(time.monotonic(), dict(request.headers), await request.read()))
        answer = self.answers.pop(0) if self.answers else self.default
        if isinstance(answer, tuple):
            await asyncio.sleep(answer[1])
            answer = 200
        return web.Response(status=answer, text="ok" if answer < 300 else "receiver says no")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/hooks/shop", self.handle)
        return app

    def of_type(self, kind: str) -> list[Delivery]:
        return [d for d in self.deliveries if d.event["type"] == kind]

    async def wait_for(self, kind: str, count: int = 1, timeout: float = 10.0) -> list[Delivery]:
        await eventually(lambda: len(self.of_type(kind)) >= count, timeout, f"{count} × {kind}: {self.deliveries}")
        return self.of_type(kind)


async def eventually(predicate: Any, timeout: float = 10.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.02)


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    shop = Receiver()
    server = await aiohttp_server(shop.app(), host="127.0.0.1")
    shop.url = str(server.make_url("/hooks/shop"))
    return shop


def hooked(receiver: Receiver, **overrides: str) -> dict[str, str]:
    """Settings that send webhooks to `receiver` (time-out 1 s: retries after 0.5 s, 1 s, 2 s …)."""
    return {"MERCHANT_WEBHOOK_URL": receiver.url, "MERCHANT_WEBHOOK_SECRET": SECRET,
            "WEBHOOK_TIMEOUT_SECONDS": "1", **overrides}


def signature_ok(delivery: Delivery, secret: str = SECRET, tolerance: float = 10) -> bool:
    """The signature checked here, as a shop would, without the gateway's code."""
    header = delivery.headers["Mpesa-Signature"]
    fields = dict(part.split("=", 1) for part in header.split(","))
    assert list(fields) == ["t", "v1"], header
    expected = hmac.new(secret.encode(), f"{fields['t']}.".encode() + delivery.body, hashlib.sha256).hexdigest()
    # As fresh as a shop would check it on arrival (not when a test gets round to looking).
    return hmac.compare_digest(expected, fields["v1"]) and abs(delivery.received - int(fields["t"])) <= tolerance


async def events(running: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in await running.payments.store.fetch_all("SELECT * FROM webhook_events ORDER BY rowid")]


async def attempts(running: Any, event_id: str) -> list[dict[str, Any]]:
    return [dict(r) for r in await running.payments.store.fetch_all(
        "SELECT * FROM webhook_attempts WHERE event_id = ? ORDER BY id", (event_id,))]


async def event_row(running: Any, event_id: str) -> dict[str, Any]:
    row = await running.payments.store.fetch_one("SELECT * FROM webhook_events WHERE event_id = ?", (event_id,))
    assert row is not None
    return dict(row)


def expected_payment(tx: Any, message: str) -> dict[str, Any]:
    return {"checkoutRequestId": tx.checkout_request_id, "orderId": tx.order_id, "status": tx.status,
            "amount": tx.amount, "phone": tx.phone, "receipt": tx.receipt, "resultCode": tx.result_code,
            "resultDesc": tx.result_desc, "message": message, "settledBy": tx.settled_by, "late": tx.late,
            "createdAt": tx.created_at, "settledAt": tx.settled_at}


async def _answer(running: Any, cid: str, action: str, **body: Any) -> None:
    resp = await running.client.post(f"/simulator/api/prompts/{cid}/{action}", json=body)
    assert resp.status == 200, await resp.text()


# -- delivery ----------------------------------------------------------------------------------

async def test_completed_and_failed_payments_are_delivered_signed_with_the_exact_stored_body(start_app, receiver):
    running = await start_app(**hooked(receiver, RECONCILE_AFTER_SECONDS="30"))  # settled by their callbacks
    paid = await running.push("0700000000", 100, accountReference="INV-7", description="Kitenge")
    cancelled = await running.push("0700000002", 250)
    [completed] = await receiver.wait_for("payment.completed")
    [failed] = await receiver.wait_for("payment.failed")

    for delivery, cid in ((completed, paid["checkoutRequestId"]), (failed, cancelled["checkoutRequestId"])):
        assert signature_ok(delivery)
        assert not signature_ok(delivery, secret=SECRET + "x")
        assert delivery.headers["Content-Type"] == "application/json"
        event = delivery.event
        assert delivery.headers["Mpesa-Event-Id"] == event["id"]
        assert event["id"].startswith("evt_") and len(event["id"]) >= 20
        assert list(event) == ["id", "type", "created", "data"]
        assert abs(event["created"] - time.time()) < 10 and isinstance(event["created"], int)
        assert list(event["data"]) == PAYMENT_FIELDS
        # The receiver has the request before the gateway has its answer and has recorded it.
        await eventually(lambda e=event["id"]: _state_is(running, e, "delivered"), 5, "delivered")
        stored = await event_row(running, event["id"])
        assert stored["body"].encode() == delivery.body  # byte for byte what the outbox holds
        assert (stored["state"], stored["attempts"], stored["last_status"]) == ("delivered", 1, 200)
        assert stored["delivered_at"] and stored["next_attempt_at"] is None
        [attempt] = await attempts(running, event["id"])
        assert (attempt["status"], attempt["error"]) == (200, None) and attempt["duration_ms"] >= 0
        assert event["data"]["checkoutRequestId"] == cid

    tx = await running.payments.get(paid["checkoutRequestId"])
    assert completed.event["data"] == expected_payment(tx, "Payment completed")
    assert (tx.status, tx.phone, tx.amount, tx.settled_by, tx.result_code) == (
        "completed", "254700000000", 100, "callback", "0")
    assert tx.receipt == running.sim.prompts[tx.checkout_request_id].receipt
    tx = await running.payments.get(cancelled["checkoutRequestId"])
    assert failed.event["data"] == expected_payment(tx, "User cancelled transaction")
    assert (tx.status, tx.result_code, tx.receipt, tx.late) == ("failed", "1032", None, False)
    await asyncio.sleep(1.2)
    assert len(receiver.deliveries) == 2  # each once


def test_retry_delays_start_at_half_the_time_out_at_most_5_s_and_double_up_to_an_hour():
    short = load_settings({"WEBHOOK_TIMEOUT_SECONDS": "1"})
    assert [retry_delay(short, n) for n in range(1, 6)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    default = load_settings({})  # a 10 s time-out: the first retry after 5 s
    assert [retry_delay(default, n) for n in (1, 2, 3, 10, 11, 12, 500)] == \
        [5.0, 10.0, 20.0, 2560.0, 3600.0, 3600.0, 3600.0]


async def test_a_receiver_failing_twice_gets_three_attempts_with_growing_delays_and_one_event_id(
        start_app, receiver):
    receiver.answers = [500, 500, 200]
    running = await start_app(**hooked(receiver))
    await running.push("0700000000", 100)
    tries = await receiver.wait_for("payment.completed", 3)
    assert len({d.body for d in tries}) == 1  # the same body on every attempt
    assert {d.headers["Mpesa-Event-Id"] for d in tries} == {tries[0].event["id"]}
    assert all(signature_ok(d) for d in tries)
    first_gap, second_gap = tries[1].at - tries[0].at, tries[2].at - tries[1].at
    # The delays (0.5 s, then 1 s) are floors; how far past them an attempt lands depends on the
    # machine's load (a stall of half a second before the first retry and none before the second
    # would even reverse their order), so only the floors are checked here. The schedule itself,
    # attempt by attempt on the worker's own clock: test_by_default_an_event_is_retried_for_three_days_...
    assert first_gap >= 0.45 and second_gap >= 0.95, (first_gap, second_gap)

    event_id = tries[0].event["id"]
    await eventually(lambda: _state_is(running, event_id, "delivered"), 5, "delivered")
    row = await event_row(running, event_id)
    assert (row["attempts"], row["last_status"], row["last_error"]) == (3, 200, None)
    tried = await attempts(running, event_id)
    assert [a["status"] for a in tried] == [500, 500, 200]
    assert [a["error"] for a in tried] == ["HTTP 500: receiver says no", "HTTP 500: receiver says no", None]
    await asyncio.sleep(2.5)
    assert len(receiver.deliveries) == 3  # delivered: never sent again


async def _state_is(running: Any, event_id: str, state: str) -> bool:
    return (await event_row(running, event_id))["state"] == state


async def test_a_receiver_that_does_not_answer_in_time_is_tried_again(start_app, receiver):
    receiver.answers = [("sleep", 3.0)]  # answers, but only after the gateway stopped waiting
    running = await start_app(**hooked(receiver, WEBHOOK_TIMEOUT_SECONDS="0.5"))
    await running.push("0700000000", 100)
    tries = await receiver.wait_for("payment.completed", 2)
    assert tries[0].body == tries[1].body
    event_id = tries[0].event["id"]
    await eventually(lambda: _state_is(running, event_id, "delivered"), 5, "delivered")
    first, *between, last = await attempts(running, event_id)
    assert (first["status"], first["error"]) == (None, "no answer within 0.5 s")
    assert 450 <= first["duration_ms"] < 2900  # gave up at its time-out: the answer came after 3 s
    # The next answer is at once; on a loaded machine it may still miss the 0.5 s, and be retried.
    assert all((t["status"], t["error"]) == (None, "no answer within 0.5 s") for t in between)
    assert (last["status"], last["error"]) == (200, None)


async def test_after_the_retry_window_the_event_is_failed_and_resend_delivers_it(start_app, receiver):
    receiver.default = 503
    # After the window a resend is a single attempt: a 2 s time-out, which a loaded machine does not
    # turn into a failure (the shop answers at once). Retries 1 s, then 2 s apart: 3 or 4 in the 4 s.
    running = await start_app(**hooked(receiver, WEBHOOK_TIMEOUT_SECONDS="2", WEBHOOK_RETRY_SECONDS="4"))
    await running.push("0700000000", 100)
    [first] = await receiver.wait_for("payment.completed")
    event_id = first.event["id"]
    await eventually(lambda: _state_is(running, event_id, "failed"), 15, "failed")
    row = await event_row(running, event_id)
    tried = await attempts(running, event_id)
    assert row["attempts"] == len(tried) >= 3 and row["next_attempt_at"] is None
    assert (row["last_status"], row["last_error"]) == (503, "HTTP 503: receiver says no")
    # Tried until the window closed: it counts from the event's creation (the first delivery may come
    # well after it on a loaded machine), and the last try is due at its end.
    assert receiver.deliveries[-1].received >= row["created_epoch"] + 4.0 - 0.01
    await asyncio.sleep(1.0)
    assert len(receiver.deliveries) == len(tried)  # and not after

    receiver.default = 200
    assert await resend_event(running.payments.store, event_id) is True
    await eventually(lambda: _state_is(running, event_id, "delivered"), 5, "delivered after resend")
    resent = receiver.deliveries[-1]
    assert resent.body == first.body and resent.headers["Mpesa-Event-Id"] == event_id and signature_ok(resent)
    assert (await event_row(running, event_id))["attempts"] == len(tried) + 1
    assert await resend_event(running.payments.store, "evt_nonexistent") is False

    # Resent from another connection to the database (the `payments resend` command, the server running).
    other = open_store(running.settings.database_url)
    await other.open()
    try:
        assert await resend_event(other, event_id) is True
    finally:
        await other.close()
    await receiver.wait_for("payment.completed", len(tried) + 2, timeout=5)
    assert receiver.deliveries[-1].body == first.body
    await eventually(lambda: _state_is(running, event_id, "delivered"), 5, "delivered after the second resend")


# -- the outbox: written with the change, or not at all -----------------------------------------

async def test_the_event_is_written_in_the_transaction_of_the_change(start_app, receiver):
    running = await start_app(**hooked(receiver, RECONCILE_AFTER_SECONDS="30", SIMULATOR_PROMPT_LIFETIME_SECONDS="60"))
    store = running.payments.store
    pushed = await running.push("254712345610", 40)  # interactive: stays pending
    cid = pushed["checkoutRequestId"]

    with pytest.raises(RuntimeError):
        async with store.transaction() as t:
            assert await t.update(cid, {"status": "pending"}, {"status": "completed", "result_code": "0"})
            inside = await t.fetch_all("SELECT type FROM webhook_events")
            assert [r[0] for r in inside] == ["payment.completed"]  # written by the change, in its transaction
            raise RuntimeError("the change is abandoned")
    assert await events(running) == []
    assert (await running.payments.get(cid)).status == "pending"

    async with store.transaction() as t:  # no change of status, no event
        assert await t.update(cid, {"status": "pending"}, {"next_query_at": time.time() + 60})
        assert await t.update(cid, {}, {"status": "pending"})
    await asyncio.sleep(0.6)
    assert await events(running) == [] and receiver.deliveries == []

    await _answer(running, cid, "cancel")  # a real change commits its event
    [failed] = await receiver.wait_for("payment.failed")
    assert failed.event["data"]["checkoutRequestId"] == cid
    assert [e["type"] for e in await events(running)] == ["payment.failed"]


async def test_a_callback_that_changes_nothing_writes_no_event(start_app, receiver):
    running = await start_app(**hooked(receiver))
    pushed = await running.push("0700000008", 100)  # the callback arrives twice
    await running.wait_status(pushed["checkoutRequestId"], "completed")
    await eventually(lambda: _callbacks(running, pushed["checkoutRequestId"], 2), 5, "two callbacks")
    await asyncio.sleep(0.5)
    assert [e["type"] for e in await events(running)] == ["payment.completed"]
    assert len(receiver.deliveries) == 1


async def _callbacks(running: Any, cid: str, count: int) -> bool:
    return len(await running.payments.store.callback_log(cid)) >= count


async def test_order_paid_is_written_by_the_order_listener_in_the_orders_transaction(start_app, receiver):
    running = await start_app(**hooked(receiver, RECONCILE_AFTER_SECONDS="30"))  # settled by its callback
    store = running.payments.store
    pushed = await running.push("0700000000", 3000)
    cid = pushed["checkoutRequestId"]
    await running.wait_status(cid, "completed")
    tx = await running.payments.get(cid)
    order = {"order_id": "ord_TestOrder0000000000001", "reference": "INV-1042", "description": "Kitenge",
             "amount": 3000, "items": json.dumps([{"name": "Kitenge", "quantity": 2, "unitPrice": 1500}]),
             "metadata": json.dumps({"cart": 7}), "status": "paid", "checkout_request_id": cid,
             "created_at": tx.created_at, "updated_at": tx.settled_at, "paid_at": tx.settled_at}

    async def write(t: Any, row: dict[str, Any]) -> None:
        await t.execute(f"INSERT INTO orders ({', '.join(row)}) VALUES ({', '.join('?' for _ in row)})",
                        list(row.values()))

    with pytest.raises(RuntimeError):
        async with store.transaction() as t:
            await write(t, order)
            await t.notify("order", order, "open")
            raise RuntimeError("rolled back")
    async with store.transaction() as t:  # no change to paid: nothing
        await t.notify("order", order, "paid")
        await t.notify("order", {**order, "status": "open"}, None)
    await asyncio.sleep(0.5)
    assert [e["type"] for e in await events(running)] == ["payment.completed"]

    async with store.transaction() as t:
        await write(t, order)
        await t.notify("order", order, "open")
    [paid] = await receiver.wait_for("order.paid")
    assert signature_ok(paid)
    assert paid.event["data"] == {"orderId": "ord_TestOrder0000000000001", "reference": "INV-1042", "amount": 3000,
                                  "status": "paid", "checkoutRequestId": cid, "receipt": tx.receipt,
                                  "metadata": {"cart": 7}, "paidAt": tx.settled_at}


async def test_an_order_paid_through_the_simulator_sends_payment_completed_and_order_paid(start_app, receiver):
    api_key = "shop-key-for-the-webhook-tests-0123456789"
    running = await start_app(**hooked(receiver, SHOP_API_KEY=api_key, RECONCILE_AFTER_SECONDS="30"))
    auth = {"Authorization": f"Bearer {api_key}"}
    resp = await running.client.post("/orders", headers=auth, json={
        "items": [{"name": "Kitenge", "quantity": 2, "unitPrice": 1500}], "reference": "INV-1042",
        "metadata": {"cart": "c-77", "customer": 12}})
    assert resp.status == 201, await resp.text()
    order_id = (await resp.json())["orderId"]
    resp = await running.client.post("/stkpush", json={"orderId": order_id, "phone": "0700000000"})
    assert resp.status == 200, await resp.text()
    cid = (await resp.json())["checkoutRequestId"]
    [completed] = await receiver.wait_for("payment.completed")
    [paid] = await receiver.wait_for("order.paid")
    assert signature_ok(completed) and signature_ok(paid)
    tx = await running.payments.get(cid)
    assert completed.event["data"] == expected_payment(tx, "Payment completed")
    assert (completed.event["data"]["orderId"], tx.amount, tx.receipt is not None) == (order_id, 3000, True)
    order = await (await running.client.get(f"/orders/{order_id}", headers=auth)).json()
    assert paid.event["data"] == {"orderId": order_id, "reference": "INV-1042", "amount": 3000, "status": "paid",
                                  "checkoutRequestId": cid, "receipt": tx.receipt,
                                  "metadata": {"cart": "c-77", "customer": 12}, "paidAt": order["paidAt"]}
    assert order["status"] == "paid"
    await asyncio.sleep(0.5)
    assert sorted(e["type"] for e in await events(running)) == ["order.paid", "payment.completed"]


async def test_a_late_success_sends_payment_failed_then_payment_completed(start_app, receiver):
    running = await start_app(**hooked(receiver, PAYMENT_TIMEOUT_SECONDS="0.8", RECONCILE_AFTER_SECONDS="0.2",
                                       SIMULATOR_PROMPT_LIFETIME_SECONDS="30"))
    pushed = await running.push("254712345600", 75)
    cid = pushed["checkoutRequestId"]
    await running.wait_status(cid, "failed")
    [given_up] = await receiver.wait_for("payment.failed")
    await _answer(running, cid, "pin", pin="12345")  # the customer pays after the gateway gave up
    [late] = await receiver.wait_for("payment.completed")
    assert receiver.deliveries == [given_up, late]
    assert given_up.event["id"] != late.event["id"]
    assert {k: given_up.event["data"][k] for k in ("checkoutRequestId", "status", "resultCode", "settledBy", "late",
                                                   "message")} == {
        "checkoutRequestId": cid, "status": "failed", "resultCode": "timeout", "settledBy": "timeout", "late": False,
        "message": "Payment not confirmed: M-Pesa did not answer in time"}
    data = late.event["data"]
    assert (data["checkoutRequestId"], data["status"], data["late"], data["amount"]) == (cid, "completed", True, 75)
    assert data["settledBy"] in ("callback", "query")


async def test_without_webhook_settings_no_event_is_written(start_app):
    running = await start_app()
    paid = await running.push("0700000000", 100)
    cancelled = await running.push("0700000002", 100)
    await running.wait_status(paid["checkoutRequestId"], "completed")
    await running.wait_status(cancelled["checkoutRequestId"], "failed")
    assert await events(running) == []


async def test_the_secret_never_appears_in_logs_or_in_the_outbox(start_app, receiver, caplog):
    caplog.set_level(logging.DEBUG)
    receiver.answers = [500, ("sleep", 2.0)]
    running = await start_app(**hooked(receiver, WEBHOOK_TIMEOUT_SECONDS="0.5", WEBHOOK_RETRY_SECONDS="3"))
    await running.push("0700000000", 100)
    await running.push("0700000002", 100)
    await receiver.wait_for("payment.completed")
    await receiver.wait_for("payment.failed")
    await eventually(lambda: _all_delivered(running), 8, "all delivered")
    assert "webhook" in caplog.text and "retrying" in caplog.text  # the deliveries were logged
    assert SECRET not in caplog.text
    rows = [*await running.payments.store.fetch_all("SELECT * FROM webhook_events"),
            *await running.payments.store.fetch_all("SELECT * FROM webhook_attempts")]
    assert SECRET not in json.dumps([list(r) for r in rows])
    assert SECRET not in repr(running.settings)


async def _all_delivered(running: Any) -> bool:
    return all(e["state"] == "delivered" for e in await events(running)) and len(await events(running)) == 2


# -- restart -----------------------------------------------------------------------------------

@sqlite_only  # a server process on its SQLite file, read directly
async def test_a_pending_event_survives_a_restart_of_the_server_process(tmp_path, aiohttp_server):
    shop = Receiver()
    port = free_port()
    env = {**gateway_env(tmp_path), "MERCHANT_WEBHOOK_URL": f"http://127.0.0.1:{port}/hooks/shop",
           "MERCHANT_WEBHOOK_SECRET": SECRET, "WEBHOOK_TIMEOUT_SECONDS": "1"}
    database = tmp_path / "shop.sqlite3"
    base = f"http://127.0.0.1:{env['PORT']}"

    def read(sql: str, *args: Any) -> list[dict[str, Any]]:
        with contextlib.closing(sqlite3.connect(database)) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql, args)]

    def outbox() -> list[dict[str, Any]]:
        return read("SELECT * FROM webhook_events")

    def tried(event_id: str) -> int:
        return len(read("SELECT id FROM webhook_attempts WHERE event_id = ?", event_id))

    proc = await asyncio.to_thread(start_server, env)  # the shop's receiver is down
    try:
        pushed = await asyncio.to_thread(lambda: requests.post(
            f"{base}/stkpush", json={"phone": "0700000000", "amount": 100}, timeout=10).json())
        await eventually(lambda: len(outbox()) == 1 and tried(outbox()[0]["event_id"]) >= 1, 10, "a failed attempt")
    finally:
        output = await asyncio.to_thread(stop_server, proc)
    [event] = outbox()
    assert (event["state"], event["type"]) == ("pending", "payment.completed")
    assert "retrying" in output and SECRET not in output

    await aiohttp_server(shop.app(), host="127.0.0.1", port=port)  # the receiver is back
    proc = await asyncio.to_thread(start_server, env)
    try:
        [delivery] = await shop.wait_for("payment.completed", timeout=15)
        await eventually(lambda: outbox()[0]["state"] == "delivered", 5, "delivered")
    finally:
        output = await asyncio.to_thread(stop_server, proc)
    assert delivery.event["id"] == event["event_id"] and delivery.body == event["body"].encode()
    assert delivery.event["data"]["checkoutRequestId"] == pushed["checkoutRequestId"]
    assert signature_ok(delivery)
    assert SECRET not in output


@sqlite_only  # a server process on its SQLite file, read directly
async def test_a_delivery_cut_short_by_a_shutdown_is_sent_again_at_the_next_start(tmp_path, aiohttp_server):
    shop = Receiver(answers=[("sleep", 8.0)])  # still thinking when the gateway stops
    server = await aiohttp_server(shop.app(), host="127.0.0.1")
    env = {**gateway_env(tmp_path), "MERCHANT_WEBHOOK_URL": str(server.make_url("/hooks/shop")),
           "MERCHANT_WEBHOOK_SECRET": SECRET, "WEBHOOK_TIMEOUT_SECONDS": "20"}
    base = f"http://127.0.0.1:{env['PORT']}"
    proc = await asyncio.to_thread(start_server, env)
    try:
        await asyncio.to_thread(lambda: requests.post(f"{base}/stkpush", json={"phone": "0700000000", "amount": 100},
                                                      timeout=10))
        [first] = await shop.wait_for("payment.completed")
    finally:
        stopping = time.monotonic()
        output = await asyncio.to_thread(stop_server, proc)
    assert time.monotonic() - stopping < 5
    assert "cut short by the shutdown" in output
    with contextlib.closing(sqlite3.connect(tmp_path / "shop.sqlite3")) as db:
        state, attempts_made, due = db.execute("SELECT state, attempts, next_attempt_at FROM webhook_events").fetchone()
        [(error,)] = db.execute("SELECT error FROM webhook_attempts").fetchall()
    assert (state, attempts_made, error) == ("pending", 1, "cut short: the gateway stopped during this attempt")
    assert due <= time.time()  # due at once, not after the 25 s lease nor the 5 s back-off

    proc = await asyncio.to_thread(start_server, env)
    started = time.monotonic()
    try:
        [_, again] = await shop.wait_for("payment.completed", 2, timeout=10)
    finally:
        await asyncio.to_thread(stop_server, proc)
    # At the start, not after the 25 s lease (nor the 5 s back-off: its due time is checked above).
    assert again.at - started < 8
    assert again.body == first.body and signature_ok(again)


# -- the README's verification snippets --------------------------------------------------------

def _readme_has(snippet: Path) -> None:
    assert snippet.read_text().strip() in (ROOT / "README.md").read_text(), f"README does not show {snippet.name}"


def _stale(delivery: Delivery) -> str:
    t = int(time.time()) - 600
    digest = hmac.new(SECRET.encode(), f"{t}.".encode() + delivery.body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"  # a genuine signature, ten minutes old: a replay


def _cases(delivery: Delivery) -> list[tuple[str, str, bytes, bool]]:
    header = delivery.headers["Mpesa-Signature"]
    tampered = delivery.body.replace(b'"amount":100', b'"amount":1')
    assert tampered != delivery.body
    return [(SECRET, header, delivery.body, True), (SECRET, header, tampered, False),
            (SECRET, _stale(delivery), delivery.body, False), ("another-secret-of-24-chars!", header, delivery.body,
                                                               False),
            (SECRET, "v1=abc", delivery.body, False), (SECRET, "t=x,v1=zz", delivery.body, False)]


async def test_the_readmes_python_verification_accepts_a_real_delivery_and_rejects_forgeries(start_app, receiver):
    _readme_has(VERIFY_DIR / "verify.py")
    verify = runpy.run_path(str(VERIFY_DIR / "verify.py"))["verify"]
    running = await start_app(**hooked(receiver))
    await running.push("0700000000", 100)
    [delivery] = await receiver.wait_for("payment.completed")
    assert [verify(secret, header, body) for secret, header, body, _ in _cases(delivery)] == \
        [want for *_, want in _cases(delivery)]


async def test_the_readmes_node_verification_accepts_a_real_delivery_and_rejects_forgeries(start_app, receiver):
    _readme_has(VERIFY_DIR / "verify.js")
    running = await start_app(**hooked(receiver))
    await running.push("0700000000", 100)
    [delivery] = await receiver.wait_for("payment.completed")
    cases = _cases(delivery)
    script = ("const { verify } = require(process.argv[1]); let input = '';"
              "process.stdin.on('data', (c) => { input += c; }).on('end', () => {"
              "  const cases = JSON.parse(input);"
              "  console.log(JSON.stringify(cases.map(([s, h, b]) => verify(s, h, Buffer.from(b, 'base64')))));"
              "});")
    stdin = json.dumps([[s, h, base64.b64encode(b).decode()] for s, h, b, _ in cases])
    done = await asyncio.to_thread(subprocess.run, ["node", "-e", script, str(VERIFY_DIR / "verify.js")],
                                   input=stdin, capture_output=True, text=True, timeout=20)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [want for *_, want in cases]


# -- a receiver that misbehaves, and a URL that must not leak ------------------------------------

async def test_a_redirect_is_an_answer_not_a_new_address(start_app, aiohttp_server):
    """A 3xx is recorded and tried again later at the same URL: the event (and its signature) is
    never sent wherever a Location header says."""
    elsewhere: list[bytes] = []
    answers = [307, 301, 200]

    async def hooks(request: web.Request) -> web.Response:
        status = answers.pop(0)
        location = "/elsewhere" if status == 307 else "http://127.0.0.2:9/elsewhere"
        return web.Response(status=status, headers={"Location": location} if status < 400 and status != 200 else {})

    async def other(request: web.Request) -> web.Response:
        elsewhere.append(await request.read())
        return web.Response(text="thanks")

    app = web.Application()
    app.router.add_post("/hooks/shop", hooks)
    app.router.add_post("/elsewhere", other)
    server = await aiohttp_server(app, host="127.0.0.1")
    running = await start_app(MERCHANT_WEBHOOK_URL=str(server.make_url("/hooks/shop")), MERCHANT_WEBHOOK_SECRET=SECRET,
                              WEBHOOK_TIMEOUT_SECONDS="1")
    await running.push("0700000000", 100)
    await eventually(lambda: _first_state_is(running, "delivered"), 8, "delivered at the third attempt")
    [event] = await events(running)
    tried = await attempts(running, event["event_id"])
    assert [(a["status"], a["error"]) for a in tried] == [(307, "HTTP 307"), (301, "HTTP 301"), (200, None)]
    assert elsewhere == []


async def _first_state_is(running: Any, state: str) -> bool:
    found = await events(running)
    return bool(found) and found[0]["state"] == state


async def test_an_endless_answer_is_not_read(start_app, aiohttp_server):
    """A receiver cannot hold a delivery or fill the gateway's memory with its answer: of a refusal
    only the first ERROR_CAP bytes are read, of a 2xx nothing; both are over at once."""
    statuses = [500, 200]

    async def endless(request: web.Request) -> web.StreamResponse:
        await request.read()
        response = web.StreamResponse(status=statuses.pop(0), headers={"Content-Type": "text/plain"})
        await response.prepare(request)
        with contextlib.suppress(ConnectionError, RuntimeError):
            while True:  # until the gateway hangs up
                await response.write(b"<flood>" * 10_000)
        return response

    app = web.Application()
    app.router.add_post("/hooks/shop", endless)
    server = await aiohttp_server(app, host="127.0.0.1")
    running = await start_app(MERCHANT_WEBHOOK_URL=str(server.make_url("/hooks/shop")), MERCHANT_WEBHOOK_SECRET=SECRET,
                              WEBHOOK_TIMEOUT_SECONDS="3")
    await running.push("0700000000", 100)
    await eventually(lambda: _first_state_is(running, "delivered"), 10, "delivered at the second attempt")
    [event] = await events(running)
    refused, delivered = await attempts(running, event["event_id"])
    assert refused["status"] == 500 and refused["error"].startswith("HTTP 500: <flood><flood>")
    assert len(refused["error"]) <= 300
    assert (delivered["status"], delivered["error"]) == (200, None)
    assert refused["duration_ms"] < 2900 and delivered["duration_ms"] < 2900  # not the 3 s time-out


async def test_the_receiver_cannot_set_cookies_for_later_deliveries(start_app, aiohttp_server):
    seen: list[dict[str, str]] = []

    async def hooks(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        answer = web.Response(status=500 if len(seen) == 1 else 200, text="no")
        answer.set_cookie("session", "x" * 3000)
        return answer

    app = web.Application()
    app.router.add_post("/hooks/shop", hooks)
    server = await aiohttp_server(app, host="127.0.0.1")
    # By name: a cookie jar would keep a cookie from a host name (it ignores those of bare IP addresses).
    running = await start_app(MERCHANT_WEBHOOK_URL=f"http://localhost:{server.port}/hooks/shop",
                              MERCHANT_WEBHOOK_SECRET=SECRET, WEBHOOK_TIMEOUT_SECONDS="1")
    await running.push("0700000000", 100)
    await running.push("0700000002", 100)
    await eventually(lambda: len(seen) >= 3, 8, "three deliveries")
    assert all("Cookie" not in headers for headers in seen)


async def test_the_urls_password_path_and_query_stay_out_of_logs_and_the_outbox(start_app, aiohttp_server, caplog):
    """A shop may put a password in MERCHANT_WEBHOOK_URL (aiohttp sends it as Basic auth) or a token
    in its path or query. Logs and the attempts the operator sees name the scheme, host and port only;
    a receiver's answer is kept on one line (it cannot forge log lines)."""
    caplog.set_level(logging.DEBUG)
    password, path_token, query_token = "pw-Zq8Xv3Lr5Tn2", "hook-Kd93jfQm27xLp0", "qk-Wm4Ns8Rt2Yb6"
    received: list[dict[str, str]] = []

    async def hooks(request: web.Request) -> web.Response:
        received.append(dict(request.headers))
        if len(received) == 1:
            return web.Response(status=500, text="no\nCRITICAL forged log line\r\n\x1b[2J\u2028done")
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post(f"/hooks/{path_token}", hooks)
    server = await aiohttp_server(app, host="127.0.0.1")
    url = f"http://shop:{password}@127.0.0.1:{server.port}/hooks/{path_token}?key={query_token}"
    running = await start_app(MERCHANT_WEBHOOK_URL=url, MERCHANT_WEBHOOK_SECRET=SECRET, WEBHOOK_TIMEOUT_SECONDS="1")
    await running.push("0700000000", 100)
    await eventually(lambda: _first_state_is(running, "delivered"), 8, "delivered")
    assert received[0]["Authorization"] == "Basic " + base64.b64encode(f"shop:{password}".encode()).decode()
    [event] = await events(running)
    tried = await attempts(running, event["event_id"])
    assert tried[0]["error"] == "HTTP 500: no CRITICAL forged log line [2J done"
    stored = json.dumps([event, *tried])
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name != "aiohttp.access")  # (the receiver's)
    for secret in (password, path_token, query_token, SECRET):
        assert secret not in logged and secret not in stored, secret
    webhook_lines = [r.getMessage() for r in caplog.records if r.name == "gateway.webhooks"]
    assert any(f"to http://127.0.0.1:{server.port} failed" in line for line in webhook_lines), webhook_lines
    assert all("\n" not in line and "\x1b" not in line for line in webhook_lines)


async def test_the_delivery_worker_stops_when_cancelled_even_as_it_is_woken(tmp_path):
    """The app's shutdown cancels the worker; a wake-up (a payment settled) arriving in the same
    pass of the loop must not swallow that cancellation (asyncio.wait_for on Python 3.11 did: the
    worker went on, and the shutdown waited for it for ever)."""
    settings = load_settings({"DATABASE_URL": f"sqlite:///{tmp_path}/t.sqlite3",
                              "MERCHANT_WEBHOOK_URL": "http://127.0.0.1:9/hooks", "MERCHANT_WEBHOOK_SECRET": SECRET})
    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    try:
        for _ in range(20):  # the race is in one pass of the loop: try it many times
            deliveries = Deliveries(store, settings, session=None)  # type: ignore[arg-type]  # never delivers
            worker = asyncio.create_task(deliveries.run())
            await asyncio.sleep(0.01)  # in its pause, waiting to be woken
            deliveries.wake()
            worker.cancel()
            done, _ = await asyncio.wait([worker], timeout=2)
            assert done, "the worker went on after being cancelled"
    finally:
        await store.close()


def test_a_webhook_url_that_is_the_gateway_itself_is_refused_at_start(tmp_path):
    """Sent to itself, every event would come back as a malformed callback or a refused request,
    retried for days, and the shop would hear of nothing: a configuration error instead."""
    from gateway.config import ConfigError
    from run import build_app, load
    from tests.conftest import app_env

    port = free_port()
    for url in (f"http://127.0.0.1:{port}/hooks", f"http://localhost:{port}/", f"http://[::1]:{port}/x",
                f"http://0.0.0.0:{port}/x", f"http://127.0.0.1:{port}/mpesa/callback"):
        env = app_env(tmp_path, PORT=str(port), MERCHANT_WEBHOOK_URL=url, MERCHANT_WEBHOOK_SECRET=SECRET)
        with pytest.raises(ConfigError, match="is this gateway itself"):
            build_app(*load(env))
    env = app_env(tmp_path, CALLBACK_URL="https://pay.example.com/mpesa/callback/k3y",
                  MERCHANT_WEBHOOK_URL="https://pay.example.com/mpesa/callback/k3y", MERCHANT_WEBHOOK_SECRET=SECRET)
    with pytest.raises(ConfigError, match="is this gateway itself"):
        build_app(*load(env))
    # Another port of this machine, or another path of the same public host, is the shop's.
    for url in (f"http://127.0.0.1:{free_port()}/hooks", "https://pay.example.com/shop/hooks"):
        build_app(*load(app_env(tmp_path, PORT=str(port), CALLBACK_URL="https://pay.example.com/mpesa/callback/k3y",
                                MERCHANT_WEBHOOK_URL=url, MERCHANT_WEBHOOK_SECRET=SECRET)))

    env = {**gateway_env(tmp_path), "MERCHANT_WEBHOOK_SECRET": SECRET}
    env["MERCHANT_WEBHOOK_URL"] = f"http://localhost:{env['PORT']}/hooks"
    done = subprocess.run([sys.executable, "run.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.strip() == (f"Configuration error: MERCHANT_WEBHOOK_URL (http://localhost:{env['PORT']}/…) is "
                                   "this gateway itself: set it to the shop's backend, which receives the events")


async def test_by_default_an_event_is_retried_for_three_days_backing_off_to_an_hour(tmp_path, receiver):
    """The default WEBHOOK_RETRY_SECONDS is at least a day (three): with a receiver that always
    refuses, attempts come 5 s, 10 s, 20 s … apart, then hourly, the last one exactly when the window
    closes; then the event is failed. (A clock of the test's own: three days in a moment.)"""
    import aiohttp

    from gateway.config import load_settings
    from gateway.webhooks import Deliveries, write_event

    receiver.default = 503
    settings = load_settings({"MERCHANT_WEBHOOK_URL": receiver.url, "MERCHANT_WEBHOOK_SECRET": SECRET})
    assert settings.webhook_retry_for == 3 * 86_400
    assert settings.webhook_timeout == 10
    store = SqliteTransactionStore(tmp_path / "outbox.sqlite3")
    await store.open()
    now = [1_795_670_446.0]
    try:
        async with store.transaction() as t:
            event_id = await write_event(t, "payment.completed", {"checkoutRequestId": "ws_CO_1"}, now[0])
        created = now[0]
        async with aiohttp.ClientSession() as session:
            worker = Deliveries(store, settings, session, clock=lambda: now[0])
            tried_at: list[float] = []
            while True:
                row = await store.fetch_one("SELECT state, next_attempt_at FROM webhook_events WHERE event_id = ?",
                                            (event_id,))
                if row["state"] != "pending":
                    break
                now[0] = max(now[0], row["next_attempt_at"])
                assert await worker.deliver_due() == 1
                await asyncio.gather(*list(worker._in_flight.values()))
                tried_at.append(now[0] - created)
                assert len(tried_at) < 200
        row = await store.fetch_one("SELECT state, attempts, last_status FROM webhook_events WHERE event_id = ?",
                                    (event_id,))
    finally:
        await store.close()
    assert (row["state"], row["attempts"], row["last_status"]) == ("failed", len(tried_at), 503)
    assert len(receiver.deliveries) == len(tried_at)
    gaps = [round(b - a, 3) for a, b in zip(tried_at, tried_at[1:], strict=False)]
    assert gaps[:11] == [5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600]
    assert set(gaps[11:-1]) == {3600} and 0 < gaps[-1] <= 3600
    assert tried_at[0] == 0 and tried_at[-1] == 3 * 86_400  # the last attempt when the window closes
    assert sum(1 for t in tried_at if t > 86_400) > 40  # still trying on the second and third days
    assert all(signature_ok(d, tolerance=10**9) for d in receiver.deliveries)
