"""Idempotency-Key on POST /stkpush, /orders and /catalogue/orders, over real HTTP through the real
app: the first answer again for a retry (the pushes Daraja received are counted in the simulator),
409 for a key used with another request, one push for concurrent retries and for retries of a
request still at work, answers that invite a retry not kept (and those that may have done
something kept: a 504, a 500), keys that expire after 24 hours, and keys scoped per endpoint and
per asker, so that one client can neither read another's answer nor spoil its key."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import pytest
from aiohttp import web

from gateway.idempotency import IDEMPOTENCY, KEY_LIFETIME
from gateway.payments import PaymentService
from tests.conftest import Running
from tests.daraja_http import Sim

KEY = "shop-api-key-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORDER = {"items": [{"name": "Kitenge", "quantity": 2, "unitPrice": 1500}], "reference": "INV-1042"}
PAYS = "0700000000"


@pytest.fixture
async def shop(start_app) -> Running:
    return await start_app(SHOP_API_KEY=KEY)


async def post(app: Running, path: str, body: Any, key: str | None, **headers: str) -> tuple[int, bytes, Any]:
    """(status, raw body, headers) of a POST with `key` as its Idempotency-Key."""
    if key is not None:
        headers["Idempotency-Key"] = key
    resp = await app.client.post(path, json=body, headers=headers)
    return resp.status, await resp.read(), resp.headers


async def rows(app: Running) -> list[dict[str, Any]]:
    return [dict(r) for r in await app.payments.store.fetch_all("SELECT * FROM idempotency_keys ORDER BY scope")]


async def at_work(app: Running) -> list[dict[str, Any]]:
    """The rows once a request has claimed its key and is at work (waits for it, up to 5 s)."""
    for _ in range(500):
        found = await rows(app)
        if found and all(r["status"] is None for r in found):
            return found
        await asyncio.sleep(0.01)
    raise AssertionError(f"no request at work: {await rows(app)}")


async def order_count(app: Running) -> int:
    row = await app.payments.store.fetch_one("SELECT COUNT(*) FROM orders")
    return int(row[0]) if row else 0


async def test_a_retried_push_gets_the_first_answer_byte_for_byte_without_a_second_push(running):
    body = {"phone": PAYS, "amount": 100}
    first = await post(running, "/stkpush", body, "click-1")
    assert first[0] == 200 and "Idempotent-Replayed" not in first[2]
    await asyncio.sleep(0.5)  # the first prompt is paid: Daraja would take a second push
    again = await post(running, "/stkpush", body, "click-1")
    assert (again[0], again[1]) == (first[0], first[1])
    assert again[2]["Idempotent-Replayed"] == "true"
    assert again[2]["Content-Type"] == first[2]["Content-Type"] == "application/json; charset=utf-8"
    assert len(running.sim.prompts) == 1
    # A new key is a new request.
    other = await post(running, "/stkpush", body, "click-2")
    assert other[0] == 200 and other[1] != first[1] and len(running.sim.prompts) == 2


async def test_a_retried_push_for_an_order_replays_and_the_order_still_refuses_a_new_one(shop):
    status, raw, _ = await post(shop, "/orders", ORDER, None, **AUTH)
    order_id = json.loads(raw)["orderId"]
    body = {"orderId": order_id, "phone": "254708374149"}  # interactive: stays pending
    first = await post(shop, "/stkpush", body, "click-1")
    again = await post(shop, "/stkpush", body, "click-1")
    assert first[0] == again[0] == 200 and first[1] == again[1]
    fresh = await post(shop, "/stkpush", body, "click-2")  # a new click: the order says its payment is open
    assert fresh[0] == 409 and len(shop.sim.prompts) == 1


async def test_the_same_key_with_another_body_is_409_and_does_nothing(running):
    first = await post(running, "/stkpush", {"phone": PAYS, "amount": 100}, "click-1")
    assert first[0] == 200
    for body in ({"phone": PAYS, "amount": 101}, {"amount": 100, "phone": PAYS}):  # other bytes are another body
        status, raw, _ = await post(running, "/stkpush", body, "click-1")
        assert (status, json.loads(raw)) == (
            409, {"success": False, "message": "Idempotency-Key was used with another request",
                  "field": "Idempotency-Key"})
    assert len(running.sim.prompts) == 1


async def test_two_hundred_requests_at_once_with_one_key_make_one_push_and_identical_answers(running):
    body = {"phone": PAYS, "amount": 100}
    answers = await asyncio.gather(*(post(running, "/stkpush", body, "double-tap") for _ in range(200)))
    assert {(status, raw) for status, raw, _ in answers} == {(answers[0][0], answers[0][1])}
    assert answers[0][0] == 200
    assert len(running.sim.prompts) == 1
    assert sum(1 for _, _, headers in answers if "Idempotent-Replayed" not in headers) == 1  # one did the work
    [row] = await rows(running)
    assert row["status"] == 200


async def test_a_retry_while_the_first_request_is_still_at_work_waits_for_its_answer(running):
    await Sim(running.client, "/daraja").api("POST", "/faults", {"push": "slow", "delay": 1.0})
    body = {"phone": PAYS, "amount": 100}
    first = asyncio.create_task(post(running, "/stkpush", body, "slow-click"))
    [row] = await at_work(running)  # the first push is waiting on Daraja
    again = await post(running, "/stkpush", body, "slow-click")
    done = await first
    assert (again[0], again[1]) == (done[0], done[1]) == (200, done[1])
    assert again[2]["Idempotent-Replayed"] == "true" and "Idempotent-Replayed" not in done[2]
    assert len(running.sim.prompts) == 1


async def test_a_retry_that_outwaits_the_first_request_hears_409_and_later_gets_its_answer(running):
    running.app[IDEMPOTENCY].wait_limit = 0.3  # (from DARAJA_TIMEOUT_SECONDS otherwise: 3 pushes and 10 s)
    await Sim(running.client, "/daraja").api("POST", "/faults", {"push": "slow", "delay": 1.5})
    body = {"phone": PAYS, "amount": 100}
    first = asyncio.create_task(post(running, "/stkpush", body, "slow-click"))
    await at_work(running)
    status, raw, headers = await post(running, "/stkpush", body, "slow-click")
    assert (status, json.loads(raw)) == (409, {
        "success": False, "field": "Idempotency-Key",
        "message": "A request with this Idempotency-Key is still being processed. Please try again shortly."})
    assert headers["Retry-After"] == "5"
    done = await first
    assert done[0] == 200
    assert (await post(running, "/stkpush", body, "slow-click"))[1] == done[1]
    assert len(running.sim.prompts) == 1


async def test_fifty_orders_at_once_with_one_key_make_one_order(shop):
    answers = await asyncio.gather(*(post(shop, "/orders", ORDER, "order-1042", **AUTH) for _ in range(50)))
    assert {(status, raw) for status, raw, _ in answers} == {(201, answers[0][1])}
    assert await order_count(shop) == 1


async def test_a_429_is_not_kept_and_a_retry_after_the_limit_does_the_work(start_app):
    app = await start_app(PUSH_LIMIT_PER_PHONE="1", PUSH_LIMIT_WINDOW_SECONDS="1")
    body = {"phone": PAYS, "amount": 100}
    assert (await post(app, "/stkpush", body, None))[0] == 200
    limited = await post(app, "/stkpush", body, "retry-me")
    assert limited[0] == 429 and limited[2]["Retry-After"].isdigit()
    assert await rows(app) == []  # released
    await asyncio.sleep(1.1)
    done = await post(app, "/stkpush", body, "retry-me")
    assert done[0] == 200 and "Idempotent-Replayed" not in done[2]
    assert len(app.sim.prompts) == 2
    assert (await post(app, "/stkpush", body, "retry-me"))[1] == done[1]


async def test_a_503_is_not_kept_and_the_retry_does_the_work(running):
    await Sim(running.client, "/daraja").api("POST", "/faults", {"push": "busy"})
    body = {"phone": PAYS, "amount": 100}
    busy = await post(running, "/stkpush", body, "retry-me")
    assert busy[0] == 503 and b"M-Pesa is busy" in busy[1]
    assert running.sim.prompts == {} and await rows(running) == []
    done = await post(running, "/stkpush", body, "retry-me")
    assert done[0] == 200 and len(running.sim.prompts) == 1


async def test_a_lost_answer_504_is_kept_so_a_retry_never_sends_a_second_prompt(start_app):
    """Daraja took the push but its answer was lost: the prompt may be on the phone. A retry with the
    key replays the 504; it does not push again (a new click, with a new key, is the customer's
    choice after reading the message)."""
    app = await start_app(DARAJA_TIMEOUT_SECONDS="0.3")
    await app.payments.daraja.tokens.get()  # (an OAuth request over 0.3 s would make the push a 503)
    await Sim(app.client, "/daraja").api("POST", "/faults", {"push": "timeout", "delay": 1.0})
    body = {"phone": PAYS, "amount": 100}
    lost = await post(app, "/stkpush", body, "lost-1")
    assert lost[0] == 504 and b"We could not confirm the payment request" in lost[1]
    again = await asyncio.gather(*(post(app, "/stkpush", body, "lost-1") for _ in range(5)))
    assert {(status, raw) for status, raw, _ in again} == {(504, lost[1])}
    assert len(app.sim.prompts) == 1
    [row] = await rows(app)
    assert row["status"] == 504


async def test_a_500_is_kept_because_the_push_may_have_gone_out(running, monkeypatch, caplog):
    """An error in the gateway after Daraja took the push (here: storing it fails): how far the
    work went is unknown, so the key keeps the 500 and its retries never push again."""
    original = PaymentService._push

    async def push_then_fail(self: PaymentService, attempt_id: int, checkout: Any) -> Any:
        await original(self, attempt_id, checkout)
        raise RuntimeError("the store failed after the push")

    monkeypatch.setattr(PaymentService, "_push", push_then_fail)
    body = {"phone": PAYS, "amount": 100}
    failed = await post(running, "/stkpush", body, "broken-1")
    assert (failed[0], json.loads(failed[1])) == (500, {"success": False, "message": "Internal server error"})
    retries = await asyncio.gather(*(post(running, "/stkpush", body, "broken-1") for _ in range(5)))
    assert {(status, raw) for status, raw, _ in retries} == {(500, failed[1])}
    assert all(headers["Idempotent-Replayed"] == "true" for _, _, headers in retries)
    assert len(running.sim.prompts) == 1
    assert "the store failed after the push" in caplog.text  # still logged by json_errors
    monkeypatch.undo()  # a new key is a new request
    assert (await post(running, "/stkpush", {"phone": "0700000020", "amount": 100}, "broken-2"))[0] == 200


async def test_an_aiohttp_refusal_from_inside_the_handler_is_not_kept(running, monkeypatch):
    async def too_large(self: PaymentService, checkout: Any) -> Any:
        raise web.HTTPRequestEntityTooLarge(max_size=1, actual_size=2)

    monkeypatch.setattr(PaymentService, "start", too_large)
    body = {"phone": PAYS, "amount": 100}
    refused = await post(running, "/stkpush", body, "click-1")
    assert (refused[0], json.loads(refused[1])["message"]) == (413, "Request body is too large")
    assert await rows(running) == []
    monkeypatch.undo()
    assert (await post(running, "/stkpush", body, "click-1"))[0] == 200 and len(running.sim.prompts) == 1


async def test_a_refusal_is_kept_like_any_answer(running):
    body = {"phone": "12345", "amount": 100}
    first = await post(running, "/stkpush", body, "bad-phone")
    again = await post(running, "/stkpush", body, "bad-phone")
    assert first[0] == again[0] == 400 and first[1] == again[1] and again[2]["Idempotent-Replayed"] == "true"


async def test_keys_expire_after_24_hours_by_the_clock(shop):
    now = [time.time()]
    shop.app[IDEMPOTENCY].clock = lambda: now[0]
    first = await post(shop, "/orders", ORDER, "order-1042", **AUTH)
    now[0] += KEY_LIFETIME - 1
    assert (await post(shop, "/orders", ORDER, "order-1042", **AUTH))[1] == first[1]
    assert (await post(shop, "/orders", {**ORDER, "reference": "INV-1043"}, "order-1042", **AUTH))[0] == 409
    now[0] += 1  # 24 hours to the second
    later = await post(shop, "/orders", {**ORDER, "reference": "INV-1043"}, "order-1042", **AUTH)
    assert later[0] == 201 and "Idempotent-Replayed" not in later[2]
    assert json.loads(later[1])["reference"] == "INV-1043"
    assert await order_count(shop) == 2
    now[0] += 600  # and the purge, once it runs, takes nothing it should not
    assert (await post(shop, "/orders", {**ORDER, "reference": "INV-1043"}, "order-1042", **AUTH))[1] == later[1]
    assert len(await rows(shop)) == 1


async def test_keys_expire_after_24_hours(shop):
    first = await post(shop, "/orders", ORDER, "order-1042", **AUTH)
    store = shop.payments.store
    async with store.transaction() as t:  # as if 23 h 59 min had passed
        await t.execute("UPDATE idempotency_keys SET created_epoch = ?", (time.time() - KEY_LIFETIME + 60,))
    assert (await post(shop, "/orders", ORDER, "order-1042", **AUTH))[1] == first[1]
    async with store.transaction() as t:  # and now a day and a second
        await t.execute("UPDATE idempotency_keys SET created_epoch = ?", (time.time() - KEY_LIFETIME - 1,))
    later = await post(shop, "/orders", ORDER, "order-1042", **AUTH)
    assert later[0] == 201 and later[1] != first[1] and "Idempotent-Replayed" not in later[2]
    assert await order_count(shop) == 2
    assert (await post(shop, "/orders", ORDER, "order-1042", **AUTH))[1] == later[1]


async def test_expired_keys_are_purged(shop):
    store = shop.payments.store
    async with store.transaction() as t:
        for i in range(3):
            await t.execute("INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_epoch) "
                            "VALUES ('POST /orders x', ?, 'h', 201, '{}', ?)",
                            (f"old-{i}", time.time() - 2 * KEY_LIFETIME))
    await post(shop, "/orders", ORDER, "order-1042", **AUTH)
    assert [r["key"] for r in await rows(shop)] == ["order-1042"]


async def test_keys_are_scoped_per_endpoint(shop):
    order = await post(shop, "/orders", ORDER, "same-key", **AUTH)
    assert order[0] == 201
    demo = await post(shop, "/catalogue/orders", {"items": [{"id": "lighting", "quantity": 1}]}, "same-key")
    assert demo[0] == 201 and demo[1] != order[1]
    pushed = await post(shop, "/stkpush", {"phone": PAYS, "amount": 100}, "same-key")
    assert pushed[0] == 200 and len(shop.sim.prompts) == 1
    assert await order_count(shop) == 2
    scopes = [r["scope"] for r in await rows(shop)]
    assert len(scopes) == 3 and KEY not in " ".join(scopes) and "127.0.0.1" not in " ".join(scopes)
    assert scopes[0].startswith("POST /catalogue/orders client:") and scopes[2].startswith("POST /stkpush client:")
    assert scopes[0].split()[-1] == scopes[2].split()[-1]  # one client
    assert scopes[1].startswith("POST /orders key:")


# -- one client's key is not another's ---------------------------------------------------------

ALICE, MALLORY = {"X-Forwarded-For": "203.0.113.10"}, {"X-Forwarded-For": "198.51.100.66"}


@pytest.fixture
async def behind_proxy(start_app) -> Running:
    """Clients told apart by the address a trusted proxy reports (as in production behind nginx)."""
    return await start_app(SHOP_API_KEY=KEY, TRUSTED_PROXIES="127.0.0.1")


async def test_another_client_replaying_a_push_key_gets_its_own_answer_never_the_payment_token(behind_proxy):
    """The pay page's keys are random, but a key is no secret: anyone who learns or guesses one,
    with the body (an orderId and a phone), must not be replayed the paymentToken of someone
    else's payment."""
    app = behind_proxy
    order = json.loads((await post(app, "/orders", ORDER, None, **AUTH))[1])
    body = {"orderId": order["orderId"], "phone": "254708374149"}  # interactive: stays pending
    alice = await post(app, "/stkpush", body, "click-1", **ALICE)
    assert alice[0] == 200 and json.loads(alice[1])["paymentToken"]
    mallory = await post(app, "/stkpush", body, "click-1", **MALLORY)
    assert "Idempotent-Replayed" not in mallory[2]
    assert (mallory[0], json.loads(mallory[1])) == (409, {  # the order's own answer, as for any new click
        "success": False, "message": "A payment for this order is waiting on the phone", "orderStatus": "open",
        "checkoutRequestId": json.loads(alice[1])["checkoutRequestId"]})
    assert b"paymentToken" not in mallory[1]
    # Alice's retry still gets her answer.
    assert (await post(app, "/stkpush", body, "click-1", **ALICE))[1] == alice[1]
    assert len(app.sim.prompts) == 1

    # A free-amount push: the same key and body from another client is a request of its own (here
    # Daraja's answer that a prompt is already waiting on that phone), never a replay of Alice's.
    # An interactive number: its prompt stays open (PAYS paid by itself 0.2 s later, and on a loaded
    # machine Mallory's push came after that, to a phone free again: a 200).
    free = {"phone": "0712000111", "amount": 100}
    mine = await post(app, "/stkpush", free, "pay-100", **ALICE)
    theirs = await post(app, "/stkpush", free, "pay-100", **MALLORY)
    assert mine[0] == 200 and "Idempotent-Replayed" not in theirs[2]
    assert theirs[0] == 409 and json.loads(theirs[1])["errorCode"] == "500.001.1001"
    assert json.loads(mine[1])["paymentToken"].encode() not in theirs[1]
    assert len(app.sim.prompts) == 2


