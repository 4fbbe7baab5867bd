"""The standalone Daraja simulator over real HTTP: every status code and body Daraja's clients see.

Each test starts `create_standalone_app` with short timings and talks to it with a real aiohttp
client. Callback tests run a small receiver server that records every JSON body POSTed to it.
The wire contracts come from the Daraja reference (OAuth, STK push, STK query, callbacks).
"""

from __future__ import annotations

import asyncio
import base64
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web

from simulator.app import create_standalone_app
from simulator.journal import TOO_DEEP
from simulator.settings import load_simulator_settings
from tests.daraja_http import (
    DEMO_CONSUMER_KEY,
    DEMO_CONSUMER_SECRET,
    REQUEST_ID,
    SANDBOX_PASSKEY,
    assert_daraja_error,
    basic,
    eventually,
    nairobi_timestamp,
    stk_password,
    stk_push_body,
)

OAUTH = "/oauth/v1/generate"
PUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
CONTROL = "/simulator/api"

SHORTCODE = "174379"
INTERACTIVE = "254708374149"  # Safaricom's sandbox test number: waits for the virtual handset
PAYS, CANCELS, LOCKED, CALLBACK_LOST, CALLBACK_TWICE = (
    "254700000000", "254700000002", "254700000006", "254700000007", "254700000008")
CATALOGUE = {INTERACTIVE} | {f"2547000000{i:02d}" for i in range(10)}
NOWHERE = "http://127.0.0.1:9/callback"  # never reached within a test's lifetime

FAST_ENV = {
    "SIMULATOR_AUTO_ANSWER_SECONDS": "0.2",
    "SIMULATOR_CALLBACK_DELAY_SECONDS": "0.05",
    "SIMULATOR_PROMPT_LIFETIME_SECONDS": "2",
    "SIMULATOR_LATE_CALLBACK_SECONDS": "1.5",
}

ACCEPTED = "Success. Request accepted for processing"
QUERY_ACCEPTED = "The service request has been accepted successsfully"  # Daraja's real typo
PAID_DESC = "The service request is processed successfully."
NAIROBI = ZoneInfo("Africa/Nairobi")
QUIET_PERIOD = 0.3  # longer than the callback delay plus the "twice" gap: nothing more is due





def checkout_id_pattern(msisdn: str) -> re.Pattern[str]:
    """ws_CO_ + DDMMYYYYHHmmss + 1-3 millisecond digits + the subscriber number without 254."""
    return re.compile(rf"ws_CO_[0-9]{{14}}[0-9]{{1,3}}{msisdn[3:]}")








