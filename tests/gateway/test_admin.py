"""The operator's pages (/admin) over real HTTP through the real app: payments made through the
simulator's test numbers, orders through the shop's API, callbacks through the callback URL, webhooks
to a real receiver. What each page shows is checked against what the store holds."""

from __future__ import annotations

import asyncio
import base64
import csv
import hmac
import io
import logging
import re
from datetime import timedelta
from typing import Any
from unittest import mock
from urllib.parse import urlencode

import pytest

import gateway.reports
from gateway.reports import today
from tests.conftest import Running
from tests.daraja_http import eventually
from tests.gateway.test_callback_trust import final_outcomes, post_callback, success
from tests.gateway.test_webhooks import Receiver, hooked
from web.admin import ADMIN, REALM

TOKEN = "operator-token-for-tests-0123456789"
API_KEY = "shop-api-key-for-tests-0123456789abcdef"
PAYS, CANCELS = "0700000000", "0700000002"
INTERACTIVE = "254712345678"  # a prompt that waits for the customer
LOST = "254711222333"  # another waiting customer: the push whose answer is lost
# The gateway gives up on Daraja after TIMES_OUT s in the tests that lose a push's answer (the
# simulator holds LOST's answer 4 s): long enough for every other push on a loaded machine.
TIMES_OUT = "2"
# For the tests of a payment given up locally: after 1 s, at the first reconciliation query from then
# on (admin_app otherwise makes none for 30 s).
GIVES_UP = {"PAYMENT_TIMEOUT_SECONDS": "1", "RECONCILE_AFTER_SECONDS": "0.6"}
FORM_TOKEN = re.compile(r'name="form_token" value="([^"]+)"')


def basic(password: str, user: str = "operator") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


async def admin_app(start_app: Any, **overrides: str) -> Running:
    """The app with the operator's pages and the shop's API; prompts stay open a minute, and no STK
    query is made for 30 s: callbacks settle the payments (the receipts the pages show, a failure's
    `verified` callback), not a query that a loaded machine let overtake them (GIVES_UP for the tests
    that need reconciliation)."""
    settings = {"ADMIN_TOKEN": TOKEN, "SHOP_API_KEY": API_KEY, "SIMULATOR_PROMPT_LIFETIME_SECONDS": "60",
                "RECONCILE_AFTER_SECONDS": "30"}
    return await start_app(**{**settings, **overrides})


async def page(running: Running, path: str, *, password: str = TOKEN, status: int = 200) -> str:
    resp = await running.client.get(path, headers=basic(password), allow_redirects=False)
    text = await resp.text()
    assert resp.status == status, (path, resp.status, text[:500])
    assert TOKEN not in text
    return text


async def create_order(running: Running, reference: str = "INV-1042", **body: Any) -> dict[str, Any]:
    order = {"items": [{"name": "Kitenge", "quantity": 2, "unitPrice": 1500}], "reference": reference, **body}
    resp = await running.client.post("/orders", json=order, headers={"Authorization": f"Bearer {API_KEY}"})
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


async def push_for_order(running: Running, order_id: str, phone: str) -> dict[str, Any]:
    resp = await running.client.post("/stkpush", json={"orderId": order_id, "phone": phone})
    body = await resp.json()
    assert resp.status == 200, body
    return dict(body)


async def paid_cancelled_and_ordered(running: Running) -> dict[str, Any]:
    """Three real payments: KES 100 paid, KES 50 cancelled by the customer, and an order's KES 3,000 paid."""
    paid = await running.push(PAYS, 100, accountReference="SHOP-7")
    cancelled = await running.push(CANCELS, 50, accountReference="SHOP-8")
    order = await create_order(running)
    done = await running.wait_status(paid["checkoutRequestId"], "completed")
    await running.wait_status(cancelled["checkoutRequestId"], "failed")
    ordered = await push_for_order(running, order["orderId"], PAYS)  # (one prompt per phone at a time)
    order_done = await running.wait_status(ordered["checkoutRequestId"], "completed")
    return {"paid": paid["checkoutRequestId"], "receipt": done["transaction_id"],
            "cancelled": cancelled["checkoutRequestId"], "order": order, "ordered": ordered["checkoutRequestId"],
            "order_receipt": order_done["transaction_id"]}


async def trouble(running: Running) -> dict[str, Any]:
    """A forged callback (unverified), a stray genuine callback (unknown) and a push whose answer
    was lost, each made the way it happens: over HTTP, through the simulator."""
    pushed = await running.push(INTERACTIVE, 100)
    forged_for = pushed["checkoutRequestId"]
    await post_callback(running, success(forged_for, running.sim.prompts[forged_for].merchant_request_id, amount=1))
    assert await final_outcomes(running, forged_for) == ["unverified"]

    resp = await running.client.post("/simulator/api/trigger", json={
        "msisdn": "254700000000", "amount": 77, "callbackUrl": running.settings.callback_url})
    stray = (await resp.json())["checkoutRequestId"]
    assert await final_outcomes(running, stray) == ["unknown"]

    await running.client.post("/simulator/api/faults", json={"push": "timeout", "delay": 4, "msisdn": LOST})
    lost = await running.push(LOST, 30, accountReference="LOST-1")
    assert lost["http"] == 504
    assert (await running.payments.store.attempt_counts()).get("unknown") == 1
    return {"forged_for": forged_for, "stray": stray}