async def test_another_client_cannot_spoil_a_key_by_using_it_first(behind_proxy):
    app = behind_proxy
    for path, body, other in [("/stkpush", {"phone": "0700000021", "amount": 100},
                               {"phone": "0700000022", "amount": 1}),
                              ("/catalogue/orders", {"items": [{"id": "lighting", "quantity": 1}]},
                               {"items": [{"id": "lighting", "quantity": 2}]})]:
        squatted = await post(app, path, other, "INV-1043", **MALLORY)  # a guessable key, taken first
        assert squatted[0] in (200, 201)
        mine = await post(app, path, body, "INV-1043", **ALICE)
        assert mine[0] in (200, 201) and "Idempotent-Replayed" not in mine[2]


async def test_another_client_replaying_a_demo_order_key_does_not_learn_the_order(behind_proxy):
    app = behind_proxy
    cart = {"items": [{"id": "lighting", "quantity": 1}]}  # the default cart: anyone can write it
    alice = await post(app, "/catalogue/orders", cart, "cart-1", **ALICE)
    mallory = await post(app, "/catalogue/orders", cart, "cart-1", **MALLORY)
    assert alice[0] == mallory[0] == 201 and "Idempotent-Replayed" not in mallory[2]
    assert json.loads(alice[1])["orderId"] != json.loads(mallory[1])["orderId"]


