"""Every bad input gets a clear error and changes nothing; Daraja down, slow or refusing is reported
as such; secrets never leave the process."""

from __future__ import annotations

import asyncio
import logging

import pytest
from aiohttp import web

from simulator.app import create_standalone_app
from simulator.settings import load_simulator_settings
from tests.conftest import app_env, free_port

INVALID_PHONE = {"success": False, "message": "Invalid phone number format", "field": "phone"}
INVALID_AMOUNT = {"success": False, "message": "Amount must be between 1 and 150,000", "field": "amount"}


async def _post_raw(running, path, data, content_type="application/json"):
    resp = await running.client.post(path, data=data, headers={"Content-Type": content_type})
    return resp.status, await resp.json()


@pytest.mark.parametrize("path", ["/stkpush", "/stkpush/status"])
@pytest.mark.parametrize("data, message", [
    (b"{not json", "Request body must be valid JSON"),
    (b"", "Request body must be valid JSON"),
    (b"\xff\xfe", "Request body must be valid JSON"),
    (b"[1, 2]", "Request body must be a JSON object"),
    (b'"phone"', "Request body must be a JSON object"),
    (b"null", "Request body must be a JSON object"),
])
async def test_malformed_bodies_get_400_and_store_nothing(running, path, data, message):
    status, body = await _post_raw(running, path, data)
    assert (status, body) == (400, {"success": False, "message": message})
    assert await running.payments.store.count() == 0


@pytest.mark.parametrize("payload, expected", [
    ({"amount": 100}, INVALID_PHONE),
    ({"phone": None, "amount": 100}, INVALID_PHONE),
    ({"phone": 712345678, "amount": 100}, INVALID_PHONE),
    ({"phone": "123456789", "amount": 100}, INVALID_PHONE),
    ({"phone": ["0712345678"], "amount": 100}, INVALID_PHONE),
    ({"phone": "0712345678"}, INVALID_AMOUNT),
    ({"phone": "0712345678", "amount": 0}, INVALID_AMOUNT),
    ({"phone": "0712345678", "amount": 150001}, INVALID_AMOUNT),
    ({"phone": "0712345678", "amount": 99.5}, INVALID_AMOUNT),
    ({"phone": "0712345678", "amount": "ten"}, INVALID_AMOUNT),
    ({"phone": "0712345678", "amount": True}, INVALID_AMOUNT),
    ({"phone": "0712345678", "amount": {"value": 1}}, INVALID_AMOUNT),
    ({"phone": "0712345678", "amount": 10, "accountReference": 12345},
     {"success": False, "message": "accountReference must be a string", "field": "accountReference"}),
    ({"phone": "0712345678", "amount": 10, "description": ["x"]},
     {"success": False, "message": "description must be a string", "field": "description"}),
])
async def test_stkpush_rejects_bad_fields_before_calling_daraja(running, payload, expected):
    resp = await running.client.post("/stkpush", json=payload)
    assert (resp.status, await resp.json()) == (400, expected)
    assert running.sim.prompts == {}  # Daraja was never asked
    assert await running.payments.store.count() == 0


async def test_amount_cap_is_a_setting(start_app):
    running = await start_app(MPESA_MAX_AMOUNT="70000")
    rejected = await running.push("0712345678", 70001)
    assert (rejected["http"], rejected["message"]) == (400, "Amount must be between 1 and 70,000")
    assert (await running.push("0712345678", 70000))["success"] is True


async def test_long_reference_and_description_are_trimmed_to_darajas_limits(running):
    pushed = await running.push("0712345678", 10, accountReference="CART_1234567890_LONG",
                                description="A very long checkout description")
    assert pushed["success"] is True
    prompt = running.sim.prompts[pushed["checkoutRequestId"]]
    assert prompt.account_reference == "CART_1234567"
    assert prompt.description == "A very long c"


async def test_huge_body_gets_413_and_stores_nothing(running):
    huge = b'{"phone": "0712345678", "amount": 1, "description": "' + b"x" * 200_000 + b'"}'
    for path in ("/stkpush", "/stkpush/status", running.settings.callback_path):
        resp = await running.client.post(path, data=huge, headers={"Content-Type": "application/json"})
        assert resp.status == 413, path
        assert (await resp.json())["success"] is False
    assert await running.payments.store.count() == 0