# -- who may see it --------------------------------------------------------------------------------

async def test_without_admin_token_there_are_no_admin_pages(start_app):
    running = await start_app()
    for path in ("/admin", "/admin/", "/admin/payments.csv", "/admin/attention", "/admin/webhooks"):
        resp = await running.client.get(path, headers=basic("anything-at-all-123"))
        assert resp.status == 404, path
        assert "WWW-Authenticate" not in resp.headers
    resp = await running.client.post("/admin/webhooks/evt_x/resend", data={"form_token": "x"})
    assert resp.status == 404


async def test_the_pages_ask_for_the_token_as_the_basic_password(start_app, caplog):
    caplog.set_level(logging.DEBUG)
    running = await admin_app(start_app)
    for headers in ({}, basic("wrong-password-123456"), basic(TOKEN[:-1]), {"Authorization": f"Bearer {TOKEN}"},
                    {"Authorization": "Basic not-base64!"}, {"Authorization": "Basic " + base64.b64encode(
                        TOKEN.encode()).decode()}):  # no "user:" part
        for path in ("/admin", "/admin/payments.csv", "/admin/api/webhooks/evt_x"):
            resp = await running.client.get(path, headers=headers)
            assert resp.status == 401, (path, headers)
            assert resp.headers["WWW-Authenticate"] == REALM == 'Basic realm="M-Pesa gateway operator"'
            assert TOKEN not in await resp.text()
    resp = await running.client.post("/admin/webhooks/evt_x/resend", data={"form_token": "x"})
    assert resp.status == 401
    # Any user name, the token as the password.
    for user in ("operator", "", "someone else"):
        resp = await running.client.get("/admin", headers=basic(TOKEN, user))
        assert resp.status == 200
        assert resp.headers["Cache-Control"] == "no-store"
        assert "noindex" in resp.headers["X-Robots-Tag"]
        assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
        assert TOKEN not in await resp.text()
    assert TOKEN not in caplog.text
    assert "wrong password" in caplog.text


async def test_a_client_guessing_the_password_is_stopped_for_a_while(start_app):
    running = await admin_app(start_app)
    for _ in range(20):
        assert (await running.client.get("/admin", headers=basic("guess-guess-guess-1"))).status == 401
    resp = await running.client.get("/admin", headers=basic("guess-guess-guess-2"))
    assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
    # Not even the right password gets in from there for a while: a guesser cannot tell it guessed right.
    assert (await running.client.get("/admin", headers=basic(TOKEN))).status == 429
    # Asking without a password (a browser's first visit) is not a guess: it is asked to sign in.
    assert (await running.client.get("/admin")).status == 401


# -- payments: search, filters, totals, detail, CSV -----------------------------------------------

async def test_payments_are_found_by_phone_receipt_reference_and_id(start_app):
    running = await admin_app(start_app)
    made = await paid_cancelled_and_ordered(running)
    everything = await page(running, "/admin")
    assert all(made[k] in everything for k in ("paid", "cancelled", "ordered"))
    assert "All payments (3)" in everything

    def found(html: str) -> set[str]:
        return {k for k in ("paid", "cancelled", "ordered") if made[k] in html}

    for phone in ("0700000000", "+254 700 000 000", "254700000000", "700000000"):
        assert found(await page(running, f"/admin?q={phone.replace('+', '%2B')}")) == {"paid", "ordered"}, phone
    assert found(await page(running, "/admin?q=0700000002")) == {"cancelled"}
    html = await page(running, f"/admin?q={made['receipt']}")
    assert found(html) == {"paid"} and "1 payment found" in html
    assert found(await page(running, f"/admin?q={made['receipt'].lower()}")) == {"paid"}
    assert found(await page(running, "/admin?q=INV-1042")) == {"ordered"}  # the order's reference
    assert found(await page(running, "/admin?q=shop-8")) == {"cancelled"}  # the reference sent with a free push
    assert found(await page(running, f"/admin?q={made['order']['orderId']}")) == {"ordered"}
    assert found(await page(running, f"/admin?q={made['cancelled']}")) == {"cancelled"}
    html = await page(running, "/admin?q=NOSUCHTHING")
    assert found(html) == set() and "0 payments found" in html


