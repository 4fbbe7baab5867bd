"""Every scenario of the catalogue, through the real pages in real Chromium, against the real app.

A customer's view: the pay page, the virtual phone in a second page, the confirmation page. The
store behind the pages is checked too, so a page cannot show something the server does not hold.
"""

from __future__ import annotations

import asyncio
import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import checkout_link, create_order, screenshot_path, wait_state

pytestmark = pytest.mark.browser

CONFIRMATION = re.compile(r".*/confirmation\.html\?checkoutRequestId=ws_CO_\w+&paymentToken=[\w-]{43}$")
EXPIRED = "The payment request has expired"  # a no-answer, in the words of the phone


async def pay(running, page, phone: str, amount: int = 100) -> dict:
    """The shop's way: its backend creates an order of `amount`, the customer opens its checkout
    link, types the phone number and taps Pay. Returns the order."""
    order = await create_order(running, amount=amount)
    await page.goto(checkout_link(order))
    await page.wait_for_selector("#order-items li")
    await page.fill("#phone", phone)
    await page.click("#pay-button")
    return order


def checkout_id_of(url: str) -> str:
    return parse_qs(urlsplit(url).query)["checkoutRequestId"][0]


async def status_of(page) -> tuple[str | None, str]:
    state = await page.get_attribute("#payment-status", "data-state")
    return state, (await page.inner_text("#payment-status-text")).strip()


# A self-paying number's customer pays 3 s after the prompt: the page's "waiting" is seen before
# the receipt replaces it, however slow the machine. The STK query is put off past it, so the
# callback, with its receipt, is what settles the payment (a query's answer has no receipt).
PAYS_AFTER = {"SIMULATOR_AUTO_ANSWER_SECONDS": "3", "RECONCILE_AFTER_SECONDS": "30"}

# Set a mark on the pay page's document in the same step that sees it waiting: a mark set after the
# receipt came could be on a new document, and prove nothing.
MARK_THE_WAITING_PAGE = """() => {
  const waiting = document.querySelector('#payment-status[data-state="waiting"]');
  if (waiting) window.sameDocument = true;
  return Boolean(waiting);
}"""


async def test_successful_payment_lands_on_the_receipt_the_store_holds(shop):
    running, page, _ = await shop(**PAYS_AFTER)
    await page.goto("/pay.html")
    await page.wait_for_selector("#order-items li")
    await page.screenshot(path=screenshot_path("pay.png"), full_page=True)
    order = await create_order(running, amount=100)
    await page.goto(checkout_link(order))
    await page.fill("#phone", "0700000000")
    await page.click("#pay-button")
    assert "Check your phone" in await wait_state(page, "waiting")
    await page.wait_for_url(CONFIRMATION)
    tx = await running.payments.get(checkout_id_of(page.url))
    assert tx.status == "completed" and tx.receipt
    assert (await page.inner_text("#receipt-number")).strip() == tx.receipt
    assert (await page.inner_text("#receipt-amount")).strip() == "KES 100"
    assert (await page.inner_text("#receipt-phone")).strip() == "2547****0000"
    assert (await page.inner_text("#receipt-reference")).strip() == tx.account_reference
    assert "EAT" in await page.inner_text("#receipt-date")
    await page.screenshot(path=screenshot_path("confirmation.png"), full_page=True)


