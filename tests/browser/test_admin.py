"""The operator's pages in real Chromium, against the real app: signed in with Playwright's
http_credentials, on a laptop and on a 375 px phone. Payments are made through the simulator's test
numbers, orders through the shop's API, webhooks go to a real receiver; what a page shows is checked
against what the store holds."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from playwright.async_api import Error as PlaywrightError

from gateway.reports import today
from tests.browser.conftest import BROWSER_ENV, ConsoleErrors, screenshot_path
from tests.daraja_http import eventually
from tests.gateway.test_admin import (
    API_KEY,
    LOST,
    MARKUP,
    TIMES_OUT,
    TOKEN,
    hostile,
    paid_cancelled_and_ordered,
    receiver,  # noqa: F401 - the fixture
    trouble,
)
from tests.gateway.test_webhooks import Receiver, hooked

pytestmark = pytest.mark.browser

LAPTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 740}
PAYMENT_ROWS = "section[aria-labelledby=list-title] tbody tr"

# The page a Resend leads to, read in one step in the page: its note, and the event's state then
# (read apart, the script that follows the event could have shown the page anew in between).
RESENT_PAGE = """() => {
  const note = document.querySelector("#resent-note");
  const state = document.querySelector("#event-state");
  return note && state && { note: note.innerText, state: state.dataset.state };
}"""


async def operator_app(start_app: Any, receiver: Receiver) -> tuple[Any, dict[str, Any], dict[str, Any]]:  # noqa: F811
    """The app with every kind of thing an operator looks at: payments paid, cancelled and for an
    order; an unverified callback, one that matched nothing, a lost answer; webhooks that failed."""
    receiver.default = 503
    # Each event fails when its 1-s retry window is over (the shop answers 503 at once). The 5-s
    # time-out is for the Resend: a single attempt, to a shop that takes 2 s, that a loaded machine
    # must not turn into a time-out.
    running = await start_app(**{**BROWSER_ENV, "ADMIN_TOKEN": TOKEN, "SHOP_API_KEY": API_KEY,
                                 "SIMULATOR_PROMPT_LIFETIME_SECONDS": "60", "DARAJA_TIMEOUT_SECONDS": TIMES_OUT,
                                 **hooked(receiver, WEBHOOK_TIMEOUT_SECONDS="5", WEBHOOK_RETRY_SECONDS="1")})
    made = await paid_cancelled_and_ordered(running)
    seen = await trouble(running)

    async def all_failed() -> bool:
        rows = await running.payments.store.fetch_all("SELECT state FROM webhook_events")
        return len(rows) == 4 and {r[0] for r in rows} == {"failed"}

    await eventually(all_failed, 8, "the four events failed")  # 2 × payment.completed, payment.failed, order.paid
    return running, made, seen


async def operator_page(browser: Any, running: Any, errors: ConsoleErrors, viewport: dict[str, int]) -> Any:
    context = await browser.new_context(base_url=str(running.client.make_url("")), viewport=viewport,
                                        http_credentials={"username": "operator", "password": TOKEN})
    context.set_default_timeout(15_000)
    return errors.watch(await context.new_page())


async def shown_ids(page: Any) -> list[str]:
    return [(await row.locator("td[data-label=Payment]").inner_text()).strip()
            for row in await page.locator(PAYMENT_ROWS).all()]


async def no_sideways_scroll(page: Any, what: str) -> None:
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= await page.evaluate("window.innerWidth"), f"{what} scrolls sideways: {width}px wide"


async def test_an_operator_on_a_laptop_finds_payments_sees_trouble_resends_a_webhook_and_exports_csv(
        start_app, browser, receiver, tmp_path):  # noqa: F811
    running, made, seen = await operator_app(start_app, receiver)
    errors = ConsoleErrors()
    page = await operator_page(browser, running, errors, LAPTOP)
    response = await page.goto("/admin")
    assert response.status == 200
    assert await page.locator("h1").inner_text() == "Payments"
    assert len(await shown_ids(page)) == 4  # the three, and the one the forged callback named
    await page.screenshot(path=screenshot_path("admin-payments.png"), full_page=True)

    # Search by phone, then by receipt.
    await page.fill("#q", "0700 000 002")
    await page.click("button:has-text('Search')")
    await page.wait_for_url("**/admin?q=0700+000+002*")
    assert await shown_ids(page) == [made["cancelled"]]
    await page.fill("#q", made["receipt"])
    await page.click("button:has-text('Search')")
    await page.wait_for_selector("text=1 payment found")
    assert await shown_ids(page) == [made["paid"]]
    assert made["receipt"] in await page.locator(PAYMENT_ROWS).inner_text()

    # Filter by status.
    await page.click("text=Clear")
    await page.select_option("#status", "completed")
    await page.click("button:has-text('Search')")
    await page.wait_for_selector("text=2 payments found")
    assert set(await shown_ids(page)) == {made["paid"], made["ordered"]}
    assert await page.locator(f"{PAYMENT_ROWS} .pill-failed").count() == 0

    # Totals per day, for today in Nairobi.
    await page.click("text=Clear")
    day = today().isoformat()
    await page.fill("#from", day)
    await page.fill("#to", day)
    await page.click("button:has-text('Search')")
    await page.wait_for_selector("text=4 payments found")
    cells = [c.strip() for c in await page.locator("#totals tbody tr").first.locator("td").all_inner_texts()]
    assert cells == [day, "4", "2", "KES 3,100", "1", "1"]

    # The CSV of what is listed.
    await page.click("text=Clear")
    async with page.expect_download() as download_info:
        await page.click("text=Download CSV")
    download = await download_info.value
    assert download.suggested_filename == "payments.csv"
    saved = tmp_path / "payments.csv"
    await download.save_as(saved)
    rows = list(csv.DictReader(io.StringIO(saved.read_text(encoding="utf-8"))))
    assert len(rows) == 4
    for row in rows:
        stored = await running.payments.get(row["checkout_request_id"])
        assert (row["status"], int(row["amount"]), row["phone"], row["receipt"] or None) == (
            stored.status, stored.amount, stored.phone, stored.receipt)
    assert {r["order_reference"] for r in rows} == {"", "INV-1042"}

    # What needs attention: the unverified callback and the lost answer, among others.
    await page.click("nav >> text=Needs attention")
    await page.wait_for_selector("h1:has-text('Needs attention')")
    unverified = await page.locator("#unverified").inner_text()
    assert seen["forged_for"] in unverified and "Amount 1 is not the KES 100 asked" in unverified
    assert seen["stray"] in await page.locator("#unknown").inner_text()
    lost = await page.locator("#lost").inner_text()
    assert LOST in lost and "KES 30" in lost
    await page.screenshot(path=screenshot_path("admin-attention.png"), full_page=True)

    # A failed webhook, resent, then delivered (the page follows it by itself).
    await page.click("nav >> text=Webhooks")
    await page.select_option("#state", "failed")
    await page.click("button:has-text('Show')")
    await page.wait_for_selector("text=4 events failed")
    row = page.locator("tbody tr", has_text="order.paid")
    event_id = (await row.locator("td[data-label=Event] a").inner_text()).strip()
    before = len(receiver.deliveries)
    receiver.default = 200
    # The shop takes 2 s (well inside the 5-s time-out): the page shows the event on its way, with
    # its note, until the delivery is recorded and the page's script shows it anew with the outcome.
    receiver.answers = [("sleep", 2.0)]
    await row.locator("button:has-text('Resend')").click()
    await page.wait_for_url(f"**/admin/webhooks/{event_id}?resent=1")
    shown = await (await page.wait_for_function(RESENT_PAGE)).json_value()
    assert shown["state"] == "pending" and "Queued again" in shown["note"], shown
    await page.wait_for_selector("#event-state .pill-delivered", timeout=15_000)
    assert page.url.endswith(f"/admin/webhooks/{event_id}")  # the page followed it, and shows the outcome
    assert "HTTP 200" in await page.locator("table.rows").inner_text()
    delivered = [d for d in receiver.deliveries[before:] if d.headers["Mpesa-Event-Id"] == event_id]
    assert delivered and delivered[0].event["type"] == "order.paid"
    state = await running.payments.store.fetch_one("SELECT state FROM webhook_events WHERE event_id = ?", (event_id,))
    assert state[0] == "delivered"
    await page.screenshot(path=screenshot_path("admin-webhook.png"), full_page=True)
    await page.context.close()
    assert errors.unexpected() == []


async def test_the_operator_pages_work_on_a_375_px_phone(start_app, browser, receiver):  # noqa: F811
    running, made, seen = await operator_app(start_app, receiver)
    errors = ConsoleErrors()
    page = await operator_page(browser, running, errors, PHONE)
    await page.goto("/admin")
    await no_sideways_scroll(page, "/admin")
    await page.screenshot(path=screenshot_path("admin-phone.png"), full_page=True)
    # Each payment is a card: its label beside each value, nothing cut off or wider than the screen.
    first = page.locator(PAYMENT_ROWS).first
    box = await first.bounding_box()
    assert box["x"] >= 0 and box["x"] + box["width"] <= PHONE["width"]
    assert await first.locator("td[data-label=Payment]").evaluate(
        "td => getComputedStyle(td, '::before').content") == '"Payment"'

    await page.fill("#q", "0700000000")
    await page.click("button:has-text('Search')")
    await page.wait_for_selector("text=2 payments found")
    assert set(await shown_ids(page)) == {made["paid"], made["ordered"]}
    await no_sideways_scroll(page, "/admin?q=…")

    order_id = made["order"]["orderId"]
    event = await running.payments.store.fetch_one("SELECT event_id FROM webhook_events WHERE type = 'payment.failed'")
    for path in ("/admin/attention", "/admin/orders", f"/admin/orders/{order_id}", f"/admin/payments/{made['paid']}",
                 "/admin/webhooks", f"/admin/webhooks/{event[0]}"):
        response = await page.goto(path)
        assert response.status == 200, path
        await no_sideways_scroll(page, path)
    await page.goto("/admin/attention")
    await page.screenshot(path=screenshot_path("admin-attention-phone.png"), full_page=True)
    assert seen["forged_for"] in await page.locator("#unverified").inner_text()

    # Resend from the phone: the button is on screen and does its work.
    receiver.default = 200
    await page.goto(f"/admin/webhooks/{event[0]}")
    button = page.locator("main button:has-text('Resend')")
    await button.scroll_into_view_if_needed()
    box = await button.bounding_box()
    assert box["width"] >= 44 or box["height"] >= 36  # a finger can hit it
    await button.click()
    await page.wait_for_selector("#event-state .pill-delivered", timeout=10_000)
    await no_sideways_scroll(page, "the delivered event")
    await page.context.close()
    assert errors.unexpected() == []


async def test_without_the_right_password_chromium_gets_no_page(start_app, browser):
    running = await start_app(**{**BROWSER_ENV, "ADMIN_TOKEN": TOKEN})
    base = str(running.client.make_url(""))
    context = await browser.new_context(base_url=base)  # no password to give when asked
    page = await context.new_page()
    with pytest.raises(PlaywrightError, match="ERR_INVALID_AUTH_CREDENTIALS"):
        await page.goto("/admin")
    answer = await context.request.get("/admin")  # what the server said: sign in
    assert answer.status == 401
    assert answer.headers["www-authenticate"] == 'Basic realm="M-Pesa gateway operator"'
    await context.close()

    context = await browser.new_context(base_url=base, http_credentials={"username": "operator",
                                                                         "password": "not-the-token-at-all"})
    page = await context.new_page()
    response = await page.goto("/admin")
    assert response.status == 401
    text = await page.content()
    assert "operator's password" in text and "Payments" not in text and TOKEN not in text
    await context.close()


async def test_markup_from_callbacks_orders_and_pushes_is_shown_as_text_and_never_runs(start_app, browser):
    running = await start_app(**{**BROWSER_ENV, "ADMIN_TOKEN": TOKEN, "SHOP_API_KEY": API_KEY,
                                 "SIMULATOR_PROMPT_LIFETIME_SECONDS": "60"})
    made = await hostile(running)
    errors = ConsoleErrors()
    page = await operator_page(browser, running, errors, LAPTOP)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: dialogs.append(dialog.message))
    for path, where in (("/admin/attention", "#unknown"), ("/admin/attention", "#unverified"),
                        (f"/admin/orders/{made['order']}", "main"), ("/admin/orders", "main"),
                        (f"/admin/payments/{made['paid']}", "main"), (f"/admin/payments/{made['forged_for']}", "main"),
                        ("/admin", "main")):
        response = await page.goto(path)
        assert response.status == 200, path
        assert MARKUP in await page.locator(where).inner_text(), (path, where)  # the text, as it came
        assert await page.locator("img[src=x], main script, b:has-text('SHOP9')").count() == 0, path
    assert '"><b>SHOP9' in await page.locator("main").inner_text()
    assert dialogs == []
    await page.context.close()
    assert errors.unexpected() == []  # not even a blocked inline script (the CSP would report it)
