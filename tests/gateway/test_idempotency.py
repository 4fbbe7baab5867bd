"""Idempotency-Key on POST /stkpush, /orders and /catalogue/orders, over real HTTP through the real
app: the first answer again for a retry (the pushes Daraja received are counted in the simulator),
409 for a key used with another request, one push for concurrent retries, answers that invite a
retry not kept, keys that expire after 24 hours, and keys scoped per endpoint."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from typing import Any

import pytest

from gateway.idempotency import KEY_LIFETIME
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


async def test_fifty_requests_at_once_with_one_key_make_one_push_and_fifty_identical_answers(running):
    body = {"phone": PAYS, "amount": 100}
    answers = await asyncio.gather(*(post(running, "/stkpush", body, "double-tap") for _ in range(50)))
    assert {(status, raw) for status, raw, _ in answers} == {(answers[0][0], answers[0][1])}
    assert answers[0][0] == 200
    assert len(running.sim.prompts) == 1
    assert sum(1 for _, _, headers in answers if "Idempotent-Replayed" not in headers) == 1  # one did the work
    [row] = await rows(running)
    assert row["status"] == 200


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


async def test_a_refusal_is_kept_like_any_answer(running):
    body = {"phone": "12345", "amount": 100}
    first = await post(running, "/stkpush", body, "bad-phone")
    again = await post(running, "/stkpush", body, "bad-phone")
    assert first[0] == again[0] == 400 and first[1] == again[1] and again[2]["Idempotent-Replayed"] == "true"


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
    assert len(scopes) == 3 and KEY not in " ".join(scopes)
    assert scopes[0] == "POST /catalogue/orders public" and scopes[2] == "POST /stkpush public"
    assert scopes[1].startswith("POST /orders key:")


async def test_a_request_refused_before_its_work_does_not_use_up_the_key(shop):
    wrong = await post(shop, "/orders", ORDER, "order-1042", Authorization="Bearer not-the-key-0123456789abcdef")
    assert wrong[0] == 401
    other_site = await post(shop, "/stkpush", {"phone": PAYS, "amount": 100}, "click-1", Origin="https://evil.example")
    assert other_site[0] == 403
    assert await rows(shop) == []
    assert (await post(shop, "/orders", ORDER, "order-1042", **AUTH))[0] == 201
    assert (await post(shop, "/stkpush", {"phone": PAYS, "amount": 100}, "click-1"))[0] == 200


@pytest.mark.parametrize("key", ["", "k" * 256, "clé"])
async def test_a_bad_key_is_a_clear_400(running, key):
    resp = await running.client.post("/stkpush", json={"phone": PAYS, "amount": 100},
                                     headers={"Idempotency-Key": key})
    assert (resp.status, await resp.json()) == (400, {
        "success": False, "message": "Idempotency-Key must be 1 to 255 printable ASCII characters",
        "field": "Idempotency-Key"})
    assert running.sim.prompts == {}


async def test_a_key_left_at_work_by_a_stopped_process_is_free_once_its_answer_is_long_overdue(running):
    body = b'{"phone": "0700000000", "amount": 100}'
    async with running.payments.store.transaction() as t:
        await t.execute("INSERT INTO idempotency_keys (scope, key, request_hash, created_epoch) VALUES (?, ?, ?, ?)",
                        ("POST /stkpush public", "orphan", hashlib.sha256(body).hexdigest(), time.time() - 600))
    resp = await running.client.post("/stkpush", data=body, headers={"Idempotency-Key": "orphan",
                                                                     "Content-Type": "application/json"})
    assert resp.status == 200 and len(running.sim.prompts) == 1