async def test_the_receipt_replaces_the_pay_page_in_place_and_stands_on_its_own(shop):
    """The live update shows the receipt without loading a new document (the pay page's document
    stays: a mark set on it survives), at the receipt's own URL: a reload shows the same receipt,
    rendered by the server, and Back leads to the pay page, loaded anew, which says the order is paid."""
    running, page, _ = await shop(**PAYS_AFTER)
    order = await pay(running, page, "0700000000")
    await page.wait_for_function(MARK_THE_WAITING_PAGE)
    await page.wait_for_url(CONFIRMATION)
    await page.wait_for_selector("#confirmation-completed")
    assert await page.evaluate("window.sameDocument") is True, "the receipt was loaded as a new document"
    tx = await running.payments.get(checkout_id_of(page.url))
    assert tx.status == "completed" and tx.receipt
    assert (await page.inner_text("#receipt-number")).strip() == tx.receipt
    assert (await page.inner_text("#receipt-amount")).strip() == "KES 100"
    assert await page.title() == "Receipt · Demo Shop"
    assert await page.evaluate("document.body.className") == "page-confirmation"
    assert await page.locator("#pay-form, #phone-frame").count() == 0, "nothing of the pay page is left"
    # The receipt page's own script ran (it is what refreshes a receipt number still to follow).
    await page.wait_for_function(
        "() => performance.getEntriesByType('resource').some((e) => e.name.includes('/confirmation-page.js'))")
    shown = await page.inner_text("#receipt")
    await page.reload()
    assert await page.evaluate("window.sameDocument") is None
    assert await page.inner_text("#receipt") == shown
    await page.go_back()
    await page.wait_for_selector("#page-notice:not([hidden])")
    assert (await page.inner_text("#page-notice-heading")).strip() == "This order is paid"
    assert page.url.endswith(checkout_link(order))
    assert not await page.is_visible("#pay-button")
    await page.go_forward()
    await page.wait_for_selector("#confirmation-completed")
    assert (await page.inner_text("#receipt-number")).strip() == tx.receipt


@pytest.mark.parametrize("phone, message", [
    ("0700000001", "Insufficient M-Pesa balance"),
    ("0700000002", "User cancelled transaction"),
    ("0700000003", "Wrong M-Pesa PIN entered"),
    ("0700000004", EXPIRED),
    ("0700000005", EXPIRED),
])
async def test_failed_payment_shows_the_reason_and_try_again(shop, phone, message):
    running, page, _ = await shop(SIMULATOR_PROMPT_LIFETIME_SECONDS="2")
    await pay(running, page, phone)
    assert await wait_state(page, "failed") == message
    assert await page.is_visible("#retry-button")
    # Try Again sends a new push to the number in the field (kept), and the page follows it.
    await page.click("#retry-button")
    await page.wait_for_function("() => document.querySelector('#payment-status').dataset.state !== 'failed'")
    assert await wait_state(page, "failed") == message
    assert len(running.sim.prompts) == 2
    assert await page.input_value("#phone") == phone
    assert await page.is_enabled("#retry-button")


async def test_push_refused_at_once_says_a_request_is_already_waiting(shop):
    running, page, errors = await shop()
    errors.expect("status of 409 (Conflict)")  # Chromium notes the refused push; the page handles it
    await pay(running, page, "0700000006")
    assert "already waiting on this phone" in await wait_state(page, "failed")
    assert await running.payments.store.count() == 0


async def test_lost_callback_still_completes_through_the_gateways_query(shop):
    running, page, _ = await shop()
    await pay(running, page, "0700000007")
    await page.wait_for_url(CONFIRMATION, timeout=20_000)
    tx = await running.payments.get(checkout_id_of(page.url))
    assert (tx.status, tx.settled_by, tx.receipt) == ("completed", "query", None)
    assert await page.is_visible("#confirmation-completed")
    assert "To follow" in await page.inner_text("#receipt")


async def test_duplicate_callback_makes_one_payment_with_one_receipt(shop):
    running, page, _ = await shop()
    await pay(running, page, "0700000008")
    await page.wait_for_url(CONFIRMATION)
    cid = checkout_id_of(page.url)
    for _ in range(100):
        if len(await running.payments.store.callback_log(cid)) == 2:
            break
        await asyncio.sleep(0.05)
    assert [e["outcome"] for e in await running.payments.store.callback_log(cid)] == ["applied", "duplicate"]
    assert await running.payments.store.count() == 1
    tx = await running.payments.get(cid)
    await page.reload()
    assert (await page.inner_text("#receipt-number")).strip() == tx.receipt