class Daraja:
    """A started standalone simulator and an HTTP client for it."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self._token: str | None = None

    async def token(self) -> str:
        if self._token is None:
            resp = await self.client.get(OAUTH, params={"grant_type": "client_credentials"},
                                         headers={"Authorization": basic(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)})
            assert resp.status == 200
            self._token = (await resp.json())["access_token"]
        return self._token

    async def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {await self.token()}"}

    @staticmethod
    def push_body(phone: str = INTERACTIVE, callback: str = NOWHERE, **overrides: Any) -> dict[str, Any]:
        return stk_push_body(phone, callback, **overrides)

    async def post_push(self, body: dict[str, Any]) -> Any:
        return await self.client.post(PUSH, json=body, headers=await self.bearer())

    async def push(self, phone: str = INTERACTIVE, callback: str = NOWHERE, **overrides: Any) -> dict[str, Any]:
        resp = await self.post_push(self.push_body(phone, callback, **overrides))
        assert resp.status == 200, await resp.text()
        return await resp.json()

    async def query(self, checkout_request_id: str, **overrides: Any) -> Any:
        ts = nairobi_timestamp()
        body = {"BusinessShortCode": SHORTCODE, "Password": stk_password(SHORTCODE, SANDBOX_PASSKEY, ts),
                "Timestamp": ts, "CheckoutRequestID": checkout_request_id, **overrides}
        return await self.client.post(QUERY, json=body, headers=await self.bearer())

    async def prompt(self, checkout_request_id: str) -> dict[str, Any]:
        resp = await self.client.get(f"{CONTROL}/prompts/{checkout_request_id}")
        assert resp.status == 200
        return await resp.json()

    async def wait_settled(self, checkout_request_id: str, timeout: float = 3.0) -> dict[str, Any]:
        async def settled() -> dict[str, Any] | None:
            prompt = await self.prompt(checkout_request_id)
            return prompt if prompt["state"] == "settled" else None
        return await eventually(settled, timeout, f"{checkout_request_id} settled")

    async def wait_callbacks_recorded(self, checkout_request_id: str, count: int = 1) -> dict[str, Any]:
        async def recorded() -> dict[str, Any] | None:
            prompt = await self.prompt(checkout_request_id)
            return prompt if len(prompt["callbacks"]) >= count else None
        return await eventually(recorded, 3.0, f"{count} callback attempt(s) recorded")

    async def pin(self, checkout_request_id: str, pin: Any) -> Any:
        return await self.client.post(f"{CONTROL}/prompts/{checkout_request_id}/pin", json={"pin": pin})

    async def cancel(self, checkout_request_id: str) -> Any:
        return await self.client.post(f"{CONTROL}/prompts/{checkout_request_id}/cancel")


class Receiver:
    """A merchant's callback endpoint: records every body; /cb answers 200, /cb-503 answers 503."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        self.base = ""

    @property
    def url(self) -> str:
        return f"{self.base}/cb"

    @property
    def failing_url(self) -> str:
        return f"{self.base}/cb-503"

    def app(self) -> web.Application:
        async def ok(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.json_response({"ResultCode": 0, "ResultDesc": "Accepted"})

        async def unavailable(request: web.Request) -> web.Response:
            self.bodies.append(await request.json())
            return web.json_response({"error": "down"}, status=503)

        app = web.Application()
        app.router.add_post("/cb", ok)
        app.router.add_post("/cb-503", unavailable)
        return app

    async def wait_for(self, count: int, timeout: float = 3.0) -> list[dict[str, Any]]:
        await eventually(lambda: len(self.bodies) >= count, timeout, f"{count} callback(s) received")
        return self.bodies


@pytest.fixture
def start(aiohttp_client: Any) -> Callable[..., Awaitable[Daraja]]:
    """`await start(SETTING="value")` starts a standalone simulator with FAST_ENV plus those settings."""

    async def start_sim(**overrides: str) -> Daraja:
        app = create_standalone_app(load_simulator_settings({**FAST_ENV, **overrides}))
        return Daraja(await aiohttp_client(app))

    return start_sim


@pytest.fixture
async def daraja(start: Callable[..., Awaitable[Daraja]]) -> Daraja:
    return await start()


@pytest.fixture
async def receiver(aiohttp_server: Any) -> Receiver:
    rec = Receiver()
    server = await aiohttp_server(rec.app())
    rec.base = str(server.make_url("")).rstrip("/")
    return rec


# -- OAuth -----------------------------------------------------------------------------------------


async def test_oauth_issues_a_28_char_alphanumeric_token_with_expires_in_as_the_string_3599(daraja):
    resp = await daraja.client.get(OAUTH, params={"grant_type": "client_credentials"},
                                   headers={"Authorization": basic(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)})
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"access_token", "expires_in"}
    assert re.fullmatch(r"[A-Za-z0-9]{28}", body["access_token"])
    assert body["expires_in"] == "3599"


@pytest.mark.parametrize("query", [{"grant_type": "client_credentialss"}, {"grant_type": "password"}, {}],
                         ids=["misspelt", "other-grant", "missing"])
async def test_oauth_rejects_a_wrong_or_missing_grant_type_with_400_008_02(daraja, query):
    resp = await daraja.client.get(OAUTH, params=query,
                                   headers={"Authorization": basic(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)})
    await assert_daraja_error(resp, 400, "400.008.02", "Invalid grant type passed")


