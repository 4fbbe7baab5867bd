"""Abuse limits and enumeration: what a hostile page, script or crowd can and cannot do.

- the per-phone limit is reserved before the push goes out (30 at once cannot all pass), and a
  push whose answer was lost (504) counts, since its prompt may have reached the phone;
- a per-client limit on pushes, by socket address;
- JSON APIs refuse other content types (415) and origins CORS does not allow (403), so no other
  web page can fire pushes from its visitors' browsers;
- live-update streams are capped per client and in total;
- payment details need the browser's token; guessing ids is limited per client.
"""

from __future__ import annotations

import asyncio
import re

import pytest

from tests.conftest import Running

INTERACTIVE = "254712345678"


async def statuses(running: Running, phones: list[str]) -> list[int]:
    answers = await asyncio.gather(*(running.push(p, 10) for p in phones))
    return [a["http"] for a in answers]


async def test_concurrent_pushes_to_one_phone_cannot_all_pass_the_limit(start_app):
    running = await start_app(PUSH_LIMIT_PER_PHONE="5", SIMULATOR_LOCK_SUBSCRIBER="false")
    codes = await statuses(running, [INTERACTIVE] * 30)
    assert (codes.count(200), codes.count(429)) == (5, 25)
    assert len(running.sim.prompts) == 5  # the other 25 never reached Daraja


async def test_a_push_whose_answer_was_lost_counts_towards_the_phone_limit(start_app):
    running = await start_app(PUSH_LIMIT_PER_PHONE="2", DARAJA_TIMEOUT_SECONDS="0.3",
                              SIMULATOR_LOCK_SUBSCRIBER="false")
    await running.payments.daraja.tokens.get()  # (an OAuth request over 0.3 s would make the pushes 503s)
    await running.client.post("/simulator/api/faults", json={"count": 2, "push": "timeout", "delay": 1})
    assert await statuses(running, [INTERACTIVE, INTERACTIVE]) == [504, 504]  # both prompts reached the phone
    assert (await running.push(INTERACTIVE, 10))["http"] == 429


async def test_a_client_that_waits_the_retry_after_it_is_told_is_let_through(start_app):
    """Retry-After is rounded up: told 3 s when 3.4 s are left, the pay page's Try Again (enabled
    when its count-down ends) was refused a second time."""
    running = await start_app(PUSH_LIMIT_PER_PHONE="1", PUSH_LIMIT_WINDOW_SECONDS="4")
    assert (await running.push("0700000001", 10))["http"] == 200
    await asyncio.sleep(0.6)  # the window has about 3.4 s left
    resp = await running.client.post("/stkpush", json={"phone": "0700000001", "amount": 10})
    wait = int(resp.headers["Retry-After"])
    assert resp.status == 429 and 1 <= wait <= 4, (resp.status, wait)
    await asyncio.sleep(wait)
    assert (await running.push("0700000001", 10))["http"] == 200


async def test_pushes_from_one_client_are_limited_across_phones(start_app):
    running = await start_app(PUSH_LIMIT_PER_CLIENT="3")
    codes = [(await running.push(f"25471200{i:04d}", 10))["http"] for i in range(5)]
    assert codes == [200, 200, 200, 429, 429]
    resp = await running.client.post("/stkpush", json={"phone": "0712009999", "amount": 10})
    assert resp.status == 429 and int(resp.headers["Retry-After"]) >= 1
    assert (await resp.json())["message"].startswith("Too many payment requests from your connection")
    assert len(running.sim.prompts) == 3


async def test_per_client_limit_ignores_forwarding_headers_from_untrusted_peers(start_app):
    running = await start_app(PUSH_LIMIT_PER_CLIENT="1")
    first = await running.client.post("/stkpush", json={"phone": "0712000001", "amount": 10},
                                      headers={"X-Forwarded-For": "203.0.113.1"})
    second = await running.client.post("/stkpush", json={"phone": "0712000002", "amount": 10},
                                       headers={"X-Forwarded-For": "203.0.113.2"})
    assert (first.status, second.status) == (200, 429)  # both are 127.0.0.1, whatever they claim