async def test_late_callback_completes_and_the_receipt_follows(shop):
    running, page, _ = await shop()
    await pay(running, page, "0700000009")
    await page.wait_for_url(CONFIRMATION, timeout=20_000)
    cid = checkout_id_of(page.url)
    # The query completed it first; the late callback then brings the receipt, and the page shows it.
    for _ in range(200):
        tx = await running.payments.get(cid)
        if tx.receipt:
            break
        await asyncio.sleep(0.05)
    assert tx.receipt == running.sim.prompts[cid].receipt
    await page.wait_for_function(
        "r => (document.querySelector('#receipt-number')?.textContent || '').trim() === r",
        arg=tx.receipt, timeout=20_000)


async def open_phone(page_context, msisdn: str):
    phone = await page_context.new_page()
    await phone.goto(f"/simulator/phone/{msisdn}")
    return phone


async def test_customer_enters_pin_on_the_virtual_phone_and_the_shop_page_completes(shop):
    running, page, errors = await shop()
    phone = errors.watch(await open_phone(page.context, "254708374149"))
    await pay(running, page, "0708374149", 250)
    await wait_state(page, "waiting")
    await phone.wait_for_selector("#prompt", state="visible")
    assert (await phone.inner_text("#prompt-text")).strip() == \
        "Do you want to pay Ksh 250 to Demo Shop? Enter M-PESA PIN"
    await phone.screenshot(path=screenshot_path("phone-prompt.png"), full_page=True)
    await phone.type("#pin", "12345")
    await phone.click("#pin-ok")
    await page.wait_for_url(CONFIRMATION)
    # The receipt number shows at once when the callback settled the payment; when the gateway's
    # query (RECONCILE_AFTER_SECONDS) settled it a moment before the callback landed, it follows.
    for _ in range(200):
        tx = await running.payments.get(checkout_id_of(page.url))
        if tx.receipt:
            break
        await asyncio.sleep(0.05)
    assert tx.status == "completed" and tx.receipt
    await page.wait_for_function(
        "r => (document.querySelector('#receipt-number')?.textContent || '').trim() === r",
        arg=tx.receipt, timeout=20_000)
    await phone.wait_for_selector(f"#sms >> text={tx.receipt} Confirmed")
    balance = running.sim.subscribers["254708374149"].balance
    assert f"{balance:,}" in await phone.inner_text("#balance")


async def test_pin_typed_on_the_keypad_works_too(shop):
    running, page, errors = await shop()
    phone = errors.watch(await open_phone(page.context, "254712345678"))
    await pay(running, page, "0712 345 678", 10)
    await phone.wait_for_selector("#prompt", state="visible")
    for digit in "12345":
        await phone.click(f".key[data-key='{digit}']")
    await phone.click("#pin-ok")
    await page.wait_for_url(CONFIRMATION)


@pytest.mark.parametrize("action, message, phone_says", [
    ("wrong-pin", "Wrong M-Pesa PIN entered", "Wrong PIN"),
    ("cancel", "User cancelled transaction", "cancelled"),
])
async def test_wrong_pin_or_cancel_on_the_phone_fails_the_payment(shop, action, message, phone_says):
    running, page, errors = await shop()
    phone = errors.watch(await open_phone(page.context, "254712345679"))
    await pay(running, page, "0712345679", 10)
    await phone.wait_for_selector("#prompt", state="visible")
    if action == "wrong-pin":
        await phone.type("#pin", "99999")
        await phone.press("#pin", "Enter")
    else:
        await phone.click("#pin-cancel")
    assert await wait_state(page, "failed") == message
    await phone.wait_for_selector(f"#sms >> text={phone_says}")
    await phone.wait_for_selector("#prompt", state="hidden")


