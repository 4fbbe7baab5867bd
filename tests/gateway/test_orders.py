"""Orders priced on the server, the checkout's view of an order, pushes for an order, orders paid in
the transaction of their payment, free-amount pushes behind their setting, and the demo catalogue.

Everything goes over real HTTP through the real app (gateway + simulator); what Daraja received is
read from the simulator's prompts."""

from __future__ import annotations

import asyncio
import json
import logging
import re
from typing import Any

import pytest

from gateway.catalogue import load_catalogue
from gateway.config import load_settings
from tests.conftest import Running
from tests.daraja_http import Sim, eventually
from tests.gateway.test_live_updates import read_events

KEY = "shop-api-key-for-the-tests-0123456789"
AUTH = {"Authorization": f"Bearer {KEY}"}
ORDER_ID = re.compile(r"^ord_[A-Za-z0-9_-]{22}$")
ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
KITENGE = {"items": [{"name": "Kitenge", "quantity": 2, "unitPrice": 1500},
                     {"name": "Kikoi", "quantity": 1, "unitPrice": 450}],
           "reference": "INV-1042", "description": "Two kitenge and a kikoi", "metadata": {"customer": 77}}
PAYS, CANCELS, WAITS = "0700000000", "254700000002", "254708374149"  # WAITS: interactive, waits for the PIN


@pytest.fixture
async def shop(start_app) -> Running:
    return await start_app(SHOP_API_KEY=KEY)