async def test_per_client_limit_believes_a_trusted_proxy(start_app):
    running = await start_app(PUSH_LIMIT_PER_CLIENT="1", TRUSTED_PROXIES="127.0.0.1")
    codes = []
    for i, client in enumerate(["203.0.113.1", "203.0.113.2", "203.0.113.1"]):
        resp = await running.client.post("/stkpush", json={"phone": f"071200000{i}", "amount": 10},
                                         headers={"X-Forwarded-For": client})
        codes.append(resp.status)
    assert codes == [200, 200, 429]


@pytest.mark.parametrize("path", ["/stkpush", "/stkpush/status"])
@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data"])
async def test_json_apis_refuse_other_content_types_with_415(running, path, content_type):
    """A form or text/plain POST is what another site can send without asking CORS first."""
    resp = await running.client.post(path, data=b'{"phone": "0712345678", "amount": 10}',
                                     headers={"Content-Type": content_type})
    assert (resp.status, (await resp.json())["message"]) == (415, "Content-Type must be application/json")
    assert running.sim.prompts == {}


@pytest.mark.parametrize("path", ["/stkpush", "/stkpush/status"])
async def test_json_apis_refuse_origins_cors_does_not_allow(running, path):
    resp = await running.client.post(path, json={"phone": "0712345678", "amount": 10},
                                     headers={"Origin": "https://evil.example"})
    assert (resp.status, (await resp.json())["message"]) == (403, "Cross-origin request refused")
    assert running.sim.prompts == {}


async def test_json_apis_accept_the_sites_own_origin_and_the_front_end(start_app):
    running = await start_app(FRONTEND_URL="https://shop.example.com")
    own = f"http://{running.client.host}:{running.client.port}"
    for phone, origin in (("0700000000", own), ("0700000001", "https://shop.example.com")):
        resp = await running.client.post("/stkpush", json={"phone": phone, "amount": 10},
                                          headers={"Origin": origin})
        assert resp.status == 200, origin
    preflight = await running.client.options("/stkpush", headers={
        "Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type"})
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"


async def test_the_gateways_own_pages_get_no_cors_headers_and_other_origins_do(start_app):
    """CORS headers are for other origins: a request from the gateway's own page (a browser sends
    its Origin with every POST) is answered without them, even when FRONTEND_URL is that origin."""
    running = await start_app(FRONTEND_URL="http://shop.example.com")
    same = await running.client.post("/stkpush", json={"phone": "0700000000", "amount": 10},
                                     headers={"Host": "shop.example.com", "Origin": "http://shop.example.com"})
    assert same.status == 200
    assert not [h for h in same.headers if h.lower().startswith("access-control-")]
    # The same front end, seen from another address (the gateway's own): a cross-origin request.
    other = await running.client.post("/stkpush", json={"phone": "0700000001", "amount": 10},
                                      headers={"Origin": "http://shop.example.com"})
    assert other.status == 200 and other.headers["Access-Control-Allow-Origin"] == "http://shop.example.com"


async def test_behind_a_trusted_proxy_the_origin_is_the_one_the_proxy_was_asked_at(start_app):
    """Behind a proxy terminating https, the gateway's own page sends `Origin: https://shop…`; the
    gateway hears http from the proxy. The answer is no CORS answer all the same: it is judged by
    the scheme and host the proxy forwarded (X-Forwarded-Proto, Host), as the handler sees them."""
    running = await start_app(FRONTEND_URL="https://shop.example.com", TRUSTED_PROXIES="127.0.0.1/32")
    forwarded = {"Host": "shop.example.com", "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https"}
    same = await running.client.post("/stkpush", json={"phone": "0700000000", "amount": 10},
                                     headers={**forwarded, "Origin": "https://shop.example.com"})
    assert same.status == 200
    assert not [h for h in same.headers if h.lower().startswith("access-control-")]
    # Sent over plain http through the same proxy: another origin, so a cross-origin answer.
    other = await running.client.post("/stkpush", json={"phone": "0700000001", "amount": 10},
                                      headers={**forwarded, "X-Forwarded-Proto": "http",
                                               "Origin": "https://shop.example.com"})
    assert other.status == 200 and other.headers["Access-Control-Allow-Origin"] == "https://shop.example.com"