@pytest.mark.parametrize("authorization", [
    None,
    "Bearer x",
    "Baerer " + base64.b64encode(f"{DEMO_CONSUMER_KEY}:{DEMO_CONSUMER_SECRET}".encode()).decode(),
    "Basic !!!not-base64!!!",
    "Basic " + base64.b64encode(b"no-colon-in-here").decode(),
], ids=["missing", "bearer", "misspelt-scheme", "garbage-base64", "no-colon"])
async def test_oauth_rejects_a_non_basic_or_unreadable_authorization_with_400_008_01(daraja, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    resp = await daraja.client.get(OAUTH, params={"grant_type": "client_credentials"}, headers=headers)
    await assert_daraja_error(resp, 400, "400.008.01", "Invalid Authentication passed")


@pytest.mark.parametrize("key,secret", [(DEMO_CONSUMER_KEY, "wrong-secret"), ("wrong-key", DEMO_CONSUMER_SECRET)],
                         ids=["wrong-secret", "wrong-key"])
async def test_oauth_answers_wrong_client_credentials_with_400_and_an_empty_body(daraja, key, secret):
    resp = await daraja.client.get(OAUTH, params={"grant_type": "client_credentials"},
                                   headers={"Authorization": basic(key, secret)})
    assert resp.status == 400
    assert await resp.read() == b""


async def test_token_stops_working_once_its_lifetime_has_passed(start):
    daraja = await start(SIMULATOR_TOKEN_LIFETIME_SECONDS="1")
    resp = await daraja.client.get(OAUTH, params={"grant_type": "client_credentials"},
                                   headers={"Authorization": basic(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)})
    assert (await resp.json())["expires_in"] == "1"
    daraja._token = (await resp.json())["access_token"]
    assert (await daraja.post_push(daraja.push_body(PAYS))).status == 200
    await asyncio.sleep(1.05)
    resp = await daraja.post_push(daraja.push_body(INTERACTIVE))
    await assert_daraja_error(resp, 404, "404.001.03", "Invalid Access Token")


# -- STK push: authentication and routing -----------------------------------------------------------


@pytest.mark.parametrize("authorization", [None, "Bearer", "Bearer AbCdEfGhIjKlMnOpQrStUvWxYz12",
                                           basic(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)],
                         ids=["missing", "empty-bearer", "unknown-token", "basic-instead-of-bearer"])
async def test_push_without_a_valid_bearer_is_404_invalid_access_token(daraja, authorization):
    headers = {"Authorization": authorization} if authorization is not None else {}
    resp = await daraja.client.post(PUSH, json=daraja.push_body(), headers=headers)
    await assert_daraja_error(resp, 404, "404.001.03", "Invalid Access Token")
    assert resp.reason == "Resource not found"


async def test_get_on_the_push_path_is_405_in_darajas_envelope(daraja):
    resp = await daraja.client.get(PUSH, headers=await daraja.bearer())
    await assert_daraja_error(resp, 405, "405.001", "GET Method Not Allowed")
    assert resp.headers["Allow"] == "POST"  # what the path does take


@pytest.mark.parametrize("path", ["/mpesa/stkpush/v2/processrequest", "/mpesa/nothing", "/"])
async def test_unknown_path_is_404_resource_not_found(daraja, path):
    resp = await daraja.client.post(path, json={}, headers=await daraja.bearer())
    await assert_daraja_error(resp, 404, "404.001.01", "Resource not found")


# -- STK push: accepted ----------------------------------------------------------------------------


async def test_valid_push_is_accepted_with_darajas_exact_success_body(daraja):
    resp = await daraja.post_push(daraja.push_body(INTERACTIVE))
    assert resp.status == 200
    body = await resp.json()
    assert set(body) == {"MerchantRequestID", "CheckoutRequestID", "ResponseCode", "ResponseDescription",
                         "CustomerMessage"}
    assert REQUEST_ID.fullmatch(body["MerchantRequestID"])
    assert checkout_id_pattern(INTERACTIVE).fullmatch(body["CheckoutRequestID"])
    assert body["ResponseCode"] == "0"
    assert body["ResponseDescription"] == ACCEPTED
    assert body["CustomerMessage"] == ACCEPTED
    # the date/time inside the CheckoutRequestID is Nairobi time now
    stamped = datetime.strptime(body["CheckoutRequestID"][6:20], "%d%m%Y%H%M%S").replace(tzinfo=NAIROBI)
    assert abs((stamped - datetime.now(NAIROBI)).total_seconds()) < 60


@pytest.mark.parametrize("shape", [
    # Safaricom's own sample mixes numbers and numeric strings
    {"BusinessShortCode": 174379, "Amount": "1", "PartyA": "254722000000", "PartyB": "174379",
     "PhoneNumber": "254722111111"},
    {"BusinessShortCode": 174379, "Amount": 1, "PartyA": 254722000000, "PartyB": 174379,
     "PhoneNumber": 254722111111},
    {"BusinessShortCode": "174379", "Amount": "1", "PartyA": "254722000000", "PartyB": "174379",
     "PhoneNumber": "254722111111"},
], ids=["safaricom-mixed-sample", "all-numbers", "all-strings"])
async def test_push_accepts_numbers_and_numeric_strings_alike(daraja, shape):
    body = {**daraja.push_body(), **shape, "AccountReference": "accountref", "TransactionDesc": "txndesc"}
    resp = await daraja.post_push(body)
    assert resp.status == 200, await resp.text()
    accepted = await resp.json()
    assert accepted["ResponseCode"] == "0"
    assert checkout_id_pattern("254722111111").fullmatch(accepted["CheckoutRequestID"])
    prompt = await daraja.prompt(accepted["CheckoutRequestID"])
    assert (prompt["msisdn"], prompt["amount"], prompt["shortcode"], prompt["partyB"]) == (
        "254722111111", 1, "174379", "174379")


# -- STK push: rejected ----------------------------------------------------------------------------

MISSING = object()


@pytest.mark.parametrize("field,value,reported", [
    ("BusinessShortCode", "abc", "BusinessShortCode"),
    ("BusinessShortCode", 1743, "BusinessShortCode"),
    ("BusinessShortCode", MISSING, "BusinessShortCode"),
    ("Timestamp", "2021-06-28 09:24", "Timestamp"),
    ("Timestamp", "20211328092408", "Timestamp"),
    ("Timestamp", MISSING, "Timestamp"),
    ("TransactionType", "CustomerPayBill", "TransactionType"),
    ("TransactionType", MISSING, "TransactionType"),
    ("Amount", 0, "Amount"),
    ("Amount", "abc", "Amount"),
    ("Amount", 250_001, "Amount"),
    ("Amount", MISSING, "Amount"),
    ("PartyA", "0722000000", "PartyA"),
    ("PartyA", MISSING, "PartyA"),
    ("PartyB", "12", "PartyB"),
    ("PartyB", MISSING, "PartyB"),
    ("PhoneNumber", "0722111111", "PhoneNumber"),
    ("PhoneNumber", "25472211111", "PhoneNumber"),
    ("PhoneNumber", MISSING, "PhoneNumber"),
    ("CallBackURL", "[YOUR_CALLBACK_URL]", "CallBackURL"),
    ("CallBackURL", "ftp://example.com/cb", "CallBackURL"),
    ("CallBackURL", MISSING, "CallBackURL"),
    ("AccountReference", "", "AccountReference"),
    ("AccountReference", MISSING, "AccountReference"),
    ("TransactionDesc", MISSING, "Remarks"),
    ("TransactionDesc", "", "Remarks"),
], ids=lambda v: "missing" if v is MISSING else None)
async def test_push_with_an_invalid_field_is_400_bad_request_naming_the_field(daraja, field, value, reported):
    body = daraja.push_body(PAYS)
    if value is MISSING:
        del body[field]
    else:
        body[field] = value
    resp = await daraja.post_push(body)
    await assert_daraja_error(resp, 400, "400.002.02", f"Bad Request - Invalid {reported}")


@pytest.mark.parametrize("url", [" https://shop.example.com/cb", "https://shop.example.com/cb ",
                                 "https://shop.example.com/ cb", "https://shop.example.com/cb\n"])
async def test_callback_url_with_stray_spaces_is_refused_as_daraja_does(daraja, url):
    """LNMOnlineAndroidSample#40: Daraja refuses it; trimming would let the bug pass here and fail live."""
    resp = await daraja.post_push(daraja.push_body(PAYS, CallBackURL=url))
    await assert_daraja_error(resp, 400, "400.002.02", "Bad Request - Invalid CallBackURL")


async def test_a_bad_number_in_both_party_a_and_phone_number_is_reported_as_phone_number(daraja):
    """osen-wc-mpesa#65, whose code sends PartyA = PhoneNumber: Daraja names PhoneNumber."""
    resp = await daraja.post_push(daraja.push_body(PAYS, PartyA="0722111111", PhoneNumber="0722111111"))
    await assert_daraja_error(resp, 400, "400.002.02", "Bad Request - Invalid PhoneNumber")
    only_party_a = await daraja.post_push(daraja.push_body(PAYS, PartyA="0722111111"))
    await assert_daraja_error(only_party_a, 400, "400.002.02", "Bad Request - Invalid PartyA")


@pytest.mark.parametrize("limit, accepted", [("", True), ("15", True), ("12", False)])
async def test_account_reference_of_15_is_accepted_unless_limited(start, limit, accepted):
    daraja = await start(SIMULATOR_ACCOUNT_REFERENCE_MAX=limit)
    resp = await daraja.post_push(daraja.push_body(PAYS, AccountReference="INV-2026-0042"[:13] + "XY"))
    if accepted:
        assert resp.status == 200
    else:
        await assert_daraja_error(resp, 400, "400.002.02", "Bad Request - Invalid AccountReference")


@pytest.mark.parametrize("payload", [b'{"BusinessShortCode": 174379,', b"not json", b"[1, 2]"],
                         ids=["truncated", "not-json", "json-list"])
async def test_push_with_a_malformed_json_body_is_400_invalid_request_payload(daraja, payload):
    resp = await daraja.client.post(PUSH, data=payload,
                                    headers={**await daraja.bearer(), "Content-Type": "application/json"})
    await assert_daraja_error(resp, 400, "400.002.05", "Invalid Request Payload")


async def test_push_with_a_form_encoded_body_is_400_invalid_business_short_code(daraja):
    form = {k: str(v) for k, v in daraja.push_body(PAYS).items()}
    resp = await daraja.client.post(PUSH, data=form, headers=await daraja.bearer())
    await assert_daraja_error(resp, 400, "400.002.02", "Bad Request - Invalid BusinessShortCode")


async def test_push_whose_password_uses_another_timestamp_is_500_wrong_credentials_with_a_hint(daraja):
    body = daraja.push_body(PAYS, Password=stk_password(SHORTCODE, SANDBOX_PASSKEY, "20200101000000"))
    resp = await daraja.post_push(body)
    await assert_daraja_error(resp, 500, "500.001.1001", "Wrong credentials")
    hint = resp.headers.get("X-Simulator-Hint")
    assert hint is not None
    assert "20200101000000" in hint and body["Timestamp"] in hint
    assert SANDBOX_PASSKEY not in hint


async def test_push_whose_password_uses_another_passkey_is_500_wrong_credentials_and_the_hint_hides_it(daraja):
    body = daraja.push_body(PAYS)
    body["Password"] = stk_password(SHORTCODE, "0" * 64, body["Timestamp"])
    resp = await daraja.post_push(body)
    await assert_daraja_error(resp, 500, "500.001.1001", "Wrong credentials")
    hint = resp.headers.get("X-Simulator-Hint")
    assert hint is not None and "passkey" in hint.lower()
    assert SANDBOX_PASSKEY not in hint
    assert SANDBOX_PASSKEY not in await resp.text()


async def test_push_to_an_unknown_shortcode_is_500_merchant_does_not_exist(daraja):
    body = daraja.push_body(PAYS, BusinessShortCode="600000", PartyB="600000")
    body["Password"] = stk_password("600000", SANDBOX_PASSKEY, body["Timestamp"])
    resp = await daraja.post_push(body)
    await assert_daraja_error(resp, 500, "500.001.1001", "Merchant does not exist")


LOCKED_MESSAGE = "Unable to lock subscriber, a transaction is already in process for the current subscriber"


async def test_push_to_the_locked_scenario_number_is_500_unable_to_lock_subscriber(daraja):
    resp = await daraja.post_push(daraja.push_body(LOCKED))
    await assert_daraja_error(resp, 500, "500.001.1001", LOCKED_MESSAGE)
    prompts = await (await daraja.client.get(f"{CONTROL}/prompts", params={"msisdn": LOCKED})).json()
    assert prompts == []


async def test_second_push_while_a_prompt_is_open_is_locked_until_the_first_is_answered(daraja):
    first = await daraja.push(INTERACTIVE)
    resp = await daraja.post_push(daraja.push_body(INTERACTIVE))
    await assert_daraja_error(resp, 500, "500.001.1001", LOCKED_MESSAGE)
    assert (await daraja.cancel(first["CheckoutRequestID"])).status == 200
    again = await daraja.push(INTERACTIVE)
    assert again["CheckoutRequestID"] != first["CheckoutRequestID"]


async def test_push_to_a_phone_number_with_non_ascii_digits_is_400_invalid_phone_number(daraja):
    await daraja.push(INTERACTIVE)  # the same subscriber has an open prompt
    full_width = "2547" + INTERACTIVE[4:].translate(str.maketrans("0123456789", "０１２３４５６７８９"))
    resp = await daraja.post_push(daraja.push_body(INTERACTIVE, PhoneNumber=full_width))
    await assert_daraja_error(resp, 400, "400.002.02", "Bad Request - Invalid PhoneNumber")


# -- STK query -------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"SIMULATOR_PROFILE": "legacy"}, {"SIMULATOR_QUERY_PENDING_STYLE": "500"}],
                         ids=["legacy-profile", "current-profile-with-the-500-style"])