async def test_unanswered_payment_is_watched_past_the_window_until_it_expires_then_try_again(shop):
    running, page, _ = await shop(CHECKOUT_POLL_TIMEOUT_SECONDS="3", CHECKOUT_POLL_INTERVAL_SECONDS="0.5",
                                  SIMULATOR_PROMPT_LIFETIME_SECONDS="6")
    await pay(running, page, "0712345670", 10)
    await wait_state(page, "waiting")
    # The window ends while the prompt can still be paid: the page keeps watching, and offers
    # no Try Again (a second prompt would risk paying twice).
    assert "Still waiting" in await wait_state(page, "watching", timeout=10_000)
    assert not await page.is_visible("#retry-button")
    assert await page.is_disabled("#pay-button")
    # The prompt expires on the phone: now nothing can be paid, and Try Again sends a new push.
    assert await wait_state(page, "failed", timeout=15_000) == EXPIRED
    assert await page.is_visible("#retry-button")
    await page.click("#retry-button")
    await wait_state(page, "waiting")
    assert len(running.sim.prompts) == 2
    assert await wait_state(page, "failed", timeout=15_000) == EXPIRED


async def test_invalid_phone_is_rejected_before_any_request(shop):
    running, page, _ = await shop(DEMO_CATALOGUE="0")  # the free-amount form: phone and amount
    posted = []
    page.on("request", lambda req: posted.append(req.url) if req.method == "POST" else None)
    await page.goto("/pay.html")
    await page.fill("#phone", "12345")
    await page.fill("#amount", "100")
    await page.click("#pay-button")
    assert (await page.inner_text("#phone-error")).strip() == "Invalid phone number format"
    assert await page.get_attribute("#phone", "aria-invalid") == "true"
    await page.fill("#phone", "0712345678")
    await page.fill("#amount", "150001")
    await page.click("#pay-button")
    assert (await page.inner_text("#amount-error")).strip() == "Amount must be between 1 and 150,000"
    await asyncio.sleep(0.3)
    assert posted == []
    assert running.sim.prompts == {}


async def test_pay_is_disabled_until_the_pages_script_runs(shop):
    """Before the script has run, a tap on an enabled Pay would submit the form natively: a GET of
    the page with the phone and amount in its address (the history, the server's logs)."""
    running, page, _ = await shop(DEMO_CATALOGUE="0")  # the free-amount form: nothing to load first
    release = asyncio.Event()

    async def slow_script(route: Any) -> None:
        await release.wait()
        await route.continue_()

    await page.route(re.compile(r".*/checkout-page\.js(\?.*)?$"), slow_script)
    try:
        await page.goto("/pay.html", wait_until="commit")
        await page.fill("#phone", "0712345678")
        await page.fill("#amount", "100")
        assert await page.is_disabled("#pay-button")
        await page.click("#pay-button", force=True)  # (force: tapped as it is, not once enabled)
        await asyncio.sleep(0.5)
    finally:
        release.set()
    await page.wait_for_selector("html.js-ready", state="attached")
    assert "phone" not in page.url, "the form was submitted natively"
    assert await page.is_enabled("#pay-button")


async def test_double_click_and_enter_send_one_push(shop):
    running, page, _ = await shop()
    pushes, orders = [], []
    page.on("request", lambda req: pushes.append(req.url) if req.url.endswith("/stkpush") else None)
    page.on("request", lambda req: orders.append(req.url) if req.url.endswith("/catalogue/orders") else None)
    await page.goto("/pay.html")  # the demo catalogue: Pay creates the order, then pushes for it
    await page.wait_for_selector("#order-items li")
    await page.fill("#phone", "0712345671")
    await page.dblclick("#pay-button")
    await page.press("#phone", "Enter")
    await wait_state(page, "waiting")
    await asyncio.sleep(0.5)
    assert len(orders) == 1
    assert len(pushes) == 1
    assert len(running.sim.prompts) == 1
    assert (await running.payments.store.fetch_one("SELECT COUNT(*) FROM orders"))[0] == 1