async def test_payments_are_filtered_by_status_and_day_with_totals_per_day(start_app):
    running = await admin_app(start_app)
    made = await paid_cancelled_and_ordered(running)
    day = today().isoformat()
    html = await page(running, "/admin?status=failed")
    assert made["cancelled"] in html and made["paid"] not in html and made["ordered"] not in html
    html = await page(running, "/admin?status=completed")
    assert made["paid"] in html and made["ordered"] in html and made["cancelled"] not in html

    # Totals per Nairobi day: 3 payments, 2 paid for KES 3,100, 1 failed, none waiting.
    html = await page(running, f"/admin?from={day}&to={day}")
    totals = re.search(r'<table class="rows" id="totals">.*?</table>', html, re.S)
    assert totals is not None
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(r"<td[^>]*>(.*?)</td>", totals.group(0), re.S)]
    assert cells == [day, "3", "2", "KES 3,100", "1", "0"]
    assert all(made[k] in html for k in ("paid", "cancelled", "ordered"))
    yesterday = (today() - timedelta(days=1)).isoformat()
    html = await page(running, f"/admin?from={yesterday}&to={yesterday}")
    assert "0 payments found" in html and made["paid"] not in html and day not in html
    html = await page(running, f"/admin?status=completed&from={day}")
    cells = [re.sub(r"<[^>]+>", "", c).strip() for c in re.findall(
        r"<td[^>]*>(.*?)</td>", re.search(r'id="totals">.*?</table>', html, re.S).group(0), re.S)]
    assert cells == [day, "2", "2", "KES 3,100", "0", "0"]

    for bad, says in (("from=2026-13-01", "from is not a day"), ("to=yesterday", "to must be a day"),
                      (f"from={day}&to={yesterday}", "from must not be after to"), ("status=paid", "status must be"),
                      ("q=" + "x" * 101, "at most 100"), ("offset=-1", "offset must be")):
        html = await page(running, f"/admin?{bad}", status=400)
        assert says in html, bad


async def test_a_payment_and_an_order_have_pages_of_their_own(start_app):
    running = await admin_app(start_app)
    made = await paid_cancelled_and_ordered(running)
    html = await page(running, f"/admin/payments/{made['paid']}")
    assert made["receipt"] in html and "254700000000" in html and "applied" in html  # its callback
    assert made["paid"] in await page(running, f"/admin/payments/{made['receipt']}")  # by receipt too
    html = await page(running, f"/admin/payments/{made['cancelled']}")
    assert "1032" in html and "User cancelled transaction" in html
    await page(running, "/admin/payments/ws_CO_nothing", status=404)

    order_id = made["order"]["orderId"]
    html = await page(running, f"/admin/orders/{order_id}")
    assert "INV-1042" in html and "Kitenge" in html and "KES 3,000" in html and made["ordered"] in html
    assert "pill-paid" in html
    html = await page(running, "/admin/orders?q=INV-1042")
    assert order_id in html and "1 order found" in html
    assert order_id in await page(running, f"/admin/orders?q={made['order_receipt']}")
    assert order_id not in await page(running, "/admin/orders?status=open")
    await page(running, "/admin/orders/ord_nothing", status=404)


async def test_the_csv_export_holds_the_filtered_payments(start_app):
    running = await admin_app(start_app)
    made = await paid_cancelled_and_ordered(running)
    formula = await running.push(CANCELS, 20, description="=1+2", accountReference="@SUM(A1)")
    await running.wait_status(formula["checkoutRequestId"], "failed")

    resp = await running.client.get("/admin/payments.csv", headers=basic(TOKEN))
    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/csv; charset=utf-8"
    assert resp.headers["Content-Disposition"] == 'attachment; filename="payments.csv"'
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert [r["checkout_request_id"] for r in rows] == [
        formula["checkoutRequestId"], made["ordered"], made["cancelled"], made["paid"]]
    for row in rows:
        stored = await running.payments.get(row["checkout_request_id"])
        assert (row["status"], int(row["amount"]), row["phone"], row["receipt"] or None, row["created_at"]) == (
            stored.status, stored.amount, stored.phone, stored.receipt, stored.created_at)
    by_id = {r["checkout_request_id"]: r for r in rows}
    assert by_id[made["ordered"]]["order_reference"] == "INV-1042"
    assert by_id[made["ordered"]]["order_id"] == made["order"]["orderId"]
    assert by_id[made["cancelled"]]["result_code"] == "1032"
    # A spreadsheet does not run what a customer's browser sent as a formula.
    assert (by_id[formula["checkoutRequestId"]]["description"],
            by_id[formula["checkoutRequestId"]]["account_reference"]) == ("'=1+2", "'@SUM(A1)")

    day = today().isoformat()
    resp = await running.client.get(f"/admin/payments.csv?status=completed&from={day}&to={day}", headers=basic(TOKEN))
    assert resp.headers["Content-Disposition"] == f'attachment; filename="payments-{day}-{day}.csv"'
    rows = list(csv.DictReader(io.StringIO(await resp.text())))
    assert {r["checkout_request_id"] for r in rows} == {made["paid"], made["ordered"]}
    resp = await running.client.get("/admin/payments.csv?from=nonsense", headers=basic(TOKEN))
    assert resp.status == 400


# -- what went wrong ---------------------------------------------------------------------------