async def test_query_of_an_open_prompt_is_500_being_processed_echoing_the_checkout_id(start, settings):
    daraja = await start(**settings)
    pushed = await daraja.push(INTERACTIVE)
    cid = pushed["CheckoutRequestID"]
    resp = await daraja.query(cid)
    assert resp.status == 500
    assert await resp.json() == {"requestId": cid, "errorCode": "500.001.1001",
                                 "errorMessage": "The transaction is being processed"}


@pytest.mark.parametrize("settings", [{}, {"SIMULATOR_PROFILE": "legacy", "SIMULATOR_QUERY_PENDING_STYLE": "4999"}],
                         ids=["current-profile", "legacy-profile-with-the-4999-style"])
async def test_query_of_an_open_prompt_in_4999_style_is_200_still_under_processing(start, settings):
    daraja = await start(**settings)
    pushed = await daraja.push(INTERACTIVE)
    resp = await daraja.query(pushed["CheckoutRequestID"])
    assert resp.status == 200
    assert await resp.json() == {
        "ResponseCode": "0",
        "ResponseDescription": QUERY_ACCEPTED,
        "MerchantRequestID": pushed["MerchantRequestID"],
        "CheckoutRequestID": pushed["CheckoutRequestID"],
        "ResultCode": "4999",
        "ResultDesc": "The transaction is still under processing",
    }