async def create(app: Running, body: Any, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    resp = await app.client.post("/orders", json=body, headers=AUTH if headers is None else headers)
    return resp.status, await resp.json()


async def new_order(app: Running, **changes: Any) -> dict[str, Any]:
    status, order = await create(app, {**KITENGE, **changes})
    assert status == 201, order
    return order


async def push(app: Running, body: dict[str, Any], **headers: str) -> tuple[int, dict[str, Any]]:
    resp = await app.client.post("/stkpush", json=body, headers=headers)
    return resp.status, await resp.json()


async def order_row(app: Running, order_id: str) -> dict[str, Any] | None:
    row = await app.payments.store.fetch_one("SELECT * FROM orders WHERE order_id = ?", (order_id,))
    return dict(row) if row is not None else None


async def order_count(app: Running) -> int:
    row = await app.payments.store.fetch_one("SELECT COUNT(*) FROM orders")
    assert row is not None
    return int(row[0])


async def wait_order(app: Running, order_id: str, status: str, timeout: float = 10.0) -> dict[str, Any]:
    async def reached() -> dict[str, Any] | None:
        row = await order_row(app, order_id)
        return row if row is not None and row["status"] == status else None
    return await eventually(reached, timeout, f"order {order_id} {status}")


# -- creating orders ---------------------------------------------------------------------------

async def test_an_order_is_priced_on_the_server_and_answers_with_its_checkout_url(shop):
    status, order = await create(shop, KITENGE)
    assert status == 201
    assert ORDER_ID.match(order["orderId"]) and ISO.match(order["createdAt"])
    assert order == {
        "success": True, "orderId": order["orderId"], "amount": 3450, "currency": "KES", "status": "open",
        "reference": "INV-1042", "description": "Two kitenge and a kikoi",
        "items": [{"name": "Kitenge", "quantity": 2, "unitPrice": 1500, "total": 3000},
                  {"name": "Kikoi", "quantity": 1, "unitPrice": 450, "total": 450}],
        "metadata": {"customer": 77},
        "checkoutUrl": f"{shop.settings.frontend_url}/pay.html?orderId={order['orderId']}",
        "createdAt": order["createdAt"], "paidAt": None, "checkoutRequestId": None}
    row = await order_row(shop, order["orderId"])
    assert row is not None
    assert (row["amount"], row["status"], row["reference"]) == (3450, "open", "INV-1042")
    assert json.loads(row["items"]) == order["items"] and json.loads(row["metadata"]) == {"customer": 77}
    # Ids are random, never a sequence: the id is the checkout's capability.
    assert (await new_order(shop))["orderId"] != order["orderId"]


async def test_an_order_by_amount_has_no_lines(shop):
    status, order = await create(shop, {"amount": "3000", "reference": "INV-7"})
    assert status == 201
    assert (order["amount"], order["items"], order["description"], order["metadata"]) == (3000, [], None, None)


async def test_the_largest_order_is_the_largest_amount(shop):
    status, order = await create(shop, {"items": [{"name": "Car deposit", "quantity": 3, "unitPrice": 50_000}],
                                        "reference": "INV-9"})
    assert (status, order["amount"]) == (201, 150_000)


LINE = {"name": "Kitenge", "quantity": 1, "unitPrice": 100}
META = "metadata must be a JSON object of at most 4 KiB and 5 levels"


@pytest.mark.parametrize("body, message, field", [
    ({"reference": "INV-1"}, "items or amount is required", "items"),
    ({**KITENGE, "amount": 3450}, "Send items or amount, not both", "items"),
    ({"items": [], "reference": "R"}, "items must be a list of 1 to 50 lines", "items"),
    ({"items": {"name": "x"}, "reference": "R"}, "items must be a list of 1 to 50 lines", "items"),
    ({"items": [LINE] * 51, "reference": "R"}, "items must be a list of 1 to 50 lines", "items"),
    ({"items": ["Kitenge"], "reference": "R"}, "items[0] must be an object with name, quantity and unitPrice",
     "items[0]"),
    ({"items": [{**LINE, "name": " "}], "reference": "R"}, "items[0].name must be text of 1 to 80 characters",
     "items[0].name"),
    ({"items": [LINE, {**LINE, "name": "x" * 81}], "reference": "R"},
     "items[1].name must be text of 1 to 80 characters", "items[1].name"),
    ({"items": [{**LINE, "name": 7}], "reference": "R"}, "items[0].name must be text of 1 to 80 characters",
     "items[0].name"),
    ({"items": [{**LINE, "name": "Kitenge\x00"}], "reference": "R"},
     "items[0].name has characters that cannot be stored or sent to M-Pesa", "items[0].name"),
    ({"items": [{**LINE, "quantity": 0}], "reference": "R"}, "items[0].quantity must be a whole number from 1 to 1,000",
     "items[0].quantity"),
    ({"items": [{**LINE, "quantity": 1001}], "reference": "R"},
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{**LINE, "quantity": 1.5}], "reference": "R"},
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{**LINE, "quantity": True}], "reference": "R"},
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{"name": "Kitenge", "unitPrice": 100}], "reference": "R"},
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{**LINE, "unitPrice": 0}], "reference": "R"},
     "items[0].unitPrice must be a whole number of KES from 1 to 150,000", "items[0].unitPrice"),
    ({"items": [{**LINE, "unitPrice": 99.5}], "reference": "R"},
     "items[0].unitPrice must be a whole number of KES from 1 to 150,000", "items[0].unitPrice"),
    ({"items": [{**LINE, "unitPrice": 150_001}], "reference": "R"},
     "items[0].unitPrice must be a whole number of KES from 1 to 150,000", "items[0].unitPrice"),
    ({"items": [{**LINE, "unitPrice": "1e3"}], "reference": "R"},
     "items[0].unitPrice must be a whole number of KES from 1 to 150,000", "items[0].unitPrice"),
    ({"items": [{**LINE, "quantity": 2, "unitPrice": 75_001}], "reference": "R"},
     "items[0] comes to KES 150,002: a line may come to at most KES 150,000", "items[0]"),
    ({"items": [{**LINE, "unitPrice": 100_000}, {**LINE, "unitPrice": 50_001}], "reference": "R"},
     "The order comes to KES 150,001: an order may come to at most KES 150,000", "items"),
    ({"items": [{**LINE, "total": 1}], "reference": "R"},
     'items[0] has an unknown field "total" (a line takes name, quantity and unitPrice; the server computes '
     'its total)', "items[0].total"),
    ({"amount": 0, "reference": "R"}, "Amount must be between 1 and 150,000", "amount"),
    ({"amount": 10.5, "reference": "R"}, "Amount must be between 1 and 150,000", "amount"),
    ({"amount": 150_001, "reference": "R"}, "Amount must be between 1 and 150,000", "amount"),
    ({"amount": 100}, "reference must be text of 1 to 64 characters", "reference"),
    ({"amount": 100, "reference": ""}, "reference must be text of 1 to 64 characters", "reference"),
    ({"amount": 100, "reference": "R" * 65}, "reference must be text of 1 to 64 characters", "reference"),
    ({"amount": 100, "reference": 1042}, "reference must be text of 1 to 64 characters", "reference"),
    ({"amount": 100, "reference": "INV\n1"}, "reference has characters that cannot be stored or sent to M-Pesa",
     "reference"),
    ({"amount": 100, "reference": "R", "description": "d" * 201},
     "description must be text of at most 200 characters", "description"),
    ({"amount": 100, "reference": "R", "description": 5}, "description must be text of at most 200 characters",
     "description"),
    ({"amount": 100, "reference": "R", "metadata": ["a"]}, META, "metadata"),
    ({"amount": 100, "reference": "R", "metadata": "customer 77"}, META, "metadata"),
    ({"amount": 100, "reference": "R", "metadata": {"note": "x" * 4100}}, META, "metadata"),
    ({"amount": 100, "reference": "R", "metadata": {"note": "ü" * 2100}}, META, "metadata"),  # 4,200 bytes
    ({"amount": 100, "reference": "R", "metadata": {"a": {"b": {"c": {"d": {"e": {"f": 1}}}}}}}, META, "metadata"),
    ({"amount": 100, "reference": "R", "metadata": {"a": [[[[[1]]]]]}}, META, "metadata"),
    # Absurd numbers: never a 5xx, never a line or an order past the limits.
    ({"items": [{**LINE, "quantity": 10 ** 400}], "reference": "R"},
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{**LINE, "quantity": 1e300}], "reference": "R"},
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{**LINE, "quantity": -1}], "reference": "R"},
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{**LINE, "quantity": "999999999999999"}], "reference": "R"},
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{**LINE, "quantity": "9" * 16}], "reference": "R"},
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{**LINE, "quantity": "١٢"}], "reference": "R"},  # Arabic-Indic digits: not ASCII
     "items[0].quantity must be a whole number from 1 to 1,000", "items[0].quantity"),
    ({"items": [{**LINE, "unitPrice": -100}], "reference": "R"},
     "items[0].unitPrice must be a whole number of KES from 1 to 150,000", "items[0].unitPrice"),
    ({"items": [{**LINE, "unitPrice": 2 ** 63}], "reference": "R"},
     "items[0].unitPrice must be a whole number of KES from 1 to 150,000", "items[0].unitPrice"),
    ({"items": [{**LINE, "unitPrice": None}], "reference": "R"},
     "items[0].unitPrice must be a whole number of KES from 1 to 150,000", "items[0].unitPrice"),
    ({"items": [{**LINE, "quantity": 1000, "unitPrice": 150_000}], "reference": "R"},
     "items[0] comes to KES 150,000,000: a line may come to at most KES 150,000", "items[0]"),
    ({"items": [{**LINE, "quantity": 1000, "unitPrice": 150}] * 50, "reference": "R"},
     "The order comes to KES 7,500,000: an order may come to at most KES 150,000", "items"),
    ({"amount": -1, "reference": "R"}, "Amount must be between 1 and 150,000", "amount"),
    ({"amount": 10 ** 30, "reference": "R"}, "Amount must be between 1 and 150,000", "amount"),
    ({"amount": "NaN", "reference": "R"}, "Amount must be between 1 and 150,000", "amount"),
    ({"amount": [100], "reference": "R"}, "Amount must be between 1 and 150,000", "amount"),
    # Unicode junk: what the customer reads on the page and the phone, and the shop searches for.
    ({"amount": 100, "reference": "INV-\u202e2401"}, "reference has characters that cannot be stored or sent to "
     "M-Pesa", "reference"),  # a right-to-left override: shows as INV-1042
    ({"amount": 100, "reference": "INV\u200b1"}, "reference has characters that cannot be stored or sent to M-Pesa",
     "reference"),
    ({"amount": 100, "reference": "INV\u20281"}, "reference has characters that cannot be stored or sent to M-Pesa",
     "reference"),
    ({"amount": 100, "reference": "\ufeffINV-1"}, "reference has characters that cannot be stored or sent to "
     "M-Pesa", "reference"),
    ({"amount": 100, "reference": "R", "description": "Two \u2066kitenge\u2069"},
     "description has characters that cannot be stored or sent to M-Pesa", "description"),
    ({"items": [{**LINE, "name": "\ue000"}], "reference": "R"},  # private use
     "items[0].name has characters that cannot be stored or sent to M-Pesa", "items[0].name"),
    ({"items": [{**LINE, "name": "\u200b"}], "reference": "R"},
     "items[0].name has characters that cannot be stored or sent to M-Pesa", "items[0].name"),
    ({"items": [{**LINE, "name": "\u3000"}], "reference": "R"},  # an ideographic space is still blank
     "items[0].name must be text of 1 to 80 characters", "items[0].name"),
    ({"amount": 100, "reference": "R", "currency": "USD"}, "currency must be KES", "currency"),
    ({"amount": 100, "reference": "R", "phone": "0700000000"},
     'The order has an unknown field "phone" (an order takes items or amount, reference, description and '
     'metadata; put your own data in metadata)', "phone"),
])
async def test_every_bad_order_is_a_clear_400_and_creates_nothing(shop, body, message, field):
    status, answer = await create(shop, body)
    assert (status, answer) == (400, {"success": False, "message": message, "field": field})
    assert await order_count(shop) == 0