async def test_unverified_and_unknown_callbacks_and_lost_answers_need_attention(start_app):
    running = await admin_app(start_app, DARAJA_TIMEOUT_SECONDS=TIMES_OUT)
    clean = await page(running, "/admin/attention")
    assert clean.count("<p>None.</p>") == 6
    seen = await trouble(running)
    html = await page(running, "/admin/attention")
    unverified = html[html.index('id="unverified"'):html.index('id="unknown"')]
    assert seen["forged_for"] in unverified and "Amount 1 is not the KES 100 asked" in unverified
    unknown = html[html.index('id="unknown"'):html.index('id="lost"')]
    assert seen["stray"] in unknown and "77" in unknown and "<strong>paid</strong>" in unknown
    assert "no payment or push attempt matches this callback" in unknown
    lost = html[html.index('id="lost"'):html.index('id="late"')]
    assert LOST in lost and "KES 30" in lost and "LOST-1" in lost
    # The navigation counts them: 1 unverified + 1 unknown + 1 lost.
    assert '<span class="badge" aria-label="3 to look at">3</span>' in html


async def late_and_double(running: Running, reference: str = "INV-2001") -> dict[str, Any]:
    """A payment given up at the gateway's time-out (GIVES_UP), the order paid by a second one, then
    M-Pesa's late success for the first: the order is paid twice."""
    order = await create_order(running, reference)
    # The first one's callback 20 s after the customer paid, by the simulator's clock, which is moved
    # on once the second payment is in: it comes after the give-up and the second payment, however
    # slow the machine (a real 3 s wait made the callback overtake them under load, as in
    # test_orders). The prompts still open (they last a minute) stay open.
    await running.client.post("/simulator/api/faults", json={"callback": "late", "callback_delay": 20,
                                                             "query": "error"})
    first = await push_for_order(running, order["orderId"], "0700000000")
    await running.wait_status(first["checkoutRequestId"], "failed", timeout=10)  # given up locally
    second = await push_for_order(running, order["orderId"], "0700000008")
    await running.wait_status(second["checkoutRequestId"], "completed")
    assert running.sim.prompts[first["checkoutRequestId"]].callbacks == ()  # not yet
    running.sim.advance_clock(20)
    await running.wait_status(first["checkoutRequestId"], "completed", timeout=10)  # the late success
    return {"order": order, "first": first["checkoutRequestId"], "second": second["checkoutRequestId"]}


async def test_late_successes_and_double_payments_of_an_order_need_attention(start_app):
    """Both payments are kept, and the operator sees both."""
    running = await admin_app(start_app, **GIVES_UP)
    made = await late_and_double(running)
    first, second = made["first"], made["second"]
    html = await page(running, "/admin/attention")
    late = html[html.index('id="late"'):html.index('id="doubles"')]
    assert first in late and second not in late
    doubles = html[html.index('id="doubles"'):]
    assert "INV-2001" in doubles and "paid 2 times" in doubles
    assert first in doubles and second in doubles
    html = await page(running, f"/admin/orders/{made['order']['orderId']}")
    assert "Paid 2 times" in html
    assert "paid 2 times" in await page(running, "/admin/orders")
    html = await page(running, f"/admin/payments/{first}")
    assert "pill-late" in html and "after the gateway had given up" in html


async def test_payments_whose_query_is_overdue_need_attention(start_app, monkeypatch):
    """The reconciler held to one query a second with fourteen pending payments due within two
    seconds falls behind: the payments whose STK query is overdue by the threshold (3 s here, a
    minute in service) are listed, the longest overdue first, and counted in the navigation. A
    payment the customer paid is not, nor are queries due only just now."""
    monkeypatch.setattr(gateway.reports, "CHECK_OVERDUE_AFTER", 3.0)
    # A payment once queried is not due again for ten minutes: however slow the machine, the order
    # listed is the order the payments first came due in.
    running = await admin_app(start_app, RECONCILE_QUERIES_PER_SECOND="1", RECONCILE_AFTER_SECONDS="0.3",
                              RECONCILE_INTERVAL_SECONDS="600", RECONCILE_MAX_INTERVAL_SECONDS="600",
                              PUSH_LIMIT_PER_PHONE="0")
    paid = await running.push(PAYS, 100)
    await running.wait_status(paid["checkoutRequestId"], "completed")
    # Ten due first, four 1.5 s later: the reconciler (oldest first, one a second) is still on the
    # ten when the four are overdue too.
    first = await asyncio.gather(*(running.push(f"2547180{i:05d}", 10 + i) for i in range(10)))
    await asyncio.sleep(1.5)
    later = await asyncio.gather(*(running.push(f"2547181{i:05d}", 10 + i) for i in range(4)))
    assert {p["http"] for p in first + later} == {200}
    earlier_ids, later_ids = {p["checkoutRequestId"] for p in first}, {p["checkoutRequestId"] for p in later}
    clean = await page(running, "/admin/attention")
    assert "Checks running late (0)" in clean and 'class="badge"' not in clean

    def listed_in(html: str) -> list[str]:
        section = html[html.index('id="overdue"'):html.index('id="unverified"')]
        return re.findall(r'href="/admin/payments/([^"]+)"', section)

    async def both_listed() -> str | None:
        html = await page(running, "/admin/attention")
        listed = set(listed_in(html))
        return html if listed & earlier_ids and listed & later_ids else None

    html = await eventually(both_listed, timeout=15, what="overdue checks of both groups listed")
    count = int(re.search(r"Checks running late \((\d+)\)", html)[1])  # type: ignore[index]
    section = html[html.index('id="overdue"'):html.index('id="unverified"')]
    listed = listed_in(html)
    # The list and the count are two reads a moment apart, with the reconciler claiming one a second
    # and more coming due meanwhile.
    assert count >= 2 and abs(count - len(listed)) <= 2, (count, listed)
    assert set(listed) <= earlier_ids | later_ids and paid["checkoutRequestId"] not in section
    kinds = ["earlier" if c in earlier_ids else "later" for c in listed]
    assert kinds == sorted(kinds), kinds  # the longest overdue first
    overdue = [int(m) for m in re.findall(r'class="overdue">(\d+) s<', section)]
    assert len(overdue) == len(listed) and all(s >= 3 for s in overdue), section
    assert overdue == sorted(overdue, reverse=True)
    assert f'<span class="badge" aria-label="{count} to look at">{count}</span>' in html
    # Each is still pending: listed, not changed.
    assert {(await running.status(c))["status"] for c in listed} == {"pending"}