@pytest.mark.parametrize("path", ["/pay.html", "/simulator/phone/254708374149", "/simulator"])
async def test_pages_fit_a_phone_sized_screen(shop, path):
    running, page, _ = await shop()
    await page.set_viewport_size({"width": 375, "height": 812})
    await page.goto(path)
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 375, f"{path} scrolls sideways: {width}px wide"


async def test_pay_page_is_usable_with_the_keyboard_alone(shop):
    running, page, _ = await shop()
    await page.goto("/pay.html")
    await page.wait_for_selector("#order-items li")
    await page.focus("[data-item-id=lighting] [data-action=increase]")
    await page.keyboard.press("Enter")  # a quantity, from the keyboard
    assert (await page.inner_text("#pay-button")).strip() == "Pay KES 18,060"
    await page.focus("#phone")
    await page.keyboard.type("0700000000")
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "pay-button"
    await page.keyboard.press("Enter")
    await page.wait_for_url(CONFIRMATION)
    assert (await page.inner_text("#receipt-amount")).strip() == "KES 18,060"


async def test_every_field_has_a_label(shop):
    running, page, errors = await shop()
    for path in ("/pay.html", "/simulator/phone/254708374149", "/simulator/phone"):
        await page.goto(path)
        unlabelled = await page.evaluate("""() => [...document.querySelectorAll('input, select, textarea')]
            .filter(el => el.type !== 'hidden' && !(el.labels && el.labels.length) && !el.getAttribute('aria-label'))
            .map(el => el.id || el.name)""")
        assert unlabelled == [], f"{path}: {unlabelled}"


async def test_simulator_overview_lists_catalogue_and_pushes_with_their_callbacks(shop):
    running, page, _ = await shop()
    await pay(running, page, "0700000000")
    await page.wait_for_url(CONFIRMATION)
    cid = checkout_id_of(page.url)
    await page.goto("/simulator")
    assert await page.locator("#catalogue tr[data-msisdn]").count() == len(running.sim.catalogue)
    row = page.locator(f"#pushes tr[data-checkout-request-id='{cid}']")
    await row.wait_for()
    text = await row.inner_text()
    assert running.sim.prompts[cid].receipt in text
    assert "200" in text  # the gateway's answer to the callback


async def test_simulator_overview_shows_the_journal_without_secrets(shop):
    running, page, _ = await shop()
    await pay(running, page, "0700000000")
    await page.wait_for_url(CONFIRMATION)
    await page.goto("/simulator")
    push_row = page.locator("#journal tr[data-kind=request]", has_text="/mpesa/stkpush/v1/processrequest")
    await push_row.first.wait_for()
    await page.locator("#journal tr[data-kind=callback]").first.wait_for()
    text = await page.inner_text("#journal")
    assert "/oauth/v1/generate" in text
    for secret in [*running.sim.tokens, running.settings.consumer_secret, running.settings.passkey]:
        assert secret not in await page.content()


async def test_receipt_prints_without_buttons(shop):
    running, page, _ = await shop()
    await pay(running, page, "0700000000")
    await page.wait_for_url(CONFIRMATION)
    assert await page.is_visible("#print-button")
    await page.emulate_media(media="print")
    assert await page.is_visible("#receipt-number")
    assert not await page.is_visible("#print-button")


async def test_unanswered_prompt_counts_down_and_expires_on_the_phone(shop):
    running, page, errors = await shop(SIMULATOR_PROMPT_LIFETIME_SECONDS="4")
    phone = errors.watch(await open_phone(page.context, "254712345672"))
    await pay(running, page, "0712345672", 10)
    await phone.wait_for_selector("#prompt", state="visible")
    first = int(await phone.inner_text("#countdown"))
    await asyncio.sleep(1.5)
    assert int(await phone.inner_text("#countdown")) < first
    await phone.wait_for_selector("#sms >> text=The payment request has expired.", timeout=10_000)
    await phone.wait_for_selector("#prompt", state="hidden")
    # The shop says what the phone says of a prompt nobody answered.
    assert await wait_state(page, "failed") == EXPIRED