def _nested(depth: int) -> bytes:
    return b'{"amount": 100, "reference": "R", "metadata": {"a": ' + b"[" * depth + b"]" * depth + b"}}"


@pytest.mark.parametrize("data, content_type, status, message", [
    (b"{", "application/json", 400, "Request body must be valid JSON"),
    (b"[1, 2]", "application/json", 400, "Request body must be a JSON object"),
    (b'{"amount": NaN, "reference": "R"}', "application/json", 400, "Request body must be valid JSON"),
    (b'{"amount": Infinity, "reference": "R"}', "application/json", 400, "Request body must be valid JSON"),
    (b'{"amount": 1e999, "reference": "R"}', "application/json", 400, "Request body must be valid JSON"),
    (b'{"amount": 1' + b"0" * 5000 + b', "reference": "R"}', "application/json", 400,
     "Request body must be valid JSON"),  # more digits than Python turns into an int
    (b'{"amount": 100, "reference": "\xff"}', "application/json", 400, "Request body must be valid JSON"),
    (b'{"amount": 100, "reference": "R"}', "text/plain", 415, "Content-Type must be application/json"),
    (b'{"amount": 100, "reference": "R", "metadata": {"n": "' + b"x" * 70_000 + b'"}}', "application/json", 413,
     "Request body is too large"),
    # Nesting: too deep for the parser (400 as bad JSON), or parsed but too deep for metadata.
    (_nested(20_000), "application/json", 400, "Request body must be valid JSON"),
    (_nested(900), "application/json", 400, META),
    (_nested(5), "application/json", 400, META),
    # A lone surrogate can be written in JSON but not stored as UTF-8: in text, and in metadata
    # (keys and values), where it once gave a 500.
    (b'{"amount": 100, "reference": "\\ud800"}', "application/json", 400,
     "reference has characters that cannot be stored or sent to M-Pesa"),
    (b'{"amount": 100, "reference": "R", "metadata": {"a": "\\udfff"}}', "application/json", 400,
     "metadata has characters that cannot be stored"),
    (b'{"amount": 100, "reference": "R", "metadata": {"\\ud800": 1}}', "application/json", 400,
     "metadata has characters that cannot be stored"),
])
async def test_a_body_that_is_not_a_json_object_is_refused(shop, data, content_type, status, message):
    resp = await shop.client.post("/orders", data=data, headers={**AUTH, "Content-Type": content_type})
    answer = await resp.json()
    assert (resp.status, answer["success"], answer["message"]) == (status, False, message)
    assert await order_count(shop) == 0


async def test_what_an_order_may_hold_is_kept_and_shown_back_as_sent(shop):
    """The limits are not tighter than they say: 4 KiB and 5 levels of metadata, emoji (with their
    joiners) and any script in names, and text the shop may write in several forms."""
    metadata = {"customer": {"id": 77, "address": {"lines": [["Moi Avenue"]]}}, "note": "x" * 3900,
                "nothing": None, "ok": True, "ratio": 0.5}
    body = {"items": [{"name": "Familia 👨‍👩‍👧 kikapu", "quantity": "2", "unitPrice": 1500.0},
                      {"name": "ካባ · 長袍 · Ζώνη", "quantity": 1000, "unitPrice": 147}],
            "reference": "  INV-1042  ", "description": "Kanga na kitenge", "metadata": metadata}
    status, order = await create(shop, body)
    assert status == 201, order
    assert (order["amount"], order["reference"], order["metadata"]) == (150_000, "INV-1042", metadata)
    assert [line["name"] for line in order["items"]] == ["Familia 👨‍👩‍👧 kikapu", "ካባ · 長袍 · Ζώνη"]
    resp = await shop.client.get(f"/orders/{order['orderId']}", headers=AUTH)
    assert (await resp.json())["metadata"] == metadata


@pytest.mark.parametrize("authorization", [None, "Bearer wrong-key-0123456789abcdefghijk", f"Bearer {KEY}x",
                                           f"Basic {KEY}", KEY, "Bearer ", "Bearer ключ"])
async def test_orders_need_the_api_key(shop, authorization, caplog):
    headers = {} if authorization is None else {"Authorization": authorization}
    order = await new_order(shop)
    for method, path in [("POST", "/orders"), ("GET", f"/orders/{order['orderId']}")]:
        resp = await shop.client.request(method, path, json=KITENGE, headers=headers)
        text = await resp.text()
        assert (resp.status, json.loads(text)) == (401, {"success": False, "message": "Invalid API key"})
        assert resp.headers["WWW-Authenticate"].startswith("Bearer")
        assert KEY not in text
    assert await order_count(shop) == 1
    assert KEY not in caplog.text


async def test_the_api_key_is_never_logged_nor_echoed_when_it_is_right(shop, caplog):
    with caplog.at_level(logging.DEBUG):
        status, order = await create(shop, KITENGE)
        resp = await shop.client.get(f"/orders/{order['orderId']}", headers=AUTH)
        text = await resp.text()
        again = await shop.client.post("/orders", json=KITENGE, headers={**AUTH, "Idempotency-Key": "k-1"})
        replay = await shop.client.post("/orders", json=KITENGE, headers={**AUTH, "Idempotency-Key": "k-1"})
    assert (status, resp.status, again.status, replay.status) == (201, 200, 201, 201)
    assert KEY not in text + json.dumps(order) + await again.text() + await replay.text()
    assert caplog.records and KEY not in caplog.text
    rows = await shop.payments.store.fetch_all("SELECT scope FROM idempotency_keys")
    assert KEY not in json.dumps([r[0] for r in rows])