# -- webhooks and Resend -------------------------------------------------------------------------

@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    shop = Receiver()
    server = await aiohttp_server(shop.app(), host="127.0.0.1")
    shop.url = str(server.make_url("/hooks/shop"))
    return shop


async def failed_event(start_app: Any, receiver: Receiver) -> tuple[Running, str]:
    """A payment.completed event the shop's endpoint refused until the retry window closed."""
    receiver.default = 503
    # A 2 s time-out: the Resend after the window is a single attempt, which a loaded machine must
    # not turn into a time-out (the shop answers at once).
    running = await admin_app(start_app, **hooked(receiver, WEBHOOK_TIMEOUT_SECONDS="2", WEBHOOK_RETRY_SECONDS="1"))
    await running.push(PAYS, 100)
    [first] = await receiver.wait_for("payment.completed")
    event_id = first.event["id"]

    async def failed() -> bool:
        row = await running.payments.store.fetch_one("SELECT state FROM webhook_events WHERE event_id = ?",
                                                     (event_id,))
        return row is not None and row[0] == "failed"

    await eventually(failed, 6, "the event failed")
    return running, event_id


async def test_failed_webhooks_are_listed_and_resend_delivers_them(start_app, receiver):
    running, event_id = await failed_event(start_app, receiver)
    html = await page(running, "/admin/webhooks?state=failed")
    assert event_id in html and "HTTP 503: receiver says no" in html and "1 event failed" in html
    assert event_id not in await page(running, "/admin/webhooks?state=delivered")
    assert '<span class="badge" aria-label="1 failed">1</span>' in html
    html = await page(running, f"/admin/webhooks/{event_id}")
    tried = len(receiver.deliveries)
    assert html.count("HTTP 503: receiver says no") >= tried  # one row per attempt (and the last answer)
    token = FORM_TOKEN.search(html).group(1)
    origin = str(running.client.make_url("")).rstrip("/")

    receiver.default = 200
    resp = await running.client.post(f"/admin/webhooks/{event_id}/resend", data={"form_token": token},
                                     headers={**basic(TOKEN), "Origin": origin}, allow_redirects=False)
    assert resp.status == 303 and resp.headers["Location"] == f"/admin/webhooks/{event_id}?resent=1"
    await receiver.wait_for("payment.completed", tried + 1)
    assert receiver.deliveries[-1].headers["Mpesa-Event-Id"] == event_id

    async def delivered() -> bool:
        state = await running.client.get(f"/admin/api/webhooks/{event_id}", headers=basic(TOKEN))
        return (await state.json())["state"] == "delivered"

    await eventually(delivered, 5, "delivered after the resend")
    html = await page(running, f"/admin/webhooks/{event_id}")
    assert "pill-delivered" in html and "HTTP 200" in html
    assert event_id in await page(running, "/admin/webhooks?state=delivered")
    assert event_id in await page(running, f"/admin/webhooks?q={event_id}")
    # The payment's page lists the events sent about it.
    cid = receiver.deliveries[-1].event["data"]["checkoutRequestId"]
    assert event_id in await page(running, f"/admin/payments/{cid}")
    assert event_id in await page(running, f"/admin/webhooks?q={cid}")


