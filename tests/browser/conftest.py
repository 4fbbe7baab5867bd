"""Browser fixtures: Debian's Chromium driven by Playwright, against the real app in this process
(so a test can compare what a page shows with what the store holds)."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOTS = ROOT / "test-artifacts" / "screenshots"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# Settings for the browser suite: scripted answers after 0.5 s, polling every 0.5 s.
BROWSER_ENV = {
    "SIMULATOR_AUTO_ANSWER_SECONDS": "0.5",
    "SIMULATOR_CALLBACK_DELAY_SECONDS": "0.1",
    "SIMULATOR_PROMPT_LIFETIME_SECONDS": "20",
    "SIMULATOR_LATE_CALLBACK_SECONDS": "2",
    "RECONCILE_AFTER_SECONDS": "1",
    "CHECKOUT_POLL_INTERVAL_SECONDS": "0.5",
    "CHECKOUT_POLL_TIMEOUT_SECONDS": "30",
    "SHOP_API_KEY": "browser-tests-shop-key-0123456789",
}


def chromium_path() -> str | None:
    for candidate in (os.environ.get("CHROMIUM_PATH"), "/usr/bin/chromium", "/usr/bin/chromium-browser",
                      shutil.which("chromium"), shutil.which("chromium-browser")):
        if candidate and Path(candidate).exists():
            return candidate
    return None


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    executable = chromium_path()
    if executable is None:
        if os.environ.get("CI"):
            pytest.fail("Chromium is not installed (apt-get install chromium); CI must run the browser tests")
        pytest.skip("Chromium not found: install it (Debian/Ubuntu: apt-get install chromium) or set CHROMIUM_PATH")
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


class ConsoleErrors(list):
    """Errors pages wrote to the console; a test fails on any it did not declare with `expect`."""

    def __init__(self) -> None:
        super().__init__()
        self.expected: list[str] = []

    def watch(self, page: Any) -> Any:
        page.on("console", lambda msg: self.append(f"{page.url}: {msg.text}") if msg.type == "error" else None)
        page.on("pageerror", lambda exc: self.append(f"{page.url}: {exc}"))
        return page

    def expect(self, fragment: str) -> None:
        """An error the test provokes on purpose, e.g. Chromium's note of an HTTP 409 answer."""
        self.expected.append(fragment)

    def unexpected(self) -> list[str]:
        return [e for e in self if not any(fragment in e for fragment in self.expected)]


@pytest.fixture
async def shop(start_app: Any, browser: Any) -> AsyncIterator[Any]:
    """`await shop(**settings)` → (running app, a new page on it, console errors list)."""
    contexts = []
    errors = ConsoleErrors()

    async def open_shop(**overrides: str) -> tuple[Any, Any, ConsoleErrors]:
        running = await start_app(**{**BROWSER_ENV, **overrides})
        context = await browser.new_context(base_url=str(running.client.make_url("")),
                                            viewport={"width": 1280, "height": 860})
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = errors.watch(await context.new_page())
        return running, page, errors

    yield open_shop
    for context in contexts:
        await context.close()
    assert errors.unexpected() == [], f"console errors: {errors.unexpected()}"


def screenshot_path(name: str) -> str:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return str(SCREENSHOTS / name)


async def create_order(running: Any, **body: Any) -> dict[str, Any]:
    """POST /orders as the shop's backend does (SHOP_API_KEY of BROWSER_ENV); returns the 201 body."""
    body.setdefault("reference", "INV-1042")
    resp = await running.client.post("/orders", json=body,
                                     headers={"Authorization": f"Bearer {running.settings.shop_api_key}"})
    assert resp.status == 201, await resp.text()
    return dict(await resp.json())


def checkout_link(order: dict[str, Any]) -> str:
    """The order's checkout URL as a path and query (pages run against the test server's address)."""
    parts = urlsplit(order["checkoutUrl"])
    return f"{parts.path}?{parts.query}"


# The state and its words read in one step in the page: read apart, a payment that settles in
# between (a self-paying test number) has already replaced the pay page with its receipt, and the
# words are no longer there to read.
STATUS_IN = """state => {
  const status = document.querySelector(`#payment-status[data-state="${state}"]`);
  return status && { text: document.querySelector("#payment-status-text").innerText };
}"""


async def wait_state(page: Any, state: str, timeout: float = 15_000) -> str:
    """Wait until the pay page's status is `state`; its words then."""
    found = await page.wait_for_function(STATUS_IN, arg=state, timeout=timeout)
    return str((await found.json_value())["text"]).strip()