async def test_orders_answer_503_until_the_shop_has_an_api_key(running):
    for method, path in [("POST", "/orders"), ("GET", "/orders/ord_0123456789012345678901")]:
        resp = await running.client.request(method, path, json=KITENGE, headers=AUTH)
        assert (resp.status, await resp.json()) == (503, {"success": False, "message": "Orders need SHOP_API_KEY"})


def test_a_short_api_key_is_refused_at_start_up():
    with pytest.raises(ValueError, match="SHOP_API_KEY must be at least 24 characters"):
        load_settings({"SHOP_API_KEY": "short"})


# -- reading an order, and the checkout's view ------------------------------------------------

async def test_an_order_shows_its_payments_newest_first(start_app):
    shop = await start_app(SHOP_API_KEY=KEY, RECONCILE_AFTER_SECONDS="10")  # callbacks settle these
    order = await new_order(shop)
    oid = order["orderId"]
    resp = await shop.client.get(f"/orders/{oid}", headers=AUTH)
    assert (resp.status, await resp.json()) == (200, {**order, "payments": [], "unconfirmedPushes": []})

    status, first = await push(shop, {"orderId": oid, "phone": CANCELS})
    assert status == 200
    await shop.wait_status(first["checkoutRequestId"], "failed")
    status, second = await push(shop, {"orderId": oid, "phone": PAYS})
    assert status == 200
    await shop.wait_status(second["checkoutRequestId"], "completed")
    paid = await wait_order(shop, oid, "paid")

    resp = await shop.client.get(f"/orders/{oid}", headers=AUTH)
    body = await resp.json()
    receipt = shop.sim.prompts[second["checkoutRequestId"]].receipt
    assert body["status"] == "paid" and body["paidAt"] == paid["paid_at"] and ISO.match(body["paidAt"])
    assert body["checkoutRequestId"] == second["checkoutRequestId"]
    assert [p["checkoutRequestId"] for p in body["payments"]] == [second["checkoutRequestId"],
                                                                  first["checkoutRequestId"]]
    done, failed = body["payments"]
    assert done == {"checkoutRequestId": second["checkoutRequestId"], "status": "completed", "amount": 3450,
                    "receipt": receipt, "resultCode": "0", "message": "Payment completed", "late": False,
                    "createdAt": done["createdAt"], "settledAt": done["settledAt"]}
    assert ISO.match(done["createdAt"]) and ISO.match(done["settledAt"])
    assert (failed["status"], failed["resultCode"], failed["message"], failed["receipt"]) == (
        "failed", "1032", "User cancelled transaction", None)

    resp = await shop.client.get("/orders/ord_doesnotexist0000000000", headers=AUTH)
    assert (resp.status, await resp.json()) == (404, {"success": False, "message": "Order not found"})


async def test_the_checkout_shows_the_order_and_follows_its_payment(shop):
    order = await new_order(shop)
    oid = order["orderId"]
    resp = await shop.client.get(f"/checkout/{oid}")  # no API key: the id is the capability
    view = await resp.json()
    assert (resp.status, view) == (200, {
        "success": True, "orderId": oid, "amount": 3450, "currency": "KES", "reference": "INV-1042",
        "description": "Two kitenge and a kikoi", "items": order["items"], "status": "open",
        "businessName": "Demo Shop", "payment": None})  # no metadata: that is the shop's
    resp = await shop.client.post(f"/checkout/{oid}/status")
    assert await resp.json() == {"success": True, "status": "none", "orderId": oid, "orderStatus": "open",
                                 "message": "No payment has been started for this order"}
    resp = await shop.client.get(f"/checkout/{oid}/events")
    [(name, event)] = await read_events(resp, 1)
    assert (name, event["status"]) == ("status", "none")
    assert await resp.content.read() == b""

    status, pushed = await push(shop, {"orderId": oid, "phone": WAITS})
    cid = pushed["checkoutRequestId"]
    resp = await shop.client.post(f"/checkout/{oid}/status")  # a reload lost the token: the order still finds it
    assert await resp.json() == {
        "success": True, "status": "pending", "message": "Waiting for user to complete payment",
        "checkoutRequestId": cid, "amount": 3450, "phoneMasked": "2547****4149", "accountReference": "INV-1042",
        "description": "Two kitenge a", "orderId": oid, "orderStatus": "open"}
    resp = await shop.client.get(f"/checkout/{oid}")
    assert (await resp.json())["payment"]["checkoutRequestId"] == cid

    events = await shop.client.get(f"/checkout/{oid}/events")
    [(name, first)] = await read_events(events, 1)
    assert (name, first["status"], first["amount"]) == ("status", "pending", 3450)
    assert shop.sim.enter_pin(cid, shop.sim.settings.pin).state == "settled"
    [(name, last)] = await read_events(events, 1)
    assert (name, last["status"], last["transaction_id"]) == ("status", "completed", shop.sim.prompts[cid].receipt)
    await wait_order(shop, oid, "paid")
    resp = await shop.client.get(f"/checkout/{oid}")
    view = await resp.json()
    assert (view["status"], view["payment"]["status"]) == ("paid", "completed")
    assert "paymentToken" not in json.dumps(view)


async def test_unknown_order_ids_count_towards_the_lookup_limit(start_app):
    shop = await start_app(SHOP_API_KEY=KEY, LOOKUP_LIMIT_PER_CLIENT="3")
    order = await new_order(shop)
    for _ in range(5):  # known ids are not counted
        assert (await shop.client.get(f"/checkout/{order['orderId']}")).status == 200
    misses = ["/checkout/ord_doesnotexist0000000000", "/checkout/nope",
              "/checkout/ord_doesnotexist0000000001/events"]
    for path in misses:
        resp = await shop.client.get(path)
        assert (resp.status, await resp.json()) == (404, {"success": False, "message": "Order not found"})
    resp = await shop.client.post("/checkout/ord_doesnotexist0000000002/status")
    assert resp.status == 429 and resp.headers["Retry-After"].isdigit()
    assert (await shop.client.get(f"/checkout/{order['orderId']}")).status == 429
    status, body = await push(shop, {"orderId": order["orderId"], "phone": PAYS})  # pushing is a lookup too
    assert status == 429 and shop.sim.prompts == {}