@pytest.mark.parametrize("profile, phone, code, desc", [
    ("current", CANCELS, "1032", "Request Cancelled by user."),
    ("legacy", CANCELS, "1032", "Request cancelled by user"),
    ("current", PAYS, "0", PAID_DESC), ("legacy", PAYS, "0", PAID_DESC),
], ids=["cancelled-current", "cancelled-legacy", "paid-current", "paid-legacy"])
async def test_query_of_a_settled_prompt_is_200_with_string_result_code(start, profile, phone, code, desc):
    daraja = await start(SIMULATOR_PROFILE=profile)
    pushed = await daraja.push(phone)
    await daraja.wait_settled(pushed["CheckoutRequestID"])
    resp = await daraja.query(pushed["CheckoutRequestID"])
    assert resp.status == 200
    assert await resp.json() == {
        "ResponseCode": "0",
        "ResponseDescription": QUERY_ACCEPTED,
        "MerchantRequestID": pushed["MerchantRequestID"],
        "CheckoutRequestID": pushed["CheckoutRequestID"],
        "ResultCode": code,
        "ResultDesc": desc,
    }


async def test_query_of_an_unknown_checkout_id_is_400_invalid_checkout_request_id(daraja):
    resp = await daraja.query("ws_CO_010120250000001708374149")
    await assert_daraja_error(resp, 400, "400.002.02", "Bad Request - Invalid CheckoutRequestID")