@pytest.mark.parametrize("payload, status, message", [
    ({}, 400, "checkoutRequestId is required"),
    ({"checkoutRequestId": ""}, 400, "checkoutRequestId is required"),
    ({"checkoutRequestId": 123}, 400, "checkoutRequestId is required"),
    ({"checkoutRequestId": "ws_CO_nope"}, 404, "Transaction not found"),
    ({"checkoutRequestId": "x" * 5000}, 404, "Transaction not found"),
])
async def test_status_rejects_missing_or_unknown_ids(running, payload, status, message):
    resp = await running.client.post("/stkpush/status", json=payload)
    body = await resp.json()
    assert (resp.status, body["success"], body["message"]) == (status, False, message)


async def test_wrong_methods_and_unknown_paths_answer_json(running):
    resp = await running.client.get("/stkpush")
    assert resp.status == 405 and (await resp.json())["success"] is False
    resp = await running.client.get("/no/such/page")
    assert (resp.status, await resp.json()) == (404, {"success": False, "message": "Not found"})


@pytest.mark.parametrize("method, path", [("PUT", "/stkpush"), ("TRACE", "/health"), ("DELETE", "/orders")])
async def test_a_wrong_method_is_answered_with_the_allowed_ones_in_allow(running, method, path):
    """RFC 9110: a 405 carries Allow, the methods the resource takes (the JSON body lists them too)."""
    resp = await running.client.request(method, path)
    body = await resp.json()
    assert resp.status == 405 and body["allowed"]
    assert resp.headers["Allow"].split(", ") == body["allowed"]


async def test_health_reports_service_mode_and_database(running):
    resp = await running.client.get("/health")
    body = await resp.json()
    assert resp.status == 200
    assert body["status"] == "ok" and body["database"] == "ok" and body["mode"] == "simulator"
    assert body["service"] == "Demo Shop M-Pesa Payment Server"
    assert body["timestamp"].endswith("Z")


# -- the callback endpoint ---------------------------------------------------------------------

async def test_malformed_callbacks_get_400_and_change_nothing(running):
    pushed = await running.push("254712345678", 10)
    cid = pushed["checkoutRequestId"]
    bad_bodies = [
        b"not json",
        b"[]",
        b'{"Body": {}}',
        b'{"Body": {"stkCallback": {"CheckoutRequestID": "%s", "ResultCode": 0}}}' % cid.encode(),
        b'{"Body": {"stkCallback": {"MerchantRequestID": "m", "CheckoutRequestID": "%s", "ResultCode": 0,'
        b' "ResultDesc": "ok"}}}' % cid.encode(),  # success without a receipt
        b'{"Body": {"stkCallback": {"MerchantRequestID": "m", "CheckoutRequestID": "%s", "ResultCode": null}}}'
        % cid.encode(),
    ]
    for data in bad_bodies:
        resp = await running.client.post(running.settings.callback_path, data=data,
                                         headers={"Content-Type": "application/json"})
        assert resp.status == 400, data
        assert (await resp.json())["ResultCode"] == 1
    assert (await running.status(cid))["status"] == "pending"


async def test_callback_for_unknown_id_is_acknowledged_logged_and_creates_nothing(running):
    body = {"Body": {"stkCallback": {"MerchantRequestID": "1-2-3", "CheckoutRequestID": "ws_CO_unknown",
                                     "ResultCode": 0, "ResultDesc": "The service request is processed successfully.",
                                     "CallbackMetadata": {"Item": [
                                         {"Name": "MpesaReceiptNumber", "Value": "UKQ1AAAAAA"},
                                         {"Name": "Amount", "Value": 5}]}}}}
    resp = await running.client.post(running.settings.callback_path, json=body)
    assert (resp.status, await resp.json()) == (200, {"ResultCode": 0, "ResultDesc": "Accepted"})
    assert await running.payments.store.count() == 0
    logged = await running.payments.store.callback_log("ws_CO_unknown")
    assert [entry["outcome"] for entry in logged] == ["unknown"]
    assert "UKQ1AAAAAA" in logged[0]["body"]  # kept: the money trail is never thrown away


async def test_forged_callback_with_the_wrong_merchant_request_id_changes_nothing(running):
    pushed = await running.push("254712345678", 10)
    cid = pushed["checkoutRequestId"]
    forged = {"Body": {"stkCallback": {
        "MerchantRequestID": "forged-1", "CheckoutRequestID": cid, "ResultCode": 0,
        "ResultDesc": "The service request is processed successfully.",
        "CallbackMetadata": {"Item": [{"Name": "MpesaReceiptNumber", "Value": "FAKE000000"}]}}}}
    resp = await running.client.post(running.settings.callback_path, json=forged)
    assert resp.status == 200
    assert (await running.status(cid))["status"] == "pending"
    assert [e["outcome"] for e in await running.payments.store.callback_log(cid)] == ["unverified"]