# -- pushing for an order ----------------------------------------------------------------------

async def test_a_push_for_an_order_takes_its_amount_reference_and_description(shop):
    order = await new_order(shop, reference="INV-2026-000123", description="Two kitenge wraps")
    status, pushed = await push(shop, {"orderId": order["orderId"], "phone": PAYS, "accountReference": "X",
                                       "description": "Y"})
    assert status == 200 and pushed["success"] is True
    cid = pushed["checkoutRequestId"]
    prompt = shop.sim.prompts[cid]
    assert (prompt.amount, prompt.account_reference, prompt.description) == (3450, "INV-2026-000", "Two kitenge w")
    stored = await shop.payments.get(cid)
    assert stored is not None and (stored.order_id, stored.amount) == (order["orderId"], 3450)
    attempt = await shop.payments.store.fetch_one("SELECT order_id, state FROM push_attempts")
    assert attempt is not None and tuple(attempt) == (order["orderId"], "accepted")
    # Without a description, the business name is what the customer reads.
    other = await new_order(shop, description=None)
    status, pushed = await push(shop, {"orderId": other["orderId"], "phone": "0700000010", "amount": 3450})
    assert status == 200  # the order's own amount may be sent along
    assert shop.sim.prompts[pushed["checkoutRequestId"]].description == "Demo Shop"


@pytest.mark.parametrize("amount", [1, 3449, "1", 3450.5, "abc", True])
async def test_an_amount_from_the_browser_that_is_not_the_orders_is_refused(shop, amount):
    order = await new_order(shop)
    status, body = await push(shop, {"orderId": order["orderId"], "phone": PAYS, "amount": amount})
    assert (status, body) == (400, {"success": False, "message": "The order sets the amount", "field": "amount"})
    assert shop.sim.prompts == {}


@pytest.mark.parametrize("body, status, message, field", [
    ({"orderId": "ord_doesnotexist0000000000", "phone": PAYS}, 404, "Order not found", None),
    ({"orderId": 5, "phone": PAYS}, 400, "orderId must be an order's id (ord_…)", "orderId"),
    ({"orderId": " ", "phone": PAYS}, 400, "orderId must be an order's id (ord_…)", "orderId"),
    ({"orderId": "ORDER", "phone": "12345"}, 400, "Invalid phone number format", "phone"),
])
async def test_bad_pushes_for_an_order_are_clear(shop, body, status, message, field):
    order = await new_order(shop)
    if body["orderId"] == "ORDER":
        body = {**body, "orderId": order["orderId"]}
    answer_status, answer = await push(shop, body)
    expected = {"success": False, "message": message, **({"field": field} if field else {})}
    assert (answer_status, answer) == (status, expected)
    assert shop.sim.prompts == {}


async def test_a_paid_order_refuses_another_push(shop):
    order = await new_order(shop)
    status, pushed = await push(shop, {"orderId": order["orderId"], "phone": PAYS})
    await shop.wait_status(pushed["checkoutRequestId"], "completed")
    await wait_order(shop, order["orderId"], "paid")
    status, again = await push(shop, {"orderId": order["orderId"], "phone": "0700000011"})
    assert (status, again) == (409, {"success": False, "message": "This order is already paid", "orderStatus": "paid",
                                     "checkoutRequestId": pushed["checkoutRequestId"]})
    assert len(shop.sim.prompts) == 1


async def test_an_order_whose_payment_is_open_answers_409_with_that_payment(shop):
    order = await new_order(shop)
    status, pushed = await push(shop, {"orderId": order["orderId"], "phone": WAITS})
    assert status == 200
    status, again = await push(shop, {"orderId": order["orderId"], "phone": "0700000011"})
    assert (status, again) == (409, {"success": False, "message": "A payment for this order is waiting on the phone",
                                     "orderStatus": "open", "checkoutRequestId": pushed["checkoutRequestId"]})
    assert len(shop.sim.prompts) == 1
    shop.sim.cancel(pushed["checkoutRequestId"])  # the customer cancels: the order can be paid again
    await shop.wait_status(pushed["checkoutRequestId"], "failed")
    status, retried = await push(shop, {"orderId": order["orderId"], "phone": PAYS})
    assert status == 200 and len(shop.sim.prompts) == 2


async def test_pushes_for_one_order_sent_at_once_make_one_prompt(start_app):
    """Two hundred pushes for one order in flight at once (every one a different phone and a
    different Idempotency-Key or none, as from many tabs and devices): one prompt, one payment;
    every other answer is the 409 that names it."""
    # The prompt outlives the run: one that expired (2 s in tests) would rightly reopen the order
    # to a second push, as a slow machine showed.
    shop = await start_app(SHOP_API_KEY=KEY, LOOKUP_LIMIT_PER_CLIENT="0", PUSH_LIMIT_PER_PHONE="0",
                           SIMULATOR_PROMPT_LIFETIME_SECONDS="600")
    order = await new_order(shop)
    phones = [f"0700{i:06d}" for i in range(100, 300)]

    async def one(i: int, phone: str) -> tuple[int, dict[str, Any]]:
        return await push(shop, {"orderId": order["orderId"], "phone": phone},
                          **({"Idempotency-Key": f"tab-{i}"} if i % 2 else {}))

    answers = await asyncio.gather(*(one(i, p) for i, p in enumerate(phones)))
    [winner] = [body for status, body in answers if status == 200]
    assert sorted(status for status, _ in answers) == [200] + [409] * 199
    assert {body["checkoutRequestId"] for status, body in answers if status == 409} == {winner["checkoutRequestId"]}
    assert list(shop.sim.prompts) == [winner["checkoutRequestId"]]
    rows = await shop.payments.store.fetch_all("SELECT state FROM push_attempts")
    assert [r[0] for r in rows] == ["accepted"]  # one push went out, not one per request