async def test_query_with_a_wrong_password_is_500_wrong_credentials(daraja):
    pushed = await daraja.push(INTERACTIVE)
    ts = nairobi_timestamp()
    resp = await daraja.query(pushed["CheckoutRequestID"], Timestamp=ts,
                              Password=stk_password(SHORTCODE, "0" * 64, ts))
    await assert_daraja_error(resp, 500, "500.001.1001", "Wrong credentials")


async def test_query_without_a_valid_bearer_is_404_invalid_access_token(daraja):
    pushed = await daraja.push(INTERACTIVE)
    ts = nairobi_timestamp()
    resp = await daraja.client.post(QUERY, json={
        "BusinessShortCode": SHORTCODE, "Password": stk_password(SHORTCODE, SANDBOX_PASSKEY, ts),
        "Timestamp": ts, "CheckoutRequestID": pushed["CheckoutRequestID"]},
        headers={"Authorization": "Bearer not-a-token"})
    await assert_daraja_error(resp, 404, "404.001.03", "Invalid Access Token")


# -- control API -----------------------------------------------------------------------------------


async def test_control_lists_the_eleven_catalogue_numbers(daraja):
    resp = await daraja.client.get(f"{CONTROL}/scenarios")
    assert resp.status == 200
    scenarios = await resp.json()
    assert len(scenarios) == 11
    assert {s["msisdn"] for s in scenarios} == CATALOGUE


async def test_control_lists_only_the_prompts_of_the_requested_msisdn(daraja):
    mine = await daraja.push(INTERACTIVE, Amount=42)
    await daraja.push("254722111111")
    resp = await daraja.client.get(f"{CONTROL}/prompts", params={"msisdn": INTERACTIVE})
    assert resp.status == 200
    prompts = await resp.json()
    assert [p["checkoutRequestId"] for p in prompts] == [mine["CheckoutRequestID"]]
    prompt = prompts[0]
    assert (prompt["msisdn"], prompt["amount"], prompt["state"], prompt["resultCode"], prompt["callbacks"]) == (
        INTERACTIVE, 42, "open", None, [])
    assert prompt["merchantRequestId"] == mine["MerchantRequestID"]


async def test_correct_pin_pays_and_delivers_exactly_one_success_callback_in_darajas_shape(daraja, receiver):
    pushed = await daraja.push(INTERACTIVE, receiver.url, Amount=10)
    cid = pushed["CheckoutRequestID"]
    resp = await daraja.pin(cid, "12345")
    assert resp.status == 200
    prompt = await resp.json()
    assert (prompt["state"], prompt["resultCode"]) == ("settled", "0")
    assert re.fullmatch(r"[A-Z0-9]{10}", prompt["receipt"])

    [callback] = await receiver.wait_for(1)
    await asyncio.sleep(QUIET_PERIOD)
    assert len(receiver.bodies) == 1

    stk = callback["Body"]["stkCallback"]
    assert set(callback) == {"Body"} and set(callback["Body"]) == {"stkCallback"}
    assert set(stk) == {"MerchantRequestID", "CheckoutRequestID", "ResultCode", "ResultDesc", "CallbackMetadata"}
    assert (stk["MerchantRequestID"], stk["CheckoutRequestID"]) == (pushed["MerchantRequestID"], cid)
    assert type(stk["ResultCode"]) is int and stk["ResultCode"] == 0
    assert stk["ResultDesc"] == PAID_DESC
    items = stk["CallbackMetadata"]["Item"]
    by_name = {item["Name"]: item for item in items}
    assert len(items) == 5
    assert set(by_name) == {"Amount", "MpesaReceiptNumber", "Balance", "TransactionDate", "PhoneNumber"}
    assert by_name["Amount"] == {"Name": "Amount", "Value": 10}
    assert type(by_name["Amount"]["Value"]) in (int, float)
    assert by_name["MpesaReceiptNumber"] == {"Name": "MpesaReceiptNumber", "Value": prompt["receipt"]}
    assert by_name["Balance"] == {"Name": "Balance"}
    date = by_name["TransactionDate"]["Value"]
    assert type(date) is int and len(str(date)) == 14
    assert date == int(prompt["transactionDate"])
    paid_at = datetime.strptime(str(date), "%Y%m%d%H%M%S").replace(tzinfo=NAIROBI)
    assert abs((paid_at - datetime.now(NAIROBI)).total_seconds()) < 60  # Nairobi time, not UTC
    phone = by_name["PhoneNumber"]["Value"]
    assert type(phone) is int and phone == int(INTERACTIVE)

    recorded = await daraja.wait_callbacks_recorded(cid)
    assert [(c["url"], c["status"], c["error"]) for c in recorded["callbacks"]] == [(receiver.url, 200, None)]
    assert recorded["callbacks"][0]["body"] == callback