async def test_replayed_callback_changes_nothing(running):
    pushed = await running.push("0700000000", 100)
    cid = pushed["checkoutRequestId"]
    done = await running.wait_status(cid, "completed")
    tx = await running.payments.get(cid)
    for _ in range(3):
        resp = await running.client.post(running.settings.callback_path, data=tx.raw_callback,
                                         headers={"Content-Type": "application/json"})
        assert (resp.status, await resp.json()) == (200, {"ResultCode": 0, "ResultDesc": "Accepted"})
    after = await running.payments.get(cid)
    assert (after.status, after.receipt, after.updated_at) == ("completed", done["transaction_id"], tx.updated_at)


# -- Daraja down, slow, or refusing ------------------------------------------------------------

async def test_daraja_unreachable_answers_503_and_stores_nothing(start_app):
    running = await start_app(MPESA_BASE_URL=f"http://127.0.0.1:{free_port()}", DARAJA_TIMEOUT_SECONDS="2")
    pushed = await running.push("0700000000", 100)
    assert (pushed["http"], pushed["success"]) == (503, False)
    assert pushed["message"] == "M-Pesa is not reachable right now. Please try again in a moment."
    assert await running.payments.store.count() == 0


async def test_slow_daraja_times_out_with_503(start_app, aiohttp_server):
    async def hang(request):
        await asyncio.sleep(5)
        return web.json_response({})

    slow = web.Application()
    slow.router.add_route("*", "/{tail:.*}", hang)
    server = await aiohttp_server(slow)
    running = await start_app(MPESA_BASE_URL=str(server.make_url("")), DARAJA_TIMEOUT_SECONDS="0.3")
    started = asyncio.get_running_loop().time()
    pushed = await running.push("0700000000", 100)
    assert pushed["http"] == 503
    assert asyncio.get_running_loop().time() - started < 2


async def test_daraja_answering_html_500_is_unavailable_not_a_crash(start_app, aiohttp_server):
    async def broken(request):
        return web.Response(status=500, text="<html>Internal error</html>", content_type="text/html")

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", broken)
    server = await aiohttp_server(app)
    running = await start_app(MPESA_BASE_URL=str(server.make_url("")))
    pushed = await running.push("0700000000", 100)
    assert (pushed["http"], pushed["success"]) == (503, False)


async def test_wrong_consumer_secret_is_a_502_that_never_shows_the_secret(start_app, aiohttp_server, tmp_path,
                                                                           caplog):
    caplog.set_level(logging.DEBUG)
    daraja = create_standalone_app(load_simulator_settings(app_env(tmp_path, MPESA_CONSUMER_KEY="real-key",
                                                                    MPESA_CONSUMER_SECRET="real-secret")))
    server = await aiohttp_server(daraja)
    secret = "Sup3rS3cretValue-xyz"
    running = await start_app(MPESA_BASE_URL=str(server.make_url("")), MPESA_CONSUMER_KEY="real-key",
                              MPESA_CONSUMER_SECRET=secret)
    pushed = await running.push("0700000000", 100)
    assert pushed["http"] == 502
    assert pushed["message"] == "Payment service is not configured correctly. Please contact the shop."
    assert secret not in str(pushed)
    assert secret not in caplog.text


async def test_no_secret_or_token_appears_in_logs_or_responses_during_a_payment(start_app, caplog):
    caplog.set_level(logging.DEBUG)
    running = await start_app(MPESA_CONSUMER_KEY="key-abc", MPESA_CONSUMER_SECRET="secret-Zq9w8e7r",
                              MPESA_PASSKEY="passkey-Lk2j3h4g5f")
    running.sim.merchants["174379"] = "passkey-Lk2j3h4g5f"
    pushed = await running.push("0700000000", 100)
    done = await running.wait_status(pushed["checkoutRequestId"], "completed")
    health = await (await running.client.get("/health")).text()
    tokens = list(running.sim.tokens)
    assert tokens
    assert pushed["paymentToken"]  # handed to the browser once, in the push answer, and never logged
    for secret in ["secret-Zq9w8e7r", "passkey-Lk2j3h4g5f", *tokens]:
        assert secret not in caplog.text
        assert secret not in str(pushed) + str(done) + health
    assert pushed["paymentToken"] not in caplog.text


async def test_every_answer_carries_security_headers(running):
    for path in ("/health", "/pay.html", "/no/such/page"):
        resp = await running.client.get(path)
        assert resp.headers["X-Frame-Options"] == "SAMEORIGIN", path
        assert "frame-ancestors 'self'" in resp.headers["Content-Security-Policy"], path
        assert resp.headers["X-Content-Type-Options"] == "nosniff", path