async def test_pushes_racing_the_payment_of_their_order_find_it_paid(shop):
    """Pushes sent while the order's payment completes: none reaches Daraja once the order is paid."""
    order = await new_order(shop)
    status, first = await push(shop, {"orderId": order["orderId"], "phone": PAYS})  # pays after 0.2 s
    assert status == 200
    answers: list[tuple[int, dict[str, Any]]] = []
    after_paid = 0
    deadline = asyncio.get_running_loop().time() + 10
    while after_paid < 5:  # before, while and after the payment completes
        assert asyncio.get_running_loop().time() < deadline, "the order was never paid"
        answers += await asyncio.gather(*(push(shop, {"orderId": order["orderId"], "phone": f"07000002{i:02d}"})
                                          for i in range(5)))
        if (await order_row(shop, order["orderId"]))["status"] == "paid":
            after_paid += 1
        await asyncio.sleep(0.02)
    assert {status for status, _ in answers} == {409}
    assert {body["checkoutRequestId"] for _, body in answers} == {first["checkoutRequestId"]}
    assert {body["message"] for _, body in answers} == {"A payment for this order is waiting on the phone",
                                                        "This order is already paid"}
    assert list(shop.sim.prompts) == [first["checkoutRequestId"]]


async def test_a_crowd_of_lookups_from_one_address_is_limited_without_saying_the_order_does_not_exist(start_app):
    shop = await start_app(SHOP_API_KEY=KEY, LOOKUP_LIMIT_PER_CLIENT="5")
    order = await new_order(shop)
    answers = await asyncio.gather(*(push(shop, {"orderId": order["orderId"], "phone": f"07000003{i:02d}"})
                                     for i in range(30)))
    limited = [body for status, body in answers if status == 429]
    assert limited and {body["message"] for body in limited} == {
        "Too many order lookups from your connection. Please wait and try again."}
    assert len(shop.sim.prompts) == 1


# -- the order is paid in the transaction of its payment ---------------------------------------

async def test_the_order_is_paid_inside_the_transaction_that_completes_its_payment(shop):
    order = await new_order(shop)
    oid = order["orderId"]
    status, pushed = await push(shop, {"orderId": oid, "phone": WAITS})
    cid = pushed["checkoutRequestId"]
    store = shop.payments.store

    class Abandon(Exception):
        pass

    with pytest.raises(Abandon):  # the payment completes, then its transaction rolls back: so does the order
        async with store.transaction() as t:
            assert await t.update(cid, {"status": "pending"}, {"status": "completed", "receipt": "TESTRCPT01"})
            assert (await t.fetch_one("SELECT status FROM orders WHERE order_id = ?", (oid,)))[0] == "paid"
            raise Abandon
    assert (await order_row(shop, oid))["status"] == "open"
    assert (await shop.payments.get(cid)).status == "pending"

    async with store.transaction() as t:
        assert await t.update(cid, {"status": "pending"}, {"status": "completed", "receipt": "TESTRCPT01"})
        inside = dict(await t.fetch_one("SELECT * FROM orders WHERE order_id = ?", (oid,)))
        assert (await order_row(shop, oid))["status"] == "open"  # not visible before the commit
    after = await order_row(shop, oid)
    assert after == inside
    assert (after["status"], after["checkout_request_id"]) == ("paid", cid) and ISO.match(after["paid_at"])


async def test_a_failed_payment_leaves_the_order_open(shop):
    order = await new_order(shop)
    status, pushed = await push(shop, {"orderId": order["orderId"], "phone": CANCELS})
    await shop.wait_status(pushed["checkoutRequestId"], "failed")
    await asyncio.sleep(0.3)
    row = await order_row(shop, order["orderId"])
    assert (row["status"], row["checkout_request_id"], row["paid_at"]) == ("open", None, None)


async def test_a_late_success_pays_the_order(start_app):
    shop = await start_app(SHOP_API_KEY=KEY, PAYMENT_TIMEOUT_SECONDS="1")
    # The callback comes 6 s after the PIN: the gateway gives up at its next pass after 1 s, with
    # seconds to spare on a loaded machine (3 s made this race the give-up under load).
    await Sim(shop.client, "/daraja").api("POST", "/faults", {"callback": "late", "callback_delay": 6,
                                                              "query": "error"})
    order = await new_order(shop)
    status, pushed = await push(shop, {"orderId": order["orderId"], "phone": PAYS})
    cid = pushed["checkoutRequestId"]
    await shop.wait_status(cid, "failed", timeout=5)  # given up locally
    assert (await order_row(shop, order["orderId"]))["status"] == "open"
    await shop.wait_status(cid, "completed", timeout=10)
    row = await wait_order(shop, order["orderId"], "paid")
    assert row["checkout_request_id"] == cid
    assert (await shop.payments.get(cid)).late is True


async def test_a_second_payment_of_a_paid_order_is_kept_and_leaves_the_order_as_it_was(start_app, caplog):
    shop = await start_app(SHOP_API_KEY=KEY, PAYMENT_TIMEOUT_SECONDS="1")
    await Sim(shop.client, "/daraja").api("POST", "/faults", {"callback": "late", "callback_delay": 6,
                                                              "query": "error"})
    order = await new_order(shop)
    oid = order["orderId"]
    status, first = await push(shop, {"orderId": oid, "phone": PAYS})  # paid, but its answer is late
    await shop.wait_status(first["checkoutRequestId"], "failed", timeout=5)
    status, second = await push(shop, {"orderId": oid, "phone": PAYS})  # so the customer pays again
    assert status == 200
    await shop.wait_status(second["checkoutRequestId"], "completed")
    paid = await wait_order(shop, oid, "paid")
    assert paid["checkout_request_id"] == second["checkoutRequestId"]

    with caplog.at_level(logging.WARNING, logger="gateway.orders"):
        await shop.wait_status(first["checkoutRequestId"], "completed", timeout=10)  # the first one's late success
        await asyncio.sleep(0.1)
    assert await order_row(shop, oid) == paid  # unchanged
    resp = await shop.client.get(f"/orders/{oid}", headers=AUTH)
    payments = (await resp.json())["payments"]
    assert {(p["checkoutRequestId"], p["status"]) for p in payments} == {
        (first["checkoutRequestId"], "completed"), (second["checkoutRequestId"], "completed")}
    assert f"DOUBLE PAYMENT: order {oid}" in caplog.text