async def test_wrong_pin_settles_2001_and_the_callback_has_no_metadata(daraja, receiver):
    pushed = await daraja.push(INTERACTIVE, receiver.url)
    resp = await daraja.pin(pushed["CheckoutRequestID"], "00000")
    assert resp.status == 200
    prompt = await resp.json()
    assert (prompt["state"], prompt["resultCode"], prompt["receipt"]) == ("settled", "2001", None)
    [callback] = await receiver.wait_for(1)
    assert callback == {"Body": {"stkCallback": {
        "MerchantRequestID": pushed["MerchantRequestID"],
        "CheckoutRequestID": pushed["CheckoutRequestID"],
        "ResultCode": 2001,
        "ResultDesc": "The initiator information is invalid.",
    }}}


@pytest.mark.parametrize("profile, desc", [("current", "Request Cancelled by user."),
                                           ("legacy", "Request cancelled by user")])
async def test_cancel_settles_1032_and_the_callback_says_cancelled_by_user(start, receiver, profile, desc):
    daraja = await start(SIMULATOR_PROFILE=profile)
    pushed = await daraja.push(INTERACTIVE, receiver.url)
    resp = await daraja.cancel(pushed["CheckoutRequestID"])
    assert resp.status == 200
    assert (await resp.json())["resultCode"] == "1032"
    [callback] = await receiver.wait_for(1)
    assert callback == {"Body": {"stkCallback": {
        "MerchantRequestID": pushed["MerchantRequestID"],
        "CheckoutRequestID": pushed["CheckoutRequestID"],
        "ResultCode": 1032,
        "ResultDesc": desc,
    }}}


async def test_answering_a_settled_prompt_is_409_and_leaves_its_result_alone(daraja):
    pushed = await daraja.push(INTERACTIVE)
    cid = pushed["CheckoutRequestID"]
    assert (await daraja.cancel(cid)).status == 200
    pin = await daraja.pin(cid, "12345")
    assert pin.status == 409
    assert "error" in await pin.json()
    assert (await daraja.cancel(cid)).status == 409
    prompt = await daraja.prompt(cid)
    assert (prompt["state"], prompt["resultCode"], prompt["receipt"]) == ("settled", "1032", None)


@pytest.mark.parametrize("action", ["pin", "cancel", "get"])
async def test_control_on_an_unknown_prompt_is_404(daraja, action):
    cid = "ws_CO_010120250000001708374149"
    if action == "pin":
        resp = await daraja.pin(cid, "12345")
    elif action == "cancel":
        resp = await daraja.cancel(cid)
    else:
        resp = await daraja.client.get(f"{CONTROL}/prompts/{cid}")
    assert resp.status == 404
    assert (await resp.json()) == {"error": "no such prompt"}


@pytest.mark.parametrize("pin", [12345, None, ["12345"]], ids=["number", "null", "list"])
async def test_pin_that_is_not_a_string_is_400_and_the_prompt_stays_open(daraja, pin):
    pushed = await daraja.push(INTERACTIVE)
    resp = await daraja.pin(pushed["CheckoutRequestID"], pin)
    assert resp.status == 400
    assert await resp.json() == {"error": "pin must be a string"}
    assert (await daraja.prompt(pushed["CheckoutRequestID"]))["state"] == "open"


async def test_prompt_records_the_status_code_the_receiver_answered(daraja, receiver):
    pushed = await daraja.push(PAYS, receiver.failing_url)
    prompt = await daraja.wait_callbacks_recorded(pushed["CheckoutRequestID"])
    assert [(c["url"], c["status"], c["error"]) for c in prompt["callbacks"]] == [(receiver.failing_url, 503, None)]
    assert len(receiver.bodies) == 1
    assert prompt["callbacks"][0]["body"] == receiver.bodies[0]


# -- scripted callback behaviours -----------------------------------------------------------------


