"""The checkout that never strands a payment (issue 9, item 5), through the real pages in real
Chromium against the real app: orders priced on the server, the Pay button on a phone's first
screen, "M-Pesa" on one line, watching after the window, following an order after a reload or a
409, Try Again only when no prompt can be paid, a no-answer in the phone's words, a next step for
every failure, the 429 countdown, the receipt's items, and the static files compressed and cached.
Also: the shop's words (item names, references) shown as text, never markup; absurd pay and receipt
links answered without a 5xx; only the build's static files served, immutable only at their own
version, gzip only to a client that accepts it.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import checkout_link, create_order, screenshot_path, wait_state

pytestmark = pytest.mark.browser

# The receipt, unlocked by the push's token (this tab pushed) or by the order's id (it followed the order).
ORDER_RECEIPT = re.compile(r".*/confirmation\.html\?checkoutRequestId=ws_CO_\w+"
                           r"&(paymentToken=[\w-]{43}|orderId=ord_[\w-]+)$")
PHONE_SIZE = {"width": 375, "height": 667}
EXPIRED = "The payment request has expired"


async def open_phone(page: Any, msisdn: str) -> Any:
    phone = await page.context.new_page()
    await phone.goto(f"/simulator/phone/{msisdn}")
    return phone


async def enter_pin(phone: Any, pin: str = "12345") -> None:
    await phone.wait_for_selector("#prompt", state="visible")
    await phone.fill("#pin", pin)
    await phone.click("#pin-ok")


def order_id_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["orderId"][0]


async def receipt_lines(page: Any) -> list[str]:
    return [" ".join(t.split()) for t in await page.locator("#receipt-items li").all_inner_texts()]


# ---- on a 375 px phone ----------------------------------------------------------------------------

async def pay_button_box(page: Any) -> dict[str, float]:
    box = await page.locator("#pay-button").bounding_box()
    assert box is not None, "the Pay button is not shown"
    return dict(box)


async def test_catalogue_pay_button_shows_the_amount_on_a_phones_first_screen(shop):
    running, page, _ = await shop()
    await page.set_viewport_size(PHONE_SIZE)
    await page.goto("/pay.html")
    await page.wait_for_selector("#order-items li")
    assert (await page.inner_text("#pay-button")).strip() == "Pay KES 12,900"
    order_box = await page.locator("#order").bounding_box()
    pay = await pay_button_box(page)
    assert pay["y"] >= order_box["y"] + order_box["height"], "the Pay button comes after the order"
    assert pay["y"] + pay["height"] <= PHONE_SIZE["height"], f"the Pay button is below the fold: {pay}"
    assert await page.evaluate("window.scrollY") == 0
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_SIZE["width"]
    await page.screenshot(path=screenshot_path("pay-phone.png"))
    # The label follows the cart.
    await page.click("[data-item-id=lighting] [data-action=increase]")
    assert (await page.inner_text("#pay-button")).strip() == "Pay KES 18,060"
    assert (await page.inner_text("#order-total")).strip() == "KES 18,060"


async def test_a_long_order_keeps_the_pay_button_on_the_first_screen(shop):
    running, page, _ = await shop()
    items = [{"name": f"Kitenge print {n}", "quantity": n, "unitPrice": 1500} for n in range(1, 9)]
    order = await create_order(running, items=items)
    await page.set_viewport_size(PHONE_SIZE)
    await page.goto(checkout_link(order))
    await page.wait_for_selector("#order-items li")
    assert (await page.inner_text("#pay-button")).strip() == f"Pay KES {order['amount']:,}"
    pay = await pay_button_box(page)
    assert pay["y"] + pay["height"] <= PHONE_SIZE["height"], f"the Pay button is below the fold: {pay}"
    # The order stays readable: the first lines, the total, and every line one tap away.
    assert await page.locator("#order-items li:visible").count() == 3
    assert (await page.inner_text("#order-more")).strip() == "Show all 8 items"
    assert (await page.inner_text("#order-total")).strip() == f"KES {order['amount']:,}"
    await page.click("#order-more")
    assert await page.locator("#order-items li:visible").count() == 8


MPESA_LAYOUT = """() => {
  const found = [];
  const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
  for (let node = walker.nextNode(); node; node = walker.nextNode()) {
    const parent = node.parentElement;
    if (!parent || !parent.getClientRects().length) continue;  // not rendered
    let at = node.data.indexOf("M-Pesa");
    while (at !== -1) {
      const range = document.createRange();
      range.setStart(node, at);
      range.setEnd(node, at + 6);
      const lines = new Set([...range.getClientRects()].map((r) => Math.round(r.top)));
      const ids = [];  // the ids of the elements it sits in, innermost first
      for (let el = parent; el; el = el.parentElement) if (el.id) ids.push(el.id);
      found.push({ text: parent.textContent.trim().slice(0, 60), whiteSpace: getComputedStyle(parent).whiteSpace,
                   lines: lines.size, ids });
      at = node.data.indexOf("M-Pesa", at + 6);
    }
  }
  return found;
}"""


async def check_mpesa_on_one_line(page: Any, within: str | None = None) -> int:
    """Every rendered "M-Pesa" on one line; how many there are (only those inside #`within`, if given)."""
    found = await page.evaluate(MPESA_LAYOUT)
    for occurrence in found:
        assert occurrence["whiteSpace"] == "nowrap", occurrence
        assert occurrence["lines"] == 1, occurrence
    return len([o for o in found if within is None or within in o["ids"]])


async def test_mpesa_never_breaks_at_its_hyphen(shop):
    running, page, _ = await shop()
    await page.set_viewport_size({"width": 320, "height": 640})
    await page.goto("/pay.html")
    await page.wait_for_selector("#order-items li")
    assert await check_mpesa_on_one_line(page) >= 5  # header, heading, label, explainer, panel, footer
    # Texts written by the script: a failure with what to do next (its reason names M-Pesa).
    await page.fill("#phone", "0700000001")
    await page.click("#pay-button")
    assert await wait_state(page, "failed") == "Insufficient M-Pesa balance"
    assert await check_mpesa_on_one_line(page) >= 6
    # The receipt.
    order = await create_order(running, amount=100)
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0700000000")
    await page.click("#pay-button")
    await page.wait_for_url(ORDER_RECEIPT)
    assert await check_mpesa_on_one_line(page) >= 3


# ---- orders: the catalogue's and the shop's --------------------------------------------------------

async def test_catalogue_order_is_priced_on_the_server_and_its_receipt_lists_the_items(shop):
    running, page, _ = await shop()
    await page.goto("/pay.html")
    await page.wait_for_selector("#order-items li")
    await page.click("[data-item-id=lighting] [data-action=increase]")
    requests: list[tuple[str, str | None]] = []
    page.on("request", lambda r: requests.append((r.url, r.post_data)) if r.method == "POST" else None)
    await page.fill("#phone", "0700000000")
    await page.click("#pay-button")
    await page.wait_for_url(ORDER_RECEIPT)
    # The browser sent item ids and quantities, then the order's id and the phone: never an amount.
    posted = [(urlsplit(url).path, body) for url, body in requests if not url.endswith("/status")]
    assert [path for path, _ in posted][:2] == ["/catalogue/orders", "/stkpush"]
    assert "amount" not in (posted[0][1] or "") and "amount" not in (posted[1][1] or "")
    tx = await running.payments.get(parse_qs(urlsplit(page.url).query)["checkoutRequestId"][0])
    assert (tx.status, tx.amount) == ("completed", 18060)
    row = await running.payments.store.fetch_one("SELECT status, amount FROM orders WHERE order_id = ?",
                                                 (tx.order_id,))
    assert tuple(row) == ("paid", 18060)
    assert await receipt_lines(page) == [
        "DJ booking (4-hour set) 1 × KES 9,675 KES 9,675",
        "Speaker hire (pair, per day) 1 × KES 3,225 KES 3,225",
        "Stage lighting kit 1 × KES 5,160 KES 5,160",
    ]
    assert (await page.inner_text("#receipt-items-total")).strip() == "KES 18,060"
    assert (await page.inner_text("#receipt-amount")).strip() == "KES 18,060"
    await page.screenshot(path=screenshot_path("confirmation-items.png"), full_page=True)
    # The paid cart is emptied: the next visit starts the default cart again.
    await page.goto("/pay.html")
    await page.wait_for_selector("#order-items li")
    assert (await page.inner_text("#pay-button")).strip() == "Pay KES 12,900"


async def test_checkout_link_shows_the_order_read_only_and_pays_exactly_it(shop):
    running, page, _ = await shop()
    order = await create_order(running, items=[{"name": "Kitenge", "quantity": 2, "unitPrice": 1500},
                                               {"name": "Kikoi", "quantity": 1, "unitPrice": 850}])
    await page.goto(checkout_link(order))
    await page.wait_for_selector("#order-items li")
    assert [" ".join(t.split()) for t in await page.locator("#order-items li").all_inner_texts()] == [
        "Kitenge 2 × KES 1,500 KES 3,000", "Kikoi 1 × KES 850 KES 850"]
    assert await page.locator("#order-items button").count() == 0, "the shop's order cannot be changed here"
    assert await page.locator("#amount").count() == 0
    assert (await page.inner_text("#order-reference")).strip() == "INV-1042"
    assert (await page.inner_text("#pay-button")).strip() == "Pay KES 3,850"
    await page.fill("#phone", "0700000000")
    await page.click("#pay-button")
    await page.wait_for_url(ORDER_RECEIPT)
    tx = await running.payments.get(parse_qs(urlsplit(page.url).query)["checkoutRequestId"][0])
    assert (tx.amount, tx.order_id, tx.status) == (3850, order["orderId"], "completed")
    assert await receipt_lines(page) == ["Kitenge 2 × KES 1,500 KES 3,000", "Kikoi 1 × KES 850 KES 850"]
    assert (await page.inner_text("#receipt-reference")).strip() == "INV-1042"
    # The link of a paid order says so, and leads to its receipt; it offers no second payment.
    await page.goto(checkout_link(order))
    await page.wait_for_selector("#page-notice:not([hidden])")
    assert (await page.inner_text("#page-notice-heading")).strip() == "This order is paid"
    assert not await page.is_visible("#pay-button")
    await page.click("#page-notice-link")
    await page.wait_for_url(ORDER_RECEIPT)
    assert await receipt_lines(page) == ["Kitenge 2 × KES 1,500 KES 3,000", "Kikoi 1 × KES 850 KES 850"]


async def test_a_link_to_no_order_says_so_and_offers_no_payment(shop):
    running, page, errors = await shop()
    errors.expect("status of 404")
    await page.goto("/pay.html?orderId=ord_AAAAAAAAAAAAAAAAAAAAAA")
    await page.wait_for_selector("#page-notice:not([hidden])")
    assert (await page.inner_text("#page-notice-heading")).strip() == "This payment link is not valid"
    assert not await page.is_visible("#pay-form")


async def test_without_catalogue_or_free_amounts_the_page_asks_for_the_shops_link(shop):
    running, page, _ = await shop(DEMO_CATALOGUE="0", FREE_AMOUNT_PUSHES="0")
    await page.goto("/pay.html")
    await page.wait_for_selector("#page-notice:not([hidden])")
    assert "payment link" in await page.inner_text("#page-notice")
    assert not await page.is_visible("#pay-form")


async def test_the_free_amount_form_stays_without_a_catalogue(shop):
    running, page, _ = await shop(DEMO_CATALOGUE="0")
    await page.goto("/pay.html")
    assert await page.locator("#order").count() == 0
    await page.fill("#phone", "0700000000")
    await page.fill("#amount", "250")
    assert (await page.inner_text("#pay-button")).strip() == "Pay KES 250"
    await page.click("#pay-button")
    await page.wait_for_url(ORDER_RECEIPT)
    assert (await page.inner_text("#receipt-amount")).strip() == "KES 250"


# ---- following a payment ----------------------------------------------------------------------------

async def test_reload_during_a_pending_payment_follows_it_to_the_receipt(shop):
    running, page, errors = await shop()
    order = await create_order(running, amount=420)
    phone = errors.watch(await open_phone(page, "254708374149"))
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0708374149")
    await page.click("#pay-button")
    await wait_state(page, "waiting")
    pushes: list[str] = []
    page.on("request", lambda r: pushes.append(r.url) if urlsplit(r.url).path == "/stkpush" else None)
    await page.reload()
    # The token went with the reload; the page follows the order's open payment instead.
    assert "already" not in await wait_state(page, "waiting")
    assert not await page.is_visible("#retry-button")
    assert await page.is_disabled("#pay-button")
    await enter_pin(phone)
    await page.wait_for_url(ORDER_RECEIPT)
    assert pushes == [], "the reload sent no second push"
    assert "orderId=" + order["orderId"] in page.url
    assert (await page.inner_text("#receipt-amount")).strip() == "KES 420"
    assert await running.payments.store.count() == 1


async def test_the_same_link_in_another_tab_follows_the_open_payment(shop):
    running, page, errors = await shop()
    order = await create_order(running, amount=75)
    phone = errors.watch(await open_phone(page, "254708374149"))
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0708374149")
    await page.click("#pay-button")
    await wait_state(page, "waiting")
    other = errors.watch(await page.context.new_page())
    await other.goto(checkout_link(order))
    await wait_state(other, "waiting")  # it found the open payment on load: no Pay button to press
    assert await other.is_disabled("#pay-button")
    await enter_pin(phone)
    for tab in (page, other):
        await tab.wait_for_url(ORDER_RECEIPT)
    assert await running.payments.store.count() == 1


async def test_a_push_refused_with_409_follows_the_open_prompt(shop):
    running, page, errors = await shop()
    errors.expect("status of 409 (Conflict)")
    order = await create_order(running, amount=75)
    phone = errors.watch(await open_phone(page, "254708374149"))
    await page.goto(checkout_link(order))  # loaded before any payment: idle, with a Pay button
    await page.fill("#phone", "0708374149")
    resp = await running.client.post("/stkpush", json={"orderId": order["orderId"], "phone": "0708374149"})
    assert resp.status == 200  # meanwhile another device pushed for this order
    await page.click("#pay-button")
    text = await wait_state(page, "waiting")
    assert text == ("A payment request for this order is already on your phone: "
                    "enter your M-Pesa PIN there to pay KES 75")
    await enter_pin(phone)
    await page.wait_for_url(ORDER_RECEIPT)
    assert await running.payments.store.count() == 1


async def test_after_the_window_it_keeps_watching_and_shows_a_late_success(shop):
    running, page, errors = await shop(CHECKOUT_POLL_TIMEOUT_SECONDS="2", SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    order = await create_order(running, amount=60)
    phone = errors.watch(await open_phone(page, "254708374149"))
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0708374149")
    await page.click("#pay-button")
    await wait_state(page, "waiting")
    text = await wait_state(page, "watching", timeout=10_000)
    assert text.startswith("Still waiting for M-Pesa")
    # The prompt can still be paid: no Try Again, no second push.
    assert not await page.is_visible("#retry-button")
    assert await page.is_disabled("#pay-button")
    await asyncio.sleep(1.5)
    assert await page.get_attribute("#payment-status", "data-state") == "watching"
    await page.screenshot(path=screenshot_path("pay-watching.png"), full_page=True)
    await enter_pin(phone)
    await page.wait_for_url(ORDER_RECEIPT, timeout=10_000)
    assert await page.is_visible("#confirmation-completed")


# ---- failures ---------------------------------------------------------------------------------------

async def test_try_again_is_one_action_that_sends_a_new_push(shop):
    running, page, _ = await shop()
    order = await create_order(running, amount=30)
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0700000002")  # cancels
    await page.click("#pay-button")
    assert await wait_state(page, "failed") == "User cancelled transaction"
    assert await page.is_visible("#retry-button")
    assert not await page.is_visible("#pay-button"), "one action after a failure"
    # The customer changes the number and taps Try Again: that sends the new push.
    await page.fill("#phone", "0700000000")
    await page.click("#retry-button")
    await page.wait_for_url(ORDER_RECEIPT)
    assert len(running.sim.prompts) == 2


async def test_pay_waits_for_the_order_on_a_slow_connection(shop):
    """The order arrives after the page. Until it has, there is nothing to pay: Pay is disabled (an
    enabled one took the tap and dropped it), the phone can be typed, and once the order is shown
    the tap pays it."""
    running, page, _ = await shop()
    order = await create_order(running, amount=30)
    release = asyncio.Event()

    async def slow_order(route: Any) -> None:
        await release.wait()
        await route.continue_()

    await page.route(re.compile(r".*/checkout/ord_[\w-]+$"), slow_order)
    tap = None
    try:
        await page.goto(checkout_link(order))
        await page.fill("#phone", "0700000000")
        assert await page.is_disabled("#pay-button")
        tap = asyncio.create_task(page.click("#pay-button"))
        await asyncio.sleep(0.5)
        assert not tap.done(), "the tap waits for the order"
    except BaseException:
        if tap is not None:
            tap.cancel()
        raise
    finally:
        release.set()
    await tap
    await page.wait_for_url(ORDER_RECEIPT)
    assert len(running.sim.prompts) == 1


@pytest.mark.parametrize("phone, reason, next_step", [
    ("0700000001", "Insufficient M-Pesa balance", "Top up your M-Pesa account or enter another number"),
    ("0700000002", "User cancelled transaction", "Tap Try Again when you are ready to pay"),
    ("0700000003", "Wrong M-Pesa PIN entered", "enter your M-Pesa PIN carefully"),
    ("0700000004", EXPIRED, "Check that your phone is on and has signal"),
    ("0700000005", EXPIRED, "Keep your phone unlocked and nearby"),
])
async def test_every_failure_says_what_to_do_next(shop, phone, reason, next_step):
    running, page, _ = await shop(SIMULATOR_PROMPT_LIFETIME_SECONDS="2")
    order = await create_order(running, amount=30)
    await page.goto(checkout_link(order))
    await page.fill("#phone", phone)
    await page.click("#pay-button")
    assert await wait_state(page, "failed") == reason
    assert next_step in await page.inner_text("#payment-next")
    assert await page.is_visible("#retry-button")
    # The receipt page of the failed payment says the same, with a way back to this order.
    tx = (await running.payments.store.fetch_all("SELECT checkout_request_id FROM transactions"))[0][0]
    await page.goto(f"/confirmation.html?checkoutRequestId={tx}&orderId={order['orderId']}")
    assert (await page.inner_text("#failure-message")).strip() == reason
    assert next_step in await page.inner_text("#failure-next")
    assert await page.get_attribute("#back-to-pay", "href") == checkout_link(order)


async def test_a_no_answer_reads_as_the_phone_says_it(shop):
    running, page, errors = await shop(SIMULATOR_PROMPT_LIFETIME_SECONDS="3")
    order = await create_order(running, amount=10)
    phone = errors.watch(await open_phone(page, "254712345672"))
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0712345672")
    await page.click("#pay-button")
    await phone.wait_for_selector("#prompt", state="visible")
    sms = phone.locator("#sms .sms-text").first
    await sms.wait_for(timeout=10_000)
    assert (await sms.inner_text()).strip() == EXPIRED + "."
    assert await wait_state(page, "failed") == EXPIRED


async def test_the_gateways_own_time_out_reads_the_same(shop):
    # Daraja never answers in time (the prompt outlives PAYMENT_TIMEOUT_SECONDS): the gateway gives
    # up locally. The page says what the phone says of a no-answer, and that a late PIN still counts.
    running, page, errors = await shop(PAYMENT_TIMEOUT_SECONDS="2", SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    order = await create_order(running, amount=10)
    phone = errors.watch(await open_phone(page, "254712345673"))
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0712345673")
    await page.click("#pay-button")
    assert await wait_state(page, "failed", timeout=20_000) == EXPIRED
    tx = (await running.payments.store.fetch_all("SELECT result_code FROM transactions"))[0][0]
    assert tx == "timeout"
    assert "may still come through" in await page.inner_text("#payment-next")
    # The prompt was still open after all: paid late, and the page shows it.
    await enter_pin(phone)
    await page.wait_for_url(ORDER_RECEIPT, timeout=20_000)
    assert await page.is_visible("#confirmation-completed")


async def test_a_429_counts_down_to_when_the_customer_can_try_again(shop):
    running, page, errors = await shop(PUSH_LIMIT_PER_PHONE="1", PUSH_LIMIT_WINDOW_SECONDS="4")
    errors.expect("status of 429 (Too Many Requests)")
    order = await create_order(running, amount=30)
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0700000001")  # insufficient funds: fails at once
    await page.click("#pay-button")
    await wait_state(page, "failed")
    await page.click("#retry-button")  # the second push to this phone in the window
    await wait_state(page, "limited")
    assert await page.is_disabled("#retry-button")
    first = int(await page.get_attribute("#retry-countdown", "data-seconds"))
    assert 1 <= first <= 4
    assert f"You can try again in {first} s." == (await page.inner_text("#retry-countdown")).strip()
    await page.wait_for_function(
        "n => Number(document.querySelector('#retry-countdown').dataset.seconds) < n", arg=first)
    await page.screenshot(path=screenshot_path("pay-limited.png"), full_page=True)
    await page.wait_for_selector("#retry-button:enabled", timeout=10_000)
    assert (await page.inner_text("#retry-countdown")).strip() == "You can try again now."
    await page.click("#retry-button")
    assert await wait_state(page, "failed") == "Insufficient M-Pesa balance"
    assert len(running.sim.prompts) == 2


# ---- static files -----------------------------------------------------------------------------------

async def test_static_files_are_versioned_compressed_and_cached(shop):
    running, page, _ = await shop()
    responses: list[Any] = []
    page.on("response", lambda r: responses.append(r) if "/static/" in r.url else None)
    await page.goto("/pay.html")
    await page.wait_for_selector("#order-items li")  # the scripts ran: the CSP let them
    names = sorted(urlsplit(r.url).path.rsplit("/", 1)[1] for r in responses)
    assert names == ["cart.js", "checkout-page.js", "format.js", "payment.js", "site.css"]
    for response in responses:
        assert re.search(r"\?v=[\w%-]{40,}$", response.url), f"{response.url} is not versioned"
        headers = await response.all_headers()
        assert headers.get("content-encoding") == "gzip", response.url
        assert headers.get("cache-control") == "public, max-age=31536000, immutable", response.url
        assert "accept-encoding" in headers.get("vary", "").lower()
    # An unversioned URL is revalidated, not kept for a year.
    resp = await running.client.get("/static/css/site.css", headers={"Accept-Encoding": "gzip"})
    assert resp.headers["Cache-Control"] == "public, no-cache"
    assert resp.headers["Content-Encoding"] == "gzip"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]


# ---- the shop's words, untrusted ----------------------------------------------------------------------

MARKUP_NAME = '<img src=x onerror="window.injected=1">Kitenge <b>bold</b>'
MARKUP_REFERENCE = '<b>INV</b>-"7"-' + "R" * 49  # 64 characters, the longest reference
MPESA_NAME = "M-Pesa float top-up for the stall"
LONG_NAME = "K" * 80  # the longest name an order line may have, with nowhere to break


async def check_no_markup(page: Any, where: str) -> None:
    assert await page.locator(f"{where} img, {where} b").count() == 0, "the shop's text became markup"
    assert await page.evaluate("window.injected") is None


async def test_the_shops_words_are_shown_as_text_and_keep_m_pesa_whole(shop):
    running, page, _ = await shop()
    await page.set_viewport_size(PHONE_SIZE)
    order = await create_order(running, reference=MARKUP_REFERENCE, description="<i>Two</i> M-Pesa lines",
                               items=[{"name": MARKUP_NAME, "quantity": 1, "unitPrice": 100},
                                      {"name": MPESA_NAME, "quantity": 1, "unitPrice": 50},
                                      {"name": LONG_NAME, "quantity": 1, "unitPrice": 10}])
    await page.goto(checkout_link(order))
    await page.wait_for_selector("#order-items li")
    names = [t.strip() for t in await page.locator("#order-items .order-line-name").all_inner_texts()]
    assert names == [MARKUP_NAME, MPESA_NAME, LONG_NAME]
    assert (await page.inner_text("#order-reference")).strip() == MARKUP_REFERENCE
    await check_no_markup(page, "#order")
    assert await check_mpesa_on_one_line(page, within="order-items") >= 1  # the item named after M-Pesa
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_SIZE["width"], "a long name"
    await page.fill("#phone", "0700000000")
    await page.click("#pay-button")
    await page.wait_for_url(ORDER_RECEIPT)
    lines = await receipt_lines(page)
    assert [line.split(" 1 × ")[0] for line in lines] == [" ".join(MARKUP_NAME.split()), MPESA_NAME, LONG_NAME]
    assert (await page.inner_text("#receipt-reference")).strip() == MARKUP_REFERENCE
    await check_no_markup(page, "#receipt")
    assert await check_mpesa_on_one_line(page, within="receipt-items") >= 1
    assert await page.evaluate("document.documentElement.scrollWidth") <= PHONE_SIZE["width"], "a long name"


# ---- absurd addresses ----------------------------------------------------------------------------------

JUNK_ORDER_IDS = ["", "junk", "ord_", "ord_" + "A" * 64, "ord_" + "A" * 3000, "%00", "%ff%fe",
                  "<script>alert(1)</script>", "ord_x%22%3E%3Cimg%20src%3Dx%3E", "ord_a&orderId=ord_b", "é" * 500]


@pytest.mark.parametrize("order_id", JUNK_ORDER_IDS)
async def test_a_pay_link_with_a_junk_order_id_says_it_is_not_valid(shop, order_id):
    running, page, errors = await shop()
    errors.expect("status of 404")
    response = await page.goto(f"/pay.html?orderId={order_id}")
    assert response.status == 200
    await page.wait_for_selector("#page-notice:not([hidden])")
    assert (await page.inner_text("#page-notice-heading")).strip() == "This payment link is not valid"
    assert not await page.is_visible("#pay-form")
    assert await page.locator("#order img").count() == 0


@pytest.mark.parametrize("query", [
    "", "checkoutRequestId=", "checkoutRequestId=junk", "checkoutRequestId=" + "A" * 5000,
    "checkoutRequestId=%00&paymentToken=%ff", "checkoutRequestId=%3Cimg%20src%3Dx%3E",
    "checkoutRequestId=ws_CO_1&orderId=" + "x" * 5000, "checkoutRequestId=ws_CO_1&paymentToken=" + "x" * 5000,
    "checkoutRequestId=a&checkoutRequestId=b",
])
async def test_a_receipt_link_with_junk_says_the_payment_is_not_found(shop, query):
    running, page, errors = await shop()
    errors.expect("status of 404")  # the page's own status: there is no such payment
    response = await page.goto(f"/confirmation.html?{query}")
    assert response.status == 404
    assert (await page.inner_text("h1")).strip() == "Payment not found"
    assert await page.locator("#not-found img").count() == 0


async def test_a_real_receipt_with_junk_alongside_shows_no_details(shop):
    running, page, _ = await shop()
    order = await create_order(running, amount=40)
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0700000000")
    await page.click("#pay-button")
    await page.wait_for_url(ORDER_RECEIPT)
    cid = parse_qs(urlsplit(page.url).query)["checkoutRequestId"][0]
    for junk in ("paymentToken=" + "x" * 5000, "orderId=" + "ord_" + "x" * 5000, "paymentToken=%00&orderId=%ff"):
        response = await page.goto(f"/confirmation.html?checkoutRequestId={cid}&{junk}")
        assert response.status == 200
        assert await page.is_visible("#confirmation-completed")
        assert await page.is_visible("#details-hidden")
        assert await page.locator("#receipt-amount").count() == 0


# ---- following a payment past the window, and after the gateway gave up ------------------------------------

POLL_STAMPS = """
window.statusPolls = [];
const pageFetch = window.fetch;
window.fetch = function (input, init) {
  const url = String(input instanceof Request ? input.url : input);
  const method = (init && init.method) || (input instanceof Request ? input.method : "GET");
  if (method === "POST" && url.endsWith("/stkpush/status")) {
    const box = document.getElementById("payment-status");
    window.statusPolls.push([performance.now() / 1000, box ? box.dataset.state : null]);
  }
  return pageFetch.apply(this, arguments);
};
"""


async def test_after_the_window_it_polls_more_slowly_and_still_finds_the_payment(shop):
    # Without the event stream (a proxy that drops it), only the polls can bring the late success.
    running, page, errors = await shop(CHECKOUT_POLL_TIMEOUT_SECONDS="2", SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    errors.expect("net::ERR_FAILED")
    await page.route(re.compile(r".*/events(\?.*)?$"), lambda route: route.abort())
    order = await create_order(running, amount=60)
    phone = errors.watch(await open_phone(page, "254708374149"))
    # Each status poll stamped by the page itself, as it is sent: its time and the state shown then
    # (stamped here, a poll sent just before the state changed could be counted on the wrong side).
    await page.add_init_script(POLL_STAMPS)
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0708374149")
    await page.click("#pay-button")
    await wait_state(page, "watching", timeout=10_000)
    await page.wait_for_function("() => window.statusPolls.filter(([, state]) => state === 'watching').length >= 2",
                                 timeout=20_000)  # or it stopped asking after the window
    assert await page.get_attribute("#payment-status", "data-state") == "watching"
    polls = await page.evaluate("window.statusPolls")
    fast = [t for t, state in polls if state == "waiting"]
    slow = [t for t, state in polls if state == "watching"]
    assert len(fast) >= 3 and max(b - a for a, b in zip(fast, fast[1:], strict=False)) < 1.5
    after = [fast[-1], *slow]  # from the window's last poll on: every gap is the slower one
    gaps = [b - a for a, b in zip(after, after[1:], strict=False)]
    assert min(gaps) >= 2.0, f"not slower after the window: {gaps}"
    await enter_pin(phone)
    await page.wait_for_url(ORDER_RECEIPT, timeout=10_000)
    assert await page.is_visible("#confirmation-completed")


async def test_a_reload_after_the_gateway_gave_up_still_shows_a_late_success(shop):
    running, page, errors = await shop(PAYMENT_TIMEOUT_SECONDS="2", SIMULATOR_PROMPT_LIFETIME_SECONDS="30")
    order = await create_order(running, amount=10)
    phone = errors.watch(await open_phone(page, "254712345674"))
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0712345674")
    await page.click("#pay-button")
    assert await wait_state(page, "failed", timeout=20_000) == EXPIRED
    await page.reload()
    assert await wait_state(page, "failed") == EXPIRED  # read from the order: the gateway gave up
    assert "may still come through" in await page.inner_text("#payment-next")
    await enter_pin(phone)  # the prompt was still open after all
    await page.wait_for_url(ORDER_RECEIPT, timeout=20_000)
    assert "orderId=" + order["orderId"] in page.url
    assert await page.is_visible("#confirmation-completed")


# ---- static files: only the build's, cached for a year only at their own version ---------------------------

async def test_static_files_are_cached_for_a_year_only_under_their_own_version(shop):
    running, page, _ = await shop()
    await page.goto("/pay.html")
    await page.wait_for_selector("#order-items li")
    css = await page.get_attribute("link[rel=stylesheet]", "href")
    seen = await page.evaluate("""async (url) => {
      const out = {};
      for (const [name, u] of [["own", url], ["junk", url.replace(/v=[^&]+/, "v=junk")],
                               ["empty", url.replace(/v=[^&]+/, "v=")], ["none", url.split("?")[0]]]) {
        const r = await fetch(u, { cache: "no-store" });
        out[name] = { status: r.status, cache: r.headers.get("cache-control"),
                      encoding: r.headers.get("content-encoding"), vary: r.headers.get("vary"),
                      length: (await r.text()).length };
      }
      return out;
    }""", css)
    assert seen["own"]["cache"] == "public, max-age=31536000, immutable"
    for name in ("junk", "empty", "none"):
        assert seen[name]["cache"] == "public, no-cache", (name, seen[name])
    for name, answer in seen.items():
        assert (answer["status"], answer["encoding"], answer["length"]) == (200, "gzip", seen["own"]["length"]), name
        assert answer["vary"] == "Accept-Encoding", name


@pytest.mark.parametrize("path", [
    "/static/" + "a" * 300, "/static/js/" + "b" * 4000 + ".js", "/static/css/site.css/x", "/static/css/site.css.gz",
    "/static/", "/static/css/", "/static/%2e%2e/run.py", "/static/css/..%2f..%2f..%2frun.py", "/static/%00",
    "/static/js/nothing.js",
])
async def test_static_paths_that_are_not_files_of_the_build_are_404(shop, path):
    running, page, errors = await shop()
    errors.expect("status of 404")
    response = await page.goto(path)
    assert response.status == 404, path
    resp = await running.client.head(path)
    assert resp.status == 404, path


async def test_static_files_honour_accept_encoding_head_and_revalidation(shop):
    running, page, _ = await shop()
    name = "/static/js/payment.js"
    plain = await running.client.get(name, headers={"Accept-Encoding": "identity"})
    body = await plain.read()
    assert "Content-Encoding" not in plain.headers and plain.headers["Vary"] == "Accept-Encoding"
    for refusal in ("gzip;q=0", "gzip; q=0.0, identity", "br", "*;q=0", ""):
        resp = await running.client.get(name, headers={"Accept-Encoding": refusal}, auto_decompress=False)
        assert "Content-Encoding" not in resp.headers, refusal
        assert await resp.read() == body, refusal
    for acceptance in ("gzip", "GZIP;q=0.5", "deflate, gzip;q=1.0", "x-gzip", "*", "br;q=1, gzip;q=0.1"):
        resp = await running.client.get(name, headers={"Accept-Encoding": acceptance}, auto_decompress=False)
        assert resp.headers.get("Content-Encoding") == "gzip", acceptance
        assert len(await resp.read()) < len(body)
    head = await running.client.head(name, headers={"Accept-Encoding": "gzip"})
    assert head.status == 200 and head.headers["Content-Encoding"] == "gzip" and await head.read() == b""
    assert head.headers["Cache-Control"] == "public, no-cache"
    etag = head.headers["ETag"]
    again = await running.client.get(name, headers={"Accept-Encoding": "gzip", "If-None-Match": etag})
    assert again.status == 304 and again.headers["Cache-Control"] == "public, no-cache"
    # The identity variant has its own ETag: a gzip ETag does not validate it.
    other = await running.client.get(name, headers={"Accept-Encoding": "identity", "If-None-Match": etag})
    assert other.status == 200 and await other.read() == body
    # A part of the file is cached like the whole; a refused range (an error) is not cached at all.
    part = await running.client.get(name, headers={"Accept-Encoding": "identity", "Range": "bytes=0-9"})
    assert part.status == 206 and await part.read() == body[:10]
    assert part.headers["Cache-Control"] == "public, no-cache" and part.headers["Vary"] == "Accept-Encoding"
    beyond = await running.client.get(name, headers={"Accept-Encoding": "identity",
                                                      "Range": f"bytes={len(body) + 10}-"})
    assert beyond.status == 416 and "Cache-Control" not in beyond.headers


async def test_after_a_lost_answer_try_again_waits_while_that_prompt_may_be_paid(shop):
    """M-Pesa's answer to the push is lost (the page is told 504), but the prompt reached the phone.
    Try Again does not push a second prompt for the order while the first may still be paid: it
    says so and counts down; the customer pays the first prompt and the page shows the receipt."""
    from tests.daraja_http import Sim

    running, page, errors = await shop(DARAJA_TIMEOUT_SECONDS="0.5", PAYMENT_TIMEOUT_SECONDS="60")
    await running.payments.daraja.tokens.get()  # (an OAuth request over 0.5 s would make the push a 503)
    errors.expect("status of 504 (Gateway Timeout)")
    errors.expect("status of 409 (Conflict)")
    await Sim(running.client, "/daraja").api("POST", "/faults", {"push": "timeout", "delay": 1.0})
    order = await create_order(running, amount=30)
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0708374149")  # interactive: waits for the PIN
    await page.click("#pay-button")
    await wait_state(page, "failed")
    await page.click("#retry-button")
    message = await wait_state(page, "limited")
    assert message.startswith("The last payment request may still be on the phone"), message
    assert await page.is_disabled("#retry-button")
    seconds = int(await page.get_attribute("#retry-countdown", "data-seconds"))
    assert 50 <= seconds <= 60, seconds
    phone = await open_phone(page, "254708374149")
    await enter_pin(phone)
    assert len(running.sim.prompts) == 1  # the one prompt; Try Again sent none
    await page.wait_for_url(ORDER_RECEIPT, timeout=20_000)
    assert "KES 30" in await page.inner_text("body")