async def test_resend_refuses_cross_site_requests_and_forms_without_a_valid_token(start_app, receiver):
    running, event_id = await failed_event(start_app, receiver)
    html = await page(running, f"/admin/webhooks/{event_id}")
    token = FORM_TOKEN.search(html).group(1)
    origin = str(running.client.make_url("")).rstrip("/")
    stale = running.app[ADMIN].form_token(now=0)  # issued long ago
    other = "sixteen-chars-or-more-but-not-the-token"
    refused = [
        ({"form_token": token}, {"Origin": "https://evil.example"}),
        ({"form_token": token}, {"Origin": "null"}),
        ({"form_token": token}, {"Sec-Fetch-Site": "cross-site"}),
        ({"form_token": token}, {"Referer": "https://evil.example/page"}),
        ({}, {"Origin": origin}),
        ({"form_token": "1700000000.deadbeef"}, {"Origin": origin}),
        ({"form_token": stale}, {"Origin": origin}),
        ({"form_token": token[:-1] + ("0" if token[-1] != "0" else "1")}, {"Origin": origin}),
    ]
    for data, headers in refused:
        resp = await running.client.post(f"/admin/webhooks/{event_id}/resend", data=data,
                                         headers={**basic(TOKEN), **headers}, allow_redirects=False)
        assert resp.status == 403, (data, headers)
    # A token of another ADMIN_TOKEN is no good here either.
    from web.admin import AdminState
    resp = await running.client.post(f"/admin/webhooks/{event_id}/resend",
                                     data={"form_token": AdminState(other).form_token()},
                                     headers={**basic(TOKEN), "Origin": origin}, allow_redirects=False)
    assert resp.status == 403
    resp = await running.client.post(f"/admin/webhooks/{event_id}/resend", json={"form_token": token},
                                     headers={**basic(TOKEN), "Origin": origin}, allow_redirects=False)
    assert resp.status == 415
    await asyncio.sleep(1.5)  # the worker looks at the table every second: nothing was queued
    row = await running.payments.store.fetch_one("SELECT state FROM webhook_events WHERE event_id = ?", (event_id,))
    assert row[0] == "failed"
    # The same form from this site's own page works; an unknown event is 404.
    resp = await running.client.post(f"/admin/webhooks/{event_id}/resend", data={"form_token": token},
                                     headers={**basic(TOKEN), "Sec-Fetch-Site": "same-origin"}, allow_redirects=False)
    assert resp.status == 303
    resp = await running.client.post("/admin/webhooks/evt_nothing/resend", data={"form_token": token},
                                     headers={**basic(TOKEN), "Origin": origin}, allow_redirects=False)
    assert resp.status == 404


# -- what an attacker can put in front of the operator --------------------------------------------

MARKUP = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
MARKUP_SHOWN = "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;&lt;script&gt;alert(2)&lt;/script&gt;"


async def hostile(running: Running) -> dict[str, Any]:
    """Markup everywhere a stranger or a customer can put text: a callback that matched nothing (its
    CheckoutRequestID, MerchantRequestID and ResultDesc), one that could not be verified (its
    ResultDesc), an order (reference, description, an item's name) paid through the simulator, and a
    free push's reference and description (as short as Daraja allows)."""
    stray = success(MARKUP, MARKUP)
    stray["Body"]["stkCallback"]["ResultDesc"] = MARKUP
    await post_callback(running, stray)
    assert await final_outcomes(running, MARKUP) == ["unknown"]

    pushed = await running.push(INTERACTIVE, 100)
    cid = pushed["checkoutRequestId"]
    forged = success(cid, running.sim.prompts[cid].merchant_request_id, amount=1)
    forged["Body"]["stkCallback"]["ResultDesc"] = MARKUP
    await post_callback(running, forged)
    assert await final_outcomes(running, cid) == ["unverified"]

    order = await create_order(running, MARKUP, description=MARKUP,
                               items=[{"name": MARKUP, "quantity": 1, "unitPrice": 10}])
    paid = await push_for_order(running, order["orderId"], PAYS)
    await running.wait_status(paid["checkoutRequestId"], "completed")
    free = await running.push(CANCELS, 20, accountReference='"><b>SHOP9', description="<script>x")
    await running.wait_status(free["checkoutRequestId"], "failed")
    return {"forged_for": cid, "order": order["orderId"], "paid": paid["checkoutRequestId"],
            "free": free["checkoutRequestId"]}


async def test_every_page_escapes_what_callbacks_orders_and_pushes_carry(start_app):
    running = await admin_app(start_app)
    made = await hostile(running)
    pages = {"/admin": ("&#34;&gt;&lt;b&gt;SHOP9", MARKUP_SHOWN), "/admin/attention": (MARKUP_SHOWN,),
             "/admin/orders": (MARKUP_SHOWN,), f"/admin/orders/{made['order']}": (MARKUP_SHOWN,),
             f"/admin/payments/{made['forged_for']}": (MARKUP_SHOWN,),
             f"/admin/payments/{made['free']}": ("&#34;&gt;&lt;b&gt;SHOP9", "&lt;script&gt;x"),
             f"/admin/payments/{made['paid']}": (MARKUP_SHOWN,),
             f"/admin?q={made['paid']}": (MARKUP_SHOWN,)}
    for path, shown in pages.items():
        html = await page(running, path)
        for text in shown:
            assert text in html, (path, text)  # shown, as text
        assert "<img src=x" not in html and "<script>alert" not in html and "<b>SHOP9" not in html, path
        assert "<script>x" not in html, path
        assert len(re.findall(r"<script\b", html)) == 1, path  # only the page's own module
    # The attention page shows the stray callback's fields as they came.
    html = await page(running, "/admin/attention")
    unknown = html[html.index('id="unknown"'):html.index('id="lost"')]
    assert unknown.count(MARKUP_SHOWN) == 2  # its CheckoutRequestID and its ResultDesc