async def test_a_push_whose_answer_was_lost_still_pays_its_order_when_its_callback_is_adopted(start_app):
    # The gateway gives up on Daraja after 1 s; the simulator holds the push's answer 3 s and calls back
    # 3 s after the auto answer (0.2 s): seconds to read the "no payment yet" view on a loaded machine.
    shop = await start_app(SHOP_API_KEY=KEY, DARAJA_TIMEOUT_SECONDS="1")
    await shop.payments.daraja.tokens.get()  # (an OAuth request over 1 s would make the push a 503)
    await Sim(shop.client, "/daraja").api("POST", "/faults", {"push": "timeout", "delay": 3, "callback_delay": 3})
    order = await new_order(shop)
    status, lost = await push(shop, {"orderId": order["orderId"], "phone": PAYS})
    assert status == 504  # the prompt reached the phone all the same, and the customer pays it
    attempt = await shop.payments.store.fetch_one("SELECT order_id FROM push_attempts")
    assert attempt is not None and attempt[0] == order["orderId"]
    # Meanwhile the shop sees that a push went out and its answer was lost: no payment yet.
    resp = await shop.client.get(f"/orders/{order['orderId']}", headers=AUTH)
    seen = await resp.json()
    assert (seen["status"], seen["payments"]) == ("open", [])
    [unconfirmed] = seen["unconfirmedPushes"]
    assert unconfirmed == {"state": "unknown", "amount": 3450, "phoneMasked": "2547****0000",
                           "message": "M-Pesa's answer to this push was lost: the customer may have been prompted, "
                                      "and if they pay, the payment appears under payments",
                           "createdAt": unconfirmed["createdAt"]}
    assert ISO.match(unconfirmed["createdAt"])
    row = await wait_order(shop, order["orderId"], "paid")
    [cid] = list(shop.sim.prompts)
    assert row["checkout_request_id"] == cid
    assert (await shop.payments.get(cid)).order_id == order["orderId"]
    resp = await shop.client.get(f"/orders/{order['orderId']}", headers=AUTH)
    seen = await resp.json()  # adopted: now a payment, no longer unconfirmed
    assert ([p["checkoutRequestId"] for p in seen["payments"]], seen["unconfirmedPushes"]) == ([cid], [])


async def test_no_second_push_for_an_order_while_a_lost_answers_prompt_may_still_be_paid(start_app):
    """M-Pesa's answer to a push was lost (504): its prompt may be on the phone. A second push for
    the order could be paid as well, so it waits until the first prompt can no longer be paid."""
    # The gateway gives up on Daraja after 2 s (the simulator holds the first answer 4 s): time enough
    # for the last push below on a loaded machine.
    shop = await start_app(SHOP_API_KEY=KEY, DARAJA_TIMEOUT_SECONDS="2", PAYMENT_TIMEOUT_SECONDS="120")
    await shop.payments.daraja.tokens.get()  # (an OAuth request over 2 s would make the push a 503)
    await Sim(shop.client, "/daraja").api("POST", "/faults", {"push": "timeout", "delay": 4})
    order = await new_order(shop)
    status, _ = await push(shop, {"orderId": order["orderId"], "phone": WAITS})
    assert status == 504
    resp = await shop.client.post("/stkpush", json={"orderId": order["orderId"], "phone": WAITS})
    body = await resp.json()
    assert resp.status == 409, body
    assert body["message"].startswith("The last payment request may still be on the phone")
    wait = int(resp.headers["Retry-After"])
    assert 110 <= wait <= 120 and body["retryAfterSeconds"] == wait
    await eventually(lambda: shop.sim.prompts, 5.0, "the first push's prompt in the simulator")
    assert len(shop.sim.prompts) == 1  # the refused push sent nothing
    real = shop.payments.clock
    shop.payments.clock = lambda: real() + 121  # that prompt can no longer be paid
    status, again = await push(shop, {"orderId": order["orderId"], "phone": WAITS})
    assert status == 200, again
    assert len(shop.sim.prompts) == 2


# -- free-amount pushes ------------------------------------------------------------------------

async def test_free_amount_pushes_are_refused_when_switched_off(start_app):
    app = await start_app(FREE_AMOUNT_PUSHES="false", SHOP_API_KEY=KEY)
    for body in ({"phone": PAYS, "amount": 100}, {"phone": PAYS, "amount": 100, "orderId": None},
                 {"phone": PAYS, "amount": 100, "accountReference": "INV-1042"}):
        status, answer = await push(app, body)
        assert (status, answer) == (400, {"success": False, "message": "orderId is required", "field": "orderId"})
    assert app.sim.prompts == {}
    # Orders are paid as ever, at the order's amount only.
    order = await new_order(app)
    status, answer = await push(app, {"orderId": order["orderId"], "phone": PAYS, "amount": 1})
    assert (status, answer["message"]) == (400, "The order sets the amount") and app.sim.prompts == {}
    status, answer = await push(app, {"orderId": order["orderId"], "phone": PAYS})
    assert status == 200 and app.sim.prompts[answer["checkoutRequestId"]].amount == 3450


async def test_free_amount_pushes_are_allowed_by_default_in_simulator_mode(running):
    assert running.settings.free_amount_pushes is True
    status, body = await push(running, {"phone": PAYS, "amount": 100})
    assert status == 200 and running.sim.prompts[body["checkoutRequestId"]].amount == 100


def test_free_amount_pushes_are_off_by_default_in_production():
    env = {"MPESA_ENV": "production", "MPESA_CONSUMER_KEY": "k", "MPESA_CONSUMER_SECRET": "s",
           "MPESA_BUSINESS_SHORTCODE": "600123", "MPESA_PASSKEY": "p" * 40,
           "CALLBACK_URL": "https://shop.example.com/mpesa/callback/x"}
    assert load_settings(env).free_amount_pushes is False
    assert load_settings({**env, "FREE_AMOUNT_PUSHES": "true"}).free_amount_pushes is True
    assert load_settings(env).demo_catalogue is False


# -- the demo catalogue ------------------------------------------------------------------------