async def test_a_client_cannot_pick_its_scope_with_x_forwarded_for(shop):
    """Without TRUSTED_PROXIES the header is the client's own words: it changes nothing."""
    body = {"phone": PAYS, "amount": 100}
    first = await post(shop, "/stkpush", body, "click-1", **ALICE)
    again = await post(shop, "/stkpush", body, "click-1", **MALLORY)
    assert again[1] == first[1] and again[2]["Idempotent-Replayed"] == "true"
    assert len(shop.sim.prompts) == 1


async def test_a_request_refused_before_its_work_does_not_use_up_the_key(shop):
    wrong = await post(shop, "/orders", ORDER, "order-1042", Authorization="Bearer not-the-key-0123456789abcdef")
    assert wrong[0] == 401
    other_site = await post(shop, "/stkpush", {"phone": PAYS, "amount": 100}, "click-1", Origin="https://evil.example")
    assert other_site[0] == 403
    assert await rows(shop) == []
    assert (await post(shop, "/orders", ORDER, "order-1042", **AUTH))[0] == 201
    assert (await post(shop, "/stkpush", {"phone": PAYS, "amount": 100}, "click-1"))[0] == 200


@pytest.mark.parametrize("key", ["", " ", "k" * 256, "clé", "🔑", "k\u00a0k"])
async def test_a_bad_key_is_a_clear_400(running, key):
    resp = await running.client.post("/stkpush", json={"phone": PAYS, "amount": 100},
                                     headers={"Idempotency-Key": key})
    assert (resp.status, await resp.json()) == (400, {
        "success": False, "message": "Idempotency-Key must be 1 to 255 printable ASCII characters",
        "field": "Idempotency-Key"})
    assert running.sim.prompts == {} and await rows(running) == []