async def test_callback_twice_number_delivers_the_same_success_callback_two_times(daraja, receiver):
    pushed = await daraja.push(CALLBACK_TWICE, receiver.url)
    first, second = await receiver.wait_for(2)
    await asyncio.sleep(QUIET_PERIOD)
    assert len(receiver.bodies) == 2
    assert first == second
    assert first["Body"]["stkCallback"]["CheckoutRequestID"] == pushed["CheckoutRequestID"]
    assert first["Body"]["stkCallback"]["ResultCode"] == 0
    prompt = await daraja.wait_callbacks_recorded(pushed["CheckoutRequestID"], 2)
    assert [c["status"] for c in prompt["callbacks"]] == [200, 200]


async def test_callback_lost_number_pays_but_never_calls_back_so_only_the_query_knows(daraja, receiver):
    pushed = await daraja.push(CALLBACK_LOST, receiver.url)
    prompt = await daraja.wait_settled(pushed["CheckoutRequestID"])
    assert prompt["resultCode"] == "0"
    await asyncio.sleep(QUIET_PERIOD)
    assert receiver.bodies == []
    assert (await daraja.prompt(pushed["CheckoutRequestID"]))["callbacks"] == []
    resp = await daraja.query(pushed["CheckoutRequestID"])
    assert resp.status == 200
    assert (await resp.json())["ResultCode"] == "0"


@pytest.mark.parametrize("profile, callback_desc, query_desc", [
    ("current", "DS timeout user cannot be reached.", "DS timeout user cannot be reached."),
    ("legacy", "DS timeout user cannot be reached", "No response from user."),
])
async def test_unanswered_interactive_prompt_calls_back_1037_when_its_lifetime_ends(start, receiver, profile,
                                                                                   callback_desc, query_desc):
    # 3 s: the "still open" look below keeps seconds of margin on a loaded machine
    daraja = await start(SIMULATOR_PROMPT_LIFETIME_SECONDS="3", SIMULATOR_PROFILE=profile)
    started = time.monotonic()
    pushed = await daraja.push(INTERACTIVE, receiver.url)
    await asyncio.sleep(0.3)
    assert (await daraja.prompt(pushed["CheckoutRequestID"]))["state"] == "open"
    assert receiver.bodies == []
    [callback] = await receiver.wait_for(1, timeout=8.0)
    assert time.monotonic() - started >= 3.0
    assert callback == {"Body": {"stkCallback": {
        "MerchantRequestID": pushed["MerchantRequestID"],
        "CheckoutRequestID": pushed["CheckoutRequestID"],
        "ResultCode": 1037,
        "ResultDesc": callback_desc,
    }}}
    resp = await daraja.query(pushed["CheckoutRequestID"])
    body = await resp.json()
    assert (resp.status, body["ResultCode"], body["ResultDesc"]) == (200, "1037", query_desc)


# -- known defects ---------------------------------------------------------------------------------


async def test_push_with_an_unparseable_callback_url_is_400_invalid_callback_url(daraja):
    resp = await daraja.post_push(daraja.push_body(PAYS, CallBackURL="http://[::1/cb"))
    assert resp.status == 400
    await assert_daraja_error(resp, 400, "400.002.02", "Bad Request - Invalid CallBackURL")


async def test_push_with_an_out_of_range_callback_port_is_400_invalid_callback_url(daraja):
    resp = await daraja.post_push(daraja.push_body(PAYS, CallBackURL="http://127.0.0.1:99999/cb"))
    await assert_daraja_error(resp, 400, "400.002.02", "Bad Request - Invalid CallBackURL")


async def test_form_body_labelled_as_json_is_read_as_a_form_like_daraja(daraja):
    from urllib.parse import urlencode
    form = urlencode({k: str(v) for k, v in daraja.push_body(PAYS).items()}).encode()
    resp = await daraja.client.post(PUSH, data=form,
                                    headers={**await daraja.bearer(), "Content-Type": "application/json"})
    await assert_daraja_error(resp, 400, "400.002.02", "Bad Request - Invalid BusinessShortCode")


async def test_a_body_nested_too_deeply_to_mask_is_answered_and_journaled_as_such(daraja):
    """JSON nested 600 deep parses, but masking it walks deeper than Python's recursion limit. The
    push is still answered as Daraja would (a 4xx, never a 5xx), and the journal, which masks an
    entry when it is read, shows that entry without its body instead of failing every later read."""
    deep: Any = "x"
    for _ in range(600):
        deep = {"a": deep}
    resp = await daraja.post_push(daraja.push_body(AccountReference=deep))
    assert 400 <= resp.status < 500, await resp.text()
    journal = await daraja.client.get(f"{CONTROL}/journal", params={"kind": "request"})
    assert journal.status == 200, await journal.text()
    [entry] = [e for e in await journal.json() if e["url"] == PUSH]
    assert entry["requestBody"] == TOO_DEEP
    assert entry["status"] == resp.status
    assert (await daraja.client.get(f"{CONTROL}/journal")).status == 200  # and every later read