async def test_the_catalogue_prices_the_demo_cart_on_the_server(running):
    resp = await running.client.get("/catalogue")
    catalogue = await resp.json()
    assert resp.status == 200 and catalogue["currency"] == "KES"
    items = catalogue["items"]
    assert [i["id"] for i in items] == ["dj-booking", "speaker-hire", "lighting"]
    assert all(set(i) == {"id", "name", "unitPrice", "description", "defaultQuantity"} for i in items)
    assert sum(i["unitPrice"] * i["defaultQuantity"] for i in items) == 12_900  # the default cart

    cart = [{"id": i["id"], "quantity": i["defaultQuantity"]} for i in items]
    resp = await running.client.post("/catalogue/orders", json={"items": cart})
    order = await resp.json()
    assert resp.status == 201
    assert re.fullmatch(r"DEMO-[A-Z2-9]{6}", order["reference"])
    assert (order["amount"], order["status"], order["metadata"]) == (12_900, "open", None)
    assert order["items"] == [{"name": "DJ booking (4-hour set)", "quantity": 1, "unitPrice": 9675, "total": 9675},
                              {"name": "Speaker hire (pair, per day)", "quantity": 1, "unitPrice": 3225,
                               "total": 3225}]  # the 0 line is left out
    assert order["checkoutUrl"].endswith(f"/pay.html?orderId={order['orderId']}")

    status, pushed = await push(running, {"orderId": order["orderId"], "phone": PAYS})
    prompt = running.sim.prompts[pushed["checkoutRequestId"]]
    assert (prompt.amount, prompt.account_reference, prompt.description) == (12_900, order["reference"], "Demo Shop")


@pytest.mark.parametrize("items, message, field", [
    ([{"id": "dj-booking", "quantity": 1, "unitPrice": 1}],
     "items[0].unitPrice: names and prices come from the catalogue; send only id and quantity", "items[0].unitPrice"),
    ([{"id": "dj-booking", "quantity": 1, "total": 1}],
     "items[0].total: names and prices come from the catalogue; send only id and quantity", "items[0].total"),
    ([{"id": "free-lunch", "quantity": 1}], "items[0].id is not in the catalogue", "items[0].id"),
    ([{"id": "lighting", "quantity": 1}, {"id": "lighting", "quantity": 2}],
     "items[1].id appears twice: send one line per item", "items[1].id"),
    ([{"id": "lighting", "quantity": 0}], "Choose at least one item", "items"),
    ([{"id": "lighting", "quantity": -1}], "items[0].quantity must be a whole number from 0 to 1,000",
     "items[0].quantity"),
    ([{"id": "dj-booking", "quantity": 16}], "items[0] comes to KES 154,800: a line may come to at most KES 145,000",
     "items[0]"),
    ([{"id": "dj-booking", "quantity": 10}, {"id": "lighting", "quantity": 10}],
     "The order comes to KES 148,350: an order may come to at most KES 145,000", "items"),
    ([], "items must be a list of 1 to 50 lines", "items"),
])
async def test_a_catalogue_order_takes_ids_and_quantities_only(start_app, items, message, field):
    app = await start_app(MPESA_MAX_AMOUNT="145000")
    resp = await app.client.post("/catalogue/orders", json={"items": items})
    assert (resp.status, await resp.json()) == (400, {"success": False, "message": message, "field": field})
    assert await order_count(app) == 0


def test_the_shipped_catalogue_is_valid_and_a_broken_one_is_refused_clearly(tmp_path):
    assert [item.id for item in load_catalogue()] == ["dj-booking", "speaker-hire", "lighting"]
    good = {"id": "tent", "name": "Tent", "unitPrice": 100}
    broken: list[tuple[Any, str]] = [
        ("not json", "demo catalogue .*: Expecting value"),
        ([good], 'non-empty list "items"'),
        ({"items": []}, 'non-empty list "items"'),
        ({"items": [{"id": "tent", "name": "Tent"}]}, "must be an object with id, name and unitPrice"),
        ({"items": ["tent"]}, "must be an object with id, name and unitPrice"),
        ({"items": [{**good, "unitPrice": 0}]}, "is not valid"),
        ({"items": [{**good, "unitPrice": 99.5}]}, "is not valid"),
        ({"items": [{**good, "unitPrice": True}]}, "is not valid"),
        ({"items": [{**good, "name": " "}]}, "is not valid"),
        ({"items": [{**good, "name": "Tent\n"}]}, "is not valid"),
        ({"items": [{**good, "name": "T" * 81}]}, "is not valid"),
        ({"items": [{**good, "id": "Tent"}]}, "is not valid"),
        ({"items": [{**good, "defaultQuantity": 1001}]}, "is not valid"),
        ({"items": [{**good, "description": 5}]}, "is not valid"),
        ({"items": [good, good]}, "item ids must differ"),
    ]
    for i, (content, message) in enumerate(broken):
        path = tmp_path / f"catalogue-{i}.json"
        path.write_text(content if isinstance(content, str) else json.dumps(content), encoding="utf-8")
        with pytest.raises(ValueError, match=message):
            load_catalogue(path)
    with pytest.raises(ValueError, match="demo catalogue .*missing.json"):
        load_catalogue(tmp_path / "missing.json")


async def test_catalogue_orders_are_limited_per_client(start_app):
    app = await start_app(PUSH_LIMIT_PER_CLIENT="2")
    cart = {"items": [{"id": "lighting", "quantity": 1}]}
    for _ in range(2):
        assert (await app.client.post("/catalogue/orders", json=cart)).status == 201
    resp = await app.client.post("/catalogue/orders", json=cart)
    assert resp.status == 429 and resp.headers["Retry-After"].isdigit()
    assert await order_count(app) == 2


async def test_no_catalogue_when_it_is_off(start_app):
    app = await start_app(DEMO_CATALOGUE="false")
    for method, path in [("GET", "/catalogue"), ("POST", "/catalogue/orders")]:
        resp = await app.client.request(method, path, json={"items": [{"id": "lighting", "quantity": 1}]})
        assert resp.status == 404 and (await resp.json())["success"] is False
    assert await order_count(app) == 0


async def test_a_catalogue_order_is_paid_like_any_other(running):
    """The pay page's demo path end to end: catalogue order, push, paid."""
    resp = await running.client.post("/catalogue/orders", json={"items": [{"id": "speaker-hire", "quantity": 2}]})
    order = await resp.json()
    status, pushed = await push(running, {"orderId": order["orderId"], "phone": PAYS})
    await running.wait_status(pushed["checkoutRequestId"], "completed")
    row = await wait_order(running, order["orderId"], "paid")
    assert (row["amount"], row["checkout_request_id"]) == (6450, pushed["checkoutRequestId"])
    resp = await running.client.get(f"/checkout/{order['orderId']}")
    view = await resp.json()
    assert (view["status"], view["payment"]["status"], view["reference"]) == ("paid", "completed", order["reference"])