async def test_a_pay_page_on_the_front_end_may_send_idempotency_keys_and_read_retry_after(start_app):
    running = await start_app(FRONTEND_URL="https://shop.example.com")
    for path, method in (("/stkpush", "POST"), ("/catalogue/orders", "POST"), ("/catalogue", "GET"),
                         ("/checkout/ord_x", "GET"), ("/checkout/ord_x/status", "POST"),
                         ("/checkout/ord_x/events", "GET")):
        preflight = await running.client.options(path, headers={
            "Origin": "https://shop.example.com", "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "content-type, idempotency-key"})
        assert preflight.status == 200, path
        assert preflight.headers["Access-Control-Allow-Origin"] == "https://shop.example.com", path
        assert "IDEMPOTENCY-KEY" in preflight.headers["Access-Control-Allow-Headers"].upper(), path
    resp = await running.client.post("/stkpush", json={"phone": "0700000000", "amount": 10},
                                     headers={"Origin": "https://shop.example.com", "Idempotency-Key": "k-1"})
    assert resp.status == 200
    assert "RETRY-AFTER" in resp.headers["Access-Control-Expose-Headers"].upper()
    # The shop's own backend calls /orders with its API key: no browser may, from any origin.
    refused = await running.client.options("/orders", headers={
        "Origin": "https://shop.example.com", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in refused.headers


async def test_live_update_streams_are_capped_per_client(start_app):
    running = await start_app(STREAM_LIMIT_PER_CLIENT="2")
    cid = (await running.push(INTERACTIVE, 10))["checkoutRequestId"]
    streams = [await running.client.get(f"/stkpush/{cid}/events") for _ in range(2)]
    assert [s.status for s in streams] == [200, 200]
    refused = await running.client.get(f"/stkpush/{cid}/events")
    assert refused.status == 429 and refused.headers["Retry-After"]
    streams[0].close()
    await asyncio.sleep(5.5)  # the server notices the closed stream at its next wake-up
    again = await running.client.get(f"/stkpush/{cid}/events")
    assert again.status == 200
    for s in (streams[1], again):
        s.close()


async def test_live_update_streams_are_capped_in_total(start_app):
    running = await start_app(STREAM_LIMIT_PER_CLIENT="100", STREAM_LIMIT_TOTAL="3")
    cid = (await running.push(INTERACTIVE, 10))["checkoutRequestId"]
    codes = [(await running.client.get(f"/stkpush/{cid}/events")).status for _ in range(4)]
    assert codes == [200, 200, 200, 429]


# -- enumeration -------------------------------------------------------------------------------

DETAILS = ("amount", "phoneMasked", "accountReference", "description")


async def test_status_shows_details_only_with_the_payment_token(running):
    pushed = await running.push("0700000000", 321, accountReference="SECRET-REF", description="Kitenge")
    cid = pushed["checkoutRequestId"]
    done = await running.wait_status(cid, "completed")
    assert (done["amount"], done["accountReference"], done["description"]) == (321, "SECRET-REF", "Kitenge")
    for token in (None, "", "wrong-token", pushed["paymentToken"][:-1] + "x", 12345):
        body = {"checkoutRequestId": cid} if token is None else {"checkoutRequestId": cid, "paymentToken": token}
        resp = await running.client.post("/stkpush/status", json=body)
        answer = await resp.json()
        # The guide's contract still works with the id alone: status, message and the receipt.
        assert (resp.status, answer["status"], answer["transaction_id"]) == (200, "completed", done["transaction_id"])
        assert not set(DETAILS) & set(answer), token


async def test_events_show_details_only_with_the_payment_token(running):
    pushed = await running.push("0700000000", 321)
    cid = pushed["checkoutRequestId"]
    await running.wait_status(cid, "completed")
    plain = await (await running.client.get(f"/stkpush/{cid}/events")).text()
    detailed = await (await running.client.get(f"/stkpush/{cid}/events?paymentToken={pushed['paymentToken']}")).text()
    assert '"status": "completed"' in plain and '"amount"' not in plain
    assert '"amount": 321' in detailed


async def test_confirmation_page_without_the_token_shows_no_details_and_masks_the_phone(running):
    pushed = await running.push("0700000000", 321, accountReference="SECRET-REF", description="Kitenge")
    cid = pushed["checkoutRequestId"]
    done = await running.wait_status(cid, "completed")
    html = shown(await (await running.client.get(f"/confirmation.html?checkoutRequestId={cid}")).text())
    assert "Payment received" in html and done["transaction_id"] in html
    # The amount as a number of its own (the Request ID's time may hold the digits 321 by chance).
    assert not re.search(r"(?<!\d)321(?!\d)", html) and "SECRET-REF" not in html and "Kitenge" not in html
    assert "700000000" not in html  # not even inside the Request ID
    assert "shown only on the device that made this payment" in html
    full = shown(await (await running.client.get(
        f"/confirmation.html?checkoutRequestId={cid}&paymentToken={pushed['paymentToken']}")).text())
    assert "KES 321" in full and "SECRET-REF" in full and "Kitenge" in full
    assert "700000000" not in full  # the receipt shows 2547****0000, and the Request ID masks it too
    assert re.search(r"ws_CO_\d+\*\*\*\*0000", full)


def shown(html: str) -> str:
    """The page without its data block (which holds the id the visitor put in the URL, for polling)."""
    return re.sub(r'<script type="application/json".*?</script>', "", html, flags=re.S)


async def test_guessing_ids_is_limited_per_client(start_app):
    running = await start_app(LOOKUP_LIMIT_PER_CLIENT="5", LOOKUP_LIMIT_WINDOW_SECONDS="60")
    known = (await running.push("0700000000", 10))["checkoutRequestId"]
    guesses = [f"ws_CO_0112202612000{ms}712345678" for ms in range(8)]
    codes = [(await running.status(g))["http"] for g in guesses]
    assert codes == [404] * 5 + [429] * 3
    # At the limit even a hit is refused, or the limit would only hide misses.
    resp = await running.client.post("/stkpush/status", json={"checkoutRequestId": known})
    assert resp.status == 429 and 1 <= int(resp.headers["Retry-After"]) <= 60
    assert (await running.client.get(f"/stkpush/{guesses[0]}/events")).status == 429
    page = await running.client.get(f"/confirmation.html?checkoutRequestId={guesses[0]}")
    assert page.status == 429 and "Please wait a moment" in await page.text()


async def test_lookup_limit_zero_turns_it_off(start_app):
    running = await start_app(LOOKUP_LIMIT_PER_CLIENT="0")
    codes = {(await running.status(f"ws_CO_guess{i}"))["http"] for i in range(60)}
    assert codes == {404}


async def test_lookups_sent_all_at_once_cannot_outrun_the_limit(start_app):
    running = await start_app(LOOKUP_LIMIT_PER_CLIENT="5")
    answers = await asyncio.gather(*(running.status(f"ws_CO_0112202612000{i}712345678") for i in range(100)))
    codes = [a["http"] for a in answers]
    assert (codes.count(404), codes.count(429)) == (5, 95)


def test_browsers_leaving_streams_at_once_are_not_errors(tmp_path):
    """A closed tab is not a server error: no traceback in the log, and the slots are free again."""
    import socket
    import time

    import requests

    from tests.gateway.test_restart_durability import gateway_env, start_server, stop_server
    env = gateway_env(tmp_path)
    base = f"http://127.0.0.1:{env['PORT']}"
    proc = start_server(env)
    try:
        cid = requests.post(f"{base}/stkpush", json={"phone": INTERACTIVE, "amount": 10}, timeout=10).json()[
            "checkoutRequestId"]
        for _ in range(20):
            with socket.create_connection(("127.0.0.1", int(env["PORT"]))) as sock:
                sock.sendall(f"GET /stkpush/{cid}/events HTTP/1.1\r\nHost: x\r\n\r\n".encode())
        # The 20 that left hold no slot (each is freed at the handler's next 5 s wake-up at the
        # latest): all 10 of this client's slots open again.
        held: list[requests.Response] = []
        deadline = time.monotonic() + 10
        while len(held) < 10 and time.monotonic() < deadline:
            stream = requests.get(f"{base}/stkpush/{cid}/events", stream=True, timeout=5)
            if stream.status_code == 200:
                held.append(stream)
            else:
                stream.close()
                time.sleep(0.3)
        opened = len(held)
        for stream in held:
            stream.close()
        assert opened == 10
    finally:
        output = stop_server(proc)
    assert "Traceback" not in output and "unhandled error" not in output