async def test_a_live_update_stream_carries_security_headers_too(running):
    """A stream's headers go out before its handler returns: they are set as the answer is prepared."""
    pushed = await running.push("0700000000", 10)
    async with running.client.get(f"/stkpush/{pushed['checkoutRequestId']}/events") as resp:
        assert resp.headers["Content-Type"].startswith("text/event-stream")
        assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert resp.headers["X-Content-Type-Options"] == "nosniff"


async def test_too_many_pushes_to_one_phone_get_429_with_retry_after(start_app):
    running = await start_app(PUSH_LIMIT_PER_PHONE="2", PUSH_LIMIT_WINDOW_SECONDS="60")
    for _ in range(2):
        pushed = await running.push("254700000002", 10)  # cancels at once, so no lock gets in the way
        assert pushed["success"] is True
        await running.wait_status(pushed["checkoutRequestId"], "failed")
    resp = await running.client.post("/stkpush", json={"phone": "0700000002", "amount": 10})
    assert resp.status == 429
    assert (await resp.json())["message"].startswith("Too many payment requests to this phone")
    assert 1 <= int(resp.headers["Retry-After"]) <= 60
    assert len(running.sim.prompts) == 2  # the third never reached Daraja
    assert (await running.push("0700000000", 10))["success"] is True  # other phones are not held up


async def test_refused_pushes_do_not_count_towards_the_phone_limit(start_app):
    running = await start_app(PUSH_LIMIT_PER_PHONE="2", PUSH_LIMIT_WINDOW_SECONDS="60")
    first = await running.push("0712345678", 10)  # interactive: the prompt stays open
    assert first["success"] is True
    for _ in range(5):  # Daraja refuses these (a prompt is already open): nothing reached the phone
        assert (await running.push("0712345678", 10))["http"] == 409
    await running.client.post(f"/simulator/api/prompts/{first['checkoutRequestId']}/cancel")
    await running.wait_status(first["checkoutRequestId"], "failed")
    assert (await running.push("0712345678", 10))["success"] is True  # the second real prompt


@pytest.mark.parametrize("path", ["/stkpush", "/stkpush/status", "/mpesa/callback"])
async def test_absurdly_deep_json_is_a_clean_400(running, path):
    deep = b'{"a":' * 5000 + b"1" + b"}" * 5000
    resp = await running.client.post(path, data=deep, headers={"Content-Type": "application/json"})
    assert resp.status == 400


async def test_text_that_cannot_be_encoded_is_refused_before_daraja(running):
    lone_surrogate = b'{"phone": "0712345678", "amount": 10, "description": "\\ud800x"}'
    resp = await running.client.post("/stkpush", data=lone_surrogate,
                                     headers={"Content-Type": "application/json"})
    assert (resp.status, (await resp.json())["field"]) == (400, "description")
    assert running.sim.prompts == {}
    resp = await running.client.post("/stkpush/status", data=b'{"checkoutRequestId": "\\udc00"}',
                                     headers={"Content-Type": "application/json"})
    assert resp.status == 404


ABSURD_AMOUNTS = [b'"nan"', b'"inf"', b'"-inf"', b"NaN", b"Infinity", b"-Infinity", b"1e300", b"1e400", b"-5",
                  b"9223372036854775808", b"123456789012345678901234567890", b'"1e2"', b'"ten"', b"true"]


@pytest.mark.parametrize("amount", ABSURD_AMOUNTS)
@pytest.mark.parametrize("known", [True, False])
async def test_callbacks_with_absurd_amounts_get_400_are_kept_and_change_nothing(running, amount, known):
    cid = (await running.push("0712345678", 10))["checkoutRequestId"] if known else "ws_CO_011220261200000712345678"
    merchant = running.sim.prompts[cid].merchant_request_id if known else "1-2-3"
    body = (b'{"Body": {"stkCallback": {"MerchantRequestID": "%s", "CheckoutRequestID": "%s", "ResultCode": 0, '
            b'"ResultDesc": "ok", "CallbackMetadata": {"Item": [{"Name": "Amount", "Value": %s}, '
            b'{"Name": "MpesaReceiptNumber", "Value": "UAB1C2D3E4"}]}}}}') % (merchant.encode(), cid.encode(), amount)
    resp = await running.client.post(running.settings.callback_path, data=body,
                                     headers={"Content-Type": "application/json"})
    assert (resp.status, (await resp.json())["ResultCode"]) == (400, 1)
    [logged] = await running.payments.store.callback_log()
    assert logged["outcome"] == "malformed" and amount.decode() in logged["body"]
    assert await running.payments.store.count() == (1 if known else 0)
    if known:
        assert (await running.status(cid))["status"] == "pending"


