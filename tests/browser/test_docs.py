"""/docs in real Chromium: Swagger UI, served from the gateway itself, renders the gateway's document
under the site's Content-Security-Policy (no console error, no request to another host)."""

from __future__ import annotations

from typing import Any

import pytest

from gateway.openapi import document
from tests.browser.conftest import screenshot_path

pytestmark = pytest.mark.browser


async def test_docs_renders_every_operation_under_the_csp(shop: Any) -> None:
    running, page, errors = await shop()
    base = str(running.client.make_url(""))
    requested: list[str] = []
    page.on("request", lambda request: requested.append(request.url))
    await page.goto("/docs")
    await page.wait_for_selector(".opblock-summary", state="attached")
    operations = sum(1 for item in document()["paths"].values() for method in item)
    assert await page.locator(".opblock").count() == operations
    assert await page.locator(".opblock-summary-path[data-path='/stkpush']").count() == 1
    await page.screenshot(path=screenshot_path("docs.png"), full_page=False)
    assert requested and all(url.startswith(base) or url.startswith("data:") for url in requested), requested
    assert errors.unexpected() == []
