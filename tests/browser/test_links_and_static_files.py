"""The pay and receipt pages' addresses and files, in real Chromium against the real app: absurd pay
and receipt links answered without a 5xx and without the junk shown; only the build's static files
served, versioned, compressed only for a client that accepts it, and cached for a year only at their
own version. (Apart from test_order_checkout.py, whose checkouts take longer, so that the test
workers share the browser tests evenly.)
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.browser.conftest import checkout_link, create_order
from tests.browser.test_order_checkout import ORDER_RECEIPT

pytestmark = pytest.mark.browser


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