@pytest.mark.parametrize("key", ["k", "k" * 255, "~!#$%&'*+-.^_`|:;<=>?@[]{}()/\\\"0 9"])
async def test_any_printable_ascii_key_up_to_255_characters_is_taken(running, key):
    body = {"phone": PAYS, "amount": 100}
    first = await post(running, "/stkpush", body, key)
    again = await post(running, "/stkpush", body, key)
    assert first[0] == 200 and again[1] == first[1] and again[2]["Idempotent-Replayed"] == "true"
    assert [r["key"] for r in await rows(running)] == [key]


async def test_two_keys_on_one_request_are_refused(running):
    resp = await running.client.post("/stkpush", json={"phone": PAYS, "amount": 100},
                                     headers=[("Idempotency-Key", "a"), ("Idempotency-Key", "b")])
    assert (resp.status, await resp.json()) == (400, {
        "success": False, "message": "Send one Idempotency-Key header", "field": "Idempotency-Key"})
    assert running.sim.prompts == {} and await rows(running) == []


async def test_a_key_left_at_work_by_a_stopped_process_is_free_once_its_answer_is_long_overdue(running):
    body = b'{"phone": "0700000000", "amount": 100}'
    client = "client:" + hashlib.sha256(b"127.0.0.1").hexdigest()[:32]
    async with running.payments.store.transaction() as t:
        await t.execute("INSERT INTO idempotency_keys (scope, key, request_hash, created_epoch) VALUES (?, ?, ?, ?)",
                        (f"POST /stkpush {client}", "orphan", hashlib.sha256(body).hexdigest(), time.time() - 600))
    resp = await running.client.post("/stkpush", data=body, headers={"Idempotency-Key": "orphan",
                                                                     "Content-Type": "application/json"})
    assert resp.status == 200 and len(running.sim.prompts) == 1