async def test_a_csv_cell_never_starts_as_a_formula(start_app):
    running = await admin_app(start_app)
    order = await create_order(running, "+SUM(A1:A9)", description="-2+3+cmd|' /C calc'!A0",
                               items=[{"name": "Kitenge", "quantity": 1, "unitPrice": 10}])
    paid = await push_for_order(running, order["orderId"], PAYS)
    await running.wait_status(paid["checkoutRequestId"], "completed")
    free = await running.push(CANCELS, 20, accountReference="-SUM(A1)", description="@cmd")
    await running.wait_status(free["checkoutRequestId"], "failed")
    resp = await running.client.get("/admin/payments.csv", headers=basic(TOKEN))
    rows = {r["checkout_request_id"]: r for r in csv.DictReader(io.StringIO(await resp.text()))}
    ordered, pushed = rows[paid["checkoutRequestId"]], rows[free["checkoutRequestId"]]
    assert ordered["order_reference"] == "'+SUM(A1:A9)"
    assert ordered["account_reference"].startswith("'+SUM(")
    assert (pushed["account_reference"], pushed["description"]) == ("'-SUM(A1)", "'@cmd"), pushed
    for row in rows.values():
        for name, cell in row.items():
            assert not cell.startswith(("=", "+", "-", "@", "\t", "\r")), (name, cell)


async def test_search_takes_wildcards_and_quotes_as_plain_text(start_app):
    running = await admin_app(start_app)
    made = await paid_cancelled_and_ordered(running)  # references SHOP-7, SHOP-8 and INV-1042
    everything = (await page(running, "/admin")).count('data-label="Payment"')
    assert everything == 3
    for search, want in (("HOP-7", {"paid"}), ("%", set()), ("_", set()), ("SHOP_7", set()), ("SHOP%", set()),
                         ("\\", set()), ("' OR '1'='1", set()), ('" OR 1=1 --', set()), ("%' --", set())):
        html = await page(running, "/admin?" + urlencode({"q": search}))
        assert {k for k in ("paid", "cancelled", "ordered") if made[k] in html} == want, search
        html = await page(running, "/admin/orders?" + urlencode({"q": search}))
        assert (made["order"]["orderId"] in html) is False, search
    html = await page(running, "/admin/orders?" + urlencode({"q": "NV-104"}))
    assert made["order"]["orderId"] in html


async def test_absurd_query_parameters_are_a_4xx_or_a_sane_page_never_a_5xx(start_app, caplog):
    caplog.set_level(logging.ERROR)
    running = await admin_app(start_app)
    made = await paid_cancelled_and_ordered(running)
    refused = {  # → 400, saying which field is wrong
        "/admin?offset=%C2%B2": "offset must be", "/admin?offset=-1": "offset must be",
        "/admin?offset=1e3": "offset must be", "/admin?offset=1234567890": "offset must be",
        "/admin?offset=%D9%A1": "offset must be",
        "/admin?from=2026-13-45": "from is not a day", "/admin?from=2026-02-30": "from is not a day",
        "/admin?to=9999-12-31": "to must be a day from 2000-01-01 to 2999-12-31",
        "/admin?from=0001-01-01": "from must be a day from", "/admin?from=0000-01-01": "from is not a day",
        "/admin?from=%D9%A2%D9%A0%D9%A2%D9%A6-01-01": "from must be a day written",
        "/admin?from=%2B2026-01-01": "from must be a day written", "/admin?to=2026-1-1": "to must be a day written",
        "/admin?status=%00": "status must be", "/admin?status=completed%00": "status must be",
        "/admin?q=" + "x" * 5000: "at most 100", "/admin?q=%F0%9F%98%80" * 30: "at most 100",
        "/admin/orders?to=9999-12-31": "to must be a day from", "/admin/orders?offset=%C2%B2": "offset must be",
        "/admin/orders?status=completed": "status must be one of open, paid",
        "/admin/webhooks?offset=%C2%B2": "offset must be", "/admin/webhooks?state=%00": "state must be",
        "/admin/webhooks?q=" + "y" * 101: "at most 100",
    }
    for path, says in refused.items():
        html = await page(running, path, status=400)
        assert says in html, (path, html[:300])
    for path in ("/admin/payments.csv?to=9999-12-31", "/admin/payments.csv?from=0001-01-01",
                 "/admin/payments.csv?from=2026-13-45", "/admin/payments.csv?q=" + "z" * 200):
        resp = await running.client.get(path, headers=basic(TOKEN))
        assert resp.status == 400, path  # refused before a byte of CSV: not a 200 cut short
    fine = ("/admin?q=%00", "/admin?q=%ED%A0%80", "/admin?q=%F0%9F%98%80", "/admin?q=%E2%80%AE%00%0A",
            "/admin?offset=999999999", "/admin?offset=0000", "/admin?from=2000-01-01&to=2999-12-31",
            "/admin?status=COMPLETED", "/admin?q=&status=&from=&to=&offset=", "/admin?q=a&q=b&offset=1&offset=x",
            "/admin?nonsense=1", "/admin/orders?q=%00&offset=999999999", "/admin/webhooks?q=%ED%A0%80",
            "/admin/webhooks?offset=999999999")
    for path in fine:
        html = await page(running, path)
        assert "<h1>" in html, path
    for path, first in (("/admin?offset=999999999", "/admin?"), ("/admin/orders?q=INV&offset=999999999",
                                                                  "/admin/orders?q=INV"),
                        ("/admin/webhooks?offset=999999999", "/admin/webhooks?")):
        html = await page(running, path)  # past the end: an empty page, and the way back to the first
        assert "<p>None.</p>" in html and f'<a href="{first}" rel="first">First page</a>' in html, path
    html = await page(running, "/admin?from=2000-01-01&to=2999-12-31")
    assert all(made[k] in html for k in ("paid", "cancelled", "ordered"))
    for path in ("/admin/payments/%00", "/admin/payments/" + "x" * 3000, "/admin/payments/%ED%A0%80",
                 "/admin/orders/%00", "/admin/orders/" + "o" * 3000, "/admin/webhooks/%ED%A0%80",
                 "/admin/webhooks/..%2F..%2Fadmin"):
        await page(running, path, status=404)
    resp = await running.client.get("/admin/api/webhooks/%00", headers=basic(TOKEN))
    assert resp.status == 404 and (await resp.json())["success"] is False
    origin = str(running.client.make_url("")).rstrip("/")
    for token in ("\u00b2.abc", "\u0661\u0662.abc", "9" * 13 + ".x", "", ".", "1.", "-1.x"):
        resp = await running.client.post("/admin/webhooks/evt_x/resend", data={"form_token": token},
                                         headers={**basic(TOKEN), "Origin": origin}, allow_redirects=False)
        assert resp.status == 403, token
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []


async def test_pages_are_bounded_and_paged(start_app):
    running = await admin_app(start_app)
    made = []
    for i in range(53):  # waiting customers: each push stays pending
        pushed = await running.push(f"2547123460{i:02d}", 10 + i)
        assert pushed["http"] == 200, pushed
        made.append(pushed["checkoutRequestId"])
    html = await page(running, "/admin")
    assert html.count('data-label="Payment"') == 50 and "1–50 of 53" in html
    assert made[-1] in html and made[0] not in html  # newest first
    older = re.search(r'href="/admin\?offset=(\d+)" rel="next"', html)
    assert older is not None and older.group(1) == "50"
    html = await page(running, "/admin?offset=50")
    assert html.count('data-label="Payment"') == 3 and "51–53 of 53" in html and 'rel="next"' not in html
    assert made[0] in html and 'href="/admin?offset=0" rel="prev"' in html
    html = await page(running, "/admin?status=pending&offset=50")
    assert 'href="/admin?status=pending&amp;offset=0" rel="prev"' in html  # the filters are kept


async def test_the_password_is_compared_in_constant_time(start_app, monkeypatch):
    """Through hmac.compare_digest, on digests of one length: neither where the first wrong byte is
    nor how long the token is shows in the time a refusal takes."""
    compared: list[tuple[int, int]] = []
    real = hmac.compare_digest

    def recording(a: Any, b: Any) -> bool:
        compared.append((len(a), len(b)))
        return real(a, b)

    monkeypatch.setattr("web.admin.hmac.compare_digest", recording)
    running = await admin_app(start_app)
    for password, status in (("x", 401), (TOKEN[:-1], 401), (TOKEN + "x" * 100, 401), (TOKEN, 200)):
        compared.clear()
        resp = await running.client.get("/admin", headers=basic(password))
        assert resp.status == status
        assert compared and compared[0] == (32, 32), password


def test_wrong_passwords_are_counted_per_address_and_per_ipv6_64():
    from aiohttp.test_utils import make_mocked_request

    from web.admin import client_key

    def key(address: str) -> str:
        transport = mock.Mock()
        transport.get_extra_info.return_value = (address, 4000, 0, 0)
        return client_key(make_mocked_request("GET", "/admin", transport=transport))

    assert key("203.0.113.7") == "203.0.113.7" != key("203.0.113.8")
    assert key("2001:db8:1:2:aaaa::1") == key("2001:db8:1:2:ffff:ffff:ffff:ffff") == "2001:db8:1:2::/64"
    assert key("2001:db8:1:3::1") != key("2001:db8:1:2::1")
    assert key("::ffff:203.0.113.7") == "203.0.113.7"


async def test_a_csv_export_whose_query_fails_is_a_clean_error_not_a_cut_off_download(start_app, monkeypatch, caplog):
    """The header and the first rows are read before the answer starts: a database error is a plain
    500, not a "200 OK" download that stops short (which a spreadsheet would open as complete)."""
    import sqlite3

    async def failing(store: Any, filters: Any) -> Any:
        yield "checkout_request_id,created_at\r\n"
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr("web.admin.payments_csv", failing)
    running = await admin_app(start_app)
    resp = await running.client.get("/admin/payments.csv", headers=basic(TOKEN))
    assert resp.status == 500
    assert (await resp.json())["message"] == "Internal server error"
    assert "Content-Disposition" not in resp.headers