@pytest.mark.parametrize("field, value", [("PhoneNumber", b"1e300"), ("TransactionDate", b"-1"),
                                          ("PhoneNumber", b"[1]"), ("MpesaReceiptNumber", b"12")])
async def test_callbacks_with_absurd_metadata_get_400(running, field, value):
    items = b'{"Name": "MpesaReceiptNumber", "Value": "UAB1C2D3E4"}, {"Name": "%s", "Value": %s}' % (
        field.encode(), value)
    body = (b'{"Body": {"stkCallback": {"MerchantRequestID": "1-2", "CheckoutRequestID": "ws_CO_1", "ResultCode": 0, '
            b'"CallbackMetadata": {"Item": [%s]}}}}' % items)
    resp = await running.client.post(running.settings.callback_path, data=body,
                                     headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert [r["outcome"] for r in await running.payments.store.callback_log()] == ["malformed"]


async def test_callback_bodies_are_kept_capped(running):
    junk = "x" * 60_000
    body = {"Body": {"stkCallback": {"MerchantRequestID": "1-2", "CheckoutRequestID": "ws_CO_011220261200000712000001",
                                     "ResultCode": 1032, "ResultDesc": junk}}}
    resp = await running.client.post(running.settings.callback_path, json=body)
    assert resp.status == 200
    not_json = await running.client.post(running.settings.callback_path, data=b"{" + b"y" * 60_000,
                                         headers={"Content-Type": "application/json"})
    assert not_json.status == 400
    logged = await running.payments.store.callback_log()
    assert [r["outcome"] for r in logged] == ["unknown", "malformed"]
    assert all(len(r["body"]) <= 8192 for r in logged)


@pytest.mark.parametrize("data", [
    b'{"phone": "0712345678", "amount": "' + b"9" * 5000 + b'"}',
    b'{"phone": "0712345678", "amount": ' + b"9" * 5000 + b"}",
    b'{"phone": "0712345678", "amount": 1e400}',
    b'{"phone": "0712345678", "amount": NaN}',
    b'{"phone": "0712345678", "amount": Infinity}',
    b'{"phone": "0712345678", "amount": "\\u0661\\u0660"}',
])
async def test_absurd_amounts_on_stkpush_are_a_clean_400(running, data):
    resp = await running.client.post("/stkpush", data=data, headers={"Content-Type": "application/json"})
    assert resp.status == 400
    assert running.sim.prompts == {}


@pytest.mark.parametrize("raw", [
    b'{"phone": "0712345678", "amount": 1, "amount": 200}',
    b'{"phone": "0712345678", "phone": "0799999999", "amount": 10}',
    b'{"phone": "0712345678", "amount": 10, "description": {"x": 1, "x": 2}}',
])
async def test_a_field_named_twice_is_refused_not_guessed(running, raw):
    """Readers disagree on which of two same-named fields counts (first or last): refuse both."""
    resp = await running.client.post("/stkpush", data=raw, headers={"Content-Type": "application/json"})
    body = await resp.json()
    assert resp.status == 400 and "more than once" in body["message"], body
    assert running.sim.prompts == {}


async def test_a_field_named_twice_in_an_order_is_refused(start_app):
    running = await start_app(SHOP_API_KEY="k" * 32)
    resp = await running.client.post(
        "/orders", data=b'{"reference": "INV-1", "amount": 100, "amount": 1}',
        headers={"Content-Type": "application/json", "Authorization": "Bearer " + "k" * 32})
    assert resp.status == 400 and "more than once" in (await resp.json())["message"]
    row = await running.payments.store.fetch_one("SELECT COUNT(*) FROM orders")
    assert row is not None and row[0] == 0


@pytest.mark.parametrize("text", ["INV\u202e2401", "INV\u200b1042", "\ufeffINV-1", "A\u2028B"])
@pytest.mark.parametrize("field", ["accountReference", "description"])
async def test_free_amount_text_with_invisible_formatting_is_refused(running, field, text):
    """A right-to-left override or a zero-width space makes a reference read as another one."""
    resp = await running.client.post("/stkpush", json={"phone": "0712345678", "amount": 10, field: text})
    assert (resp.status, (await resp.json())["field"]) == (400, field)
    assert running.sim.prompts == {}


async def test_emoji_sequences_with_joiners_are_still_accepted(running):
    resp = await running.client.post("/stkpush", json={"phone": "0700000000", "amount": 10,
                                                       "description": "Family \U0001F468\u200d\U0001F469"})
    assert resp.status == 200
