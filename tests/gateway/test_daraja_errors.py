"""Daraja's errors, typed where they are parsed (`client.parse_error`), and the one table
(`result_messages.DARAJA_ANSWERS`) that says what the shop's customer is told for each kind.

The bodies are Safaricom's, copied verbatim from ../shared/daraja-reference.md (§1, §2, §3 and
§8), except Apigee's `fault` shape, which the reference does not quote."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.daraja.client import DarajaClient, StkPushRequest, parse_error
from gateway.daraja.errors import (
    AuthRefused,
    DarajaError,
    DarajaUnavailable,
    InvalidField,
    InvalidToken,
    MerchantDoesNotExist,
    RateLimited,
    StillProcessing,
    SubscriberLocked,
    SystemBusy,
    WrongCredentials,
)
from gateway.handlers import _refused, daraja_failure
from gateway.result_messages import DARAJA_ANSWERS, MAYBE_SENT, daraja_answer

REFUSED = "M-Pesa refused the payment request. Please try again or contact the shop."
BUSY = "M-Pesa is busy. Please try again shortly."
LOCKED = "A payment request is already waiting on this phone. Complete or cancel it, then try again in a minute."
NOT_CONFIGURED = "Payment service is not configured correctly. Please contact the shop."
UNREACHABLE = "M-Pesa is not reachable right now. Please try again in a moment."
CHECK_PHONE = ("We could not confirm the payment request with M-Pesa. If a prompt appears on your phone you can "
               "complete it, and it will be recorded. Please check your phone before trying again.")


def envelope(code: str, message: str, request_id: str = "1c5b-4ba8-815c-ac45c57a3db01495926") -> str:
    return json.dumps({"requestId": request_id, "errorCode": code, "errorMessage": message})


def parse(status: int, raw: str, **kwargs: Any) -> DarajaError | DarajaUnavailable:
    return parse_error(status, json.loads(raw) if raw.strip() else {}, **kwargs)


# (HTTP status, body as Daraja sends it, the kind, InvalidField's field)
STK_ERRORS = [
    # §2, the envelope exactly as the reference quotes it
    (400, '{"requestId": "1c5b-4ba8-815c-ac45c57a3db01495926", "errorCode": "400.002.02", '
          '"errorMessage": "Bad Request - Invalid BusinessShortCode"}', InvalidField, "BusinessShortCode"),
    (400, envelope("400.002.02", "Bad Request - Invalid PhoneNumber"), InvalidField, "PhoneNumber"),
    (400, envelope("400.002.02", "Bad Request - Invalid PartyA"), InvalidField, "PartyA"),
    (400, envelope("400.002.02", "Bad Request - Invalid CallBackURL"), InvalidField, "CallBackURL"),
    (400, envelope("400.002.02", "Bad Request - Invalid Amount"), InvalidField, "Amount"),
    (400, envelope("400.002.02", "Bad Request - Invalid Remarks"), InvalidField, "Remarks"),
    (400, envelope("400.002.02", "Bad Request - Invalid RecieverIdentifierType"), InvalidField,
     "RecieverIdentifierType"),  # §8, the reversal's misspelt key
    (400, envelope("400.002.05", "Invalid Request Payload"), DarajaError, None),
    (404, envelope("404.001.03", "Invalid Access Token"), InvalidToken, None),
    (404, envelope("404.001.01", "Resource not found"), DarajaError, None),
    (405, envelope("405.001", "GET Method Not Allowed"), DarajaError, None),
    # A token of an app without the API product: a new token would not help.
    (401, envelope("401.002.01", "Error Occurred - Invalid Access Token - Invalid API call as no apiproduct match "
                                 "found"), DarajaError, None),
    (500, envelope("500.001.1001", "Wrong credentials"), WrongCredentials, None),
    (500, envelope("500.001.1001", "[MerchantValidate] - Wrong credentials", "29115-34620561-1"), WrongCredentials,
     None),
    (500, envelope("500.001.1001", "Merchant does not exist"), MerchantDoesNotExist, None),
    (500, envelope("500.001.1001", "Unable to lock subscriber, a transaction is already in process for the current "
                                   "subscriber"), SubscriberLocked, None),
    (500, envelope("500.003.1001", "Internal Server Error"), DarajaError, None),
    (500, envelope("500.003.02", "System is busy. Please try again in few minutes."), SystemBusy, None),
    (500, envelope("500.003.02", "Error Occurred: Spike Arrest Violation"), RateLimited, None),
    (500, envelope("500.003.03", "Quota Violation"), RateLimited, None),
    (500, envelope("500.003.03", "Error Occurred: Quota Violation"), RateLimited, None),
    # §3, the STK query
    (500, '{"requestId": "ws_CO_20022018230142206", "errorCode": "500.001.1001", '
          '"errorMessage": "The transaction is being processed"}', StillProcessing, None),
    (400, '{"errorCode":"400.002.02","errorMessage":"Bad Request - Invalid CheckoutRequestID"}', InvalidField,
     "CheckoutRequestID"),
    (500, envelope("500.001.1001", "The transaction does not exist"), DarajaError, None),
]


@pytest.mark.parametrize("status, raw, kind, field", STK_ERRORS)
def test_each_of_darajas_error_bodies_is_parsed_into_its_kind(status, raw, kind, field):
    error = parse(status, raw)
    assert type(error) is kind
    sent = json.loads(raw)
    assert (error.http_status, error.error_code, error.error_message, error.request_id) == \
        (status, sent["errorCode"], sent["errorMessage"], sent.get("requestId", ""))
    if kind is InvalidField:
        assert error.field == field


def test_the_query_pending_answer_keeps_the_checkout_request_id_daraja_echoed():
    error = parse(500, '{"requestId": "ws_CO_20022018230142206", "errorCode": "500.001.1001", '
                       '"errorMessage": "The transaction is being processed"}')
    assert isinstance(error, StillProcessing) and error.request_id == "ws_CO_20022018230142206"


@pytest.mark.parametrize("status, raw, code, message", [
    # §1: grant type, then the Authorization header, then a well-formed header with a wrong key/secret
    (400, '{"requestId":"…","errorCode":"400.008.02","errorMessage":"Invalid grant type passed"}', "400.008.02",
     "Invalid grant type passed"),
    (400, envelope("400.008.01", "Invalid Authentication passed"), "400.008.01", "Invalid Authentication passed"),
    (400, "", "", "Daraja refused the consumer key or secret (HTTP 400, empty body)"),
    # §1: M-Pesa Ethiopia's shape, recognised too
    (400, '{"resultCode":"999991","resultDesc":"Invalid client id passed…"}', "999991",
     "Invalid client id passed…"),
    (401, "", "", "HTTP 401 with no error body"),
])
def test_oauth_refusals_are_auth_refused(status, raw, code, message):
    error = parse(status, raw, oauth=True)
    assert type(error) is AuthRefused
    assert (error.http_status, error.error_code, error.error_message) == (status, code, message)


def test_a_rate_limit_on_oauth_is_still_a_rate_limit():
    assert type(parse(500, envelope("500.003.02", "Error Occurred: Spike Arrest Violation"), oauth=True)) \
        is RateLimited


SPIKE_ARREST_FAULT = ('{"fault": {"faultstring": "Spike arrest violation. Allowed rate : '
                      'MessageRate{messagesPerPeriod=1, periodInMicroseconds=1000000, maxBurstMessageCount=1.0}", '
                      '"detail": {"errorcode": "policies.ratelimit.SpikeArrestViolation"}}}')
QUOTA_FAULT = ('{"fault": {"faultstring": "Rate limit quota violation. Quota limit  exceeded. Identifier : _default",'
               ' "detail": {"errorcode": "policies.ratelimit.QuotaViolation"}}}')


@pytest.mark.parametrize("status", [429, 500])
@pytest.mark.parametrize("raw, code", [(SPIKE_ARREST_FAULT, "policies.ratelimit.SpikeArrestViolation"),
                                       (QUOTA_FAULT, "policies.ratelimit.QuotaViolation")])
def test_apigees_rate_limit_faults_are_rate_limited(status, raw, code):
    error = parse(status, raw, maybe_sent=True)
    assert type(error) is RateLimited
    assert (error.http_status, error.error_code) == (status, code)
    assert error.error_message == json.loads(raw)["fault"]["faultstring"]


def test_other_apigee_faults():
    timeout = ('{"fault": {"faultstring": "Gateway Timeout", '
               '"detail": {"errorcode": "messaging.adaptors.http.flow.GatewayTimeout"}}}')
    # Apigee timed out waiting for Daraja: the push may have been acted on.
    error = parse(504, timeout, maybe_sent=True)
    assert type(error) is DarajaUnavailable and error.maybe_sent
    bad_key = '{"fault": {"faultstring": "Invalid ApiKey", "detail": {"errorcode": "oauth.v2.InvalidApiKey"}}}'
    error = parse(401, bad_key)
    assert type(error) is DarajaError
    assert (error.error_code, error.error_message) == ("oauth.v2.InvalidApiKey", "Invalid ApiKey")
    assert type(parse(429, "")) is RateLimited  # a 429 says what it is, body or not


@pytest.mark.parametrize("maybe_sent", [True, False])
@pytest.mark.parametrize("status, raw", [(500, ""), (502, ""), (503, "{}"), (500, '{"unrelated": 1}')])
def test_5xx_without_darajas_body_is_unavailable_and_keeps_maybe_sent(status, raw, maybe_sent):
    for oauth in (False, True):
        error = parse(status, raw, maybe_sent=maybe_sent, oauth=oauth)
        assert type(error) is DarajaUnavailable
        assert error.maybe_sent is maybe_sent


def test_4xx_without_a_body_is_a_generic_refusal():
    error = parse(400, "")
    assert type(error) is DarajaError
    assert (error.error_code, error.error_message) == ("", "HTTP 400 with no error body")


def test_a_push_answered_200_with_a_non_zero_response_code_is_a_refusal():
    error = parse(200, '{"ResponseCode": "1", "ResponseDescription": "Rejected"}')
    assert type(error) is DarajaError and (error.error_code, error.error_message) == ("1", "Rejected")


# -- the customer's table ------------------------------------------------------------------------

def _all_kinds(cls: type[Exception]) -> list[type[Exception]]:
    return [cls, *(k for sub in cls.__subclasses__() for k in _all_kinds(sub))]


def test_the_table_has_a_row_for_every_kind():
    kinds = set(_all_kinds(DarajaError)) | {DarajaUnavailable}
    assert kinds == {DarajaError, AuthRefused, InvalidToken, InvalidField, SubscriberLocked, StillProcessing,
                     WrongCredentials, MerchantDoesNotExist, RateLimited, SystemBusy, DarajaUnavailable}
    keys = {k if isinstance(k, type) else k[0] for k in DARAJA_ANSWERS}
    assert kinds <= keys, kinds - keys
    assert keys <= kinds


def answer(error: DarajaError | DarajaUnavailable) -> tuple[int, dict[str, Any], str | None]:
    resp = daraja_failure(error)
    assert resp.text is not None
    return resp.status, json.loads(resp.text), resp.headers.get("Retry-After")


def err(kind: type[DarajaError], code: str = "500.001.1001", message: str = "x", **kw: Any) -> DarajaError:
    return kind(500, code, message, "req", **kw)


@pytest.mark.parametrize("error, status, body, retry_after", [
    (DarajaUnavailable("x", maybe_sent=True), 504, {"message": CHECK_PHONE}, None),
    (DarajaUnavailable("x"), 503, {"message": UNREACHABLE}, None),
    (AuthRefused(400, "", "Daraja refused the consumer key or secret (HTTP 400, empty body)"), 502,
     {"message": NOT_CONFIGURED}, None),
    (err(SubscriberLocked), 409, {"message": LOCKED, "errorCode": "500.001.1001"}, None),
    (err(RateLimited, "500.003.02"), 503, {"message": BUSY, "errorCode": "500.003.02"}, "5"),
    (err(RateLimited, "policies.ratelimit.SpikeArrestViolation"), 503,
     {"message": BUSY, "errorCode": "policies.ratelimit.SpikeArrestViolation"}, "5"),
    (err(SystemBusy, "500.003.02"), 503, {"message": BUSY, "errorCode": "500.003.02"}, "5"),
    (err(InvalidField, "400.002.02", field="PhoneNumber"), 400,
     {"message": "Invalid phone number format", "field": "phone"}, None),
    (err(InvalidField, "400.002.02", field="PartyA"), 400,
     {"message": "Invalid phone number format", "field": "phone"}, None),
    (err(InvalidField, "400.002.02", field="Amount"), 400,
     {"message": "M-Pesa does not accept this amount", "field": "amount"}, None),
    (err(InvalidField, "400.002.02", field="CallBackURL"), 502, {"message": REFUSED, "errorCode": "400.002.02"},
     None),
    (err(InvalidToken, "404.001.03"), 502, {"message": REFUSED, "errorCode": "404.001.03"}, None),
    (err(WrongCredentials), 502, {"message": REFUSED, "errorCode": "500.001.1001"}, None),
    (err(MerchantDoesNotExist), 502, {"message": REFUSED, "errorCode": "500.001.1001"}, None),
    (err(StillProcessing), 502, {"message": REFUSED, "errorCode": "500.001.1001"}, None),
    (err(DarajaError, "500.003.1001"), 502, {"message": REFUSED, "errorCode": "500.003.1001"}, None),
])
def test_what_the_customer_is_told_for_each_kind(error, status, body, retry_after):
    assert answer(error) == (status, {"success": False, **body}, retry_after)


@pytest.mark.parametrize("status, raw, kind, field", STK_ERRORS)
def test_every_parsed_body_has_an_answer_and_a_refusal_gives_the_phone_back(status, raw, kind, field):
    error = parse(status, raw, maybe_sent=True)
    assert daraja_answer(error) in DARAJA_ANSWERS.values()
    assert _refused(error)  # Daraja answered no: nothing reached the phone


def test_only_an_answer_that_may_have_gone_out_keeps_the_phone_held():
    assert not _refused(DarajaUnavailable("x", maybe_sent=True))
    assert _refused(DarajaUnavailable("x"))
    assert DARAJA_ANSWERS[(DarajaUnavailable, MAYBE_SENT)].status == 504


def test_no_other_module_tests_darajas_codes_or_texts():
    """The kind is decided in client.parse_error; everyone else asks isinstance."""
    root = Path(__file__).resolve().parents[2] / "gateway"
    code = re.compile(r"['\"]\d{3}\.\d{3}(\.\d+)?['\"]")
    text_test = re.compile(r"error_(code|message)\s*(==|!=|\bin\b|\.(lower|upper|endswith|startswith|strip)\b)"
                           r"|\bin\s+\w+\.error_(code|message)")
    for path in root.rglob("*.py"):
        if path == root / "daraja" / "client.py":
            continue
        source = path.read_text()
        assert not code.search(source), path
        assert not text_test.search(source), path


# -- through the client and the gateway, against a stand-in Daraja -------------------------------

def stand_in(answers: dict[str, list[tuple[int, str]]]) -> web.Application:
    """Answers each path with the next (status, body) in `answers`; a token for OAuth."""
    async def handle(request: web.Request) -> web.Response:
        if request.path.startswith("/oauth"):
            return web.json_response({"access_token": "c9SQxWWhmdVRlyh0zh8gZDTkubVF", "expires_in": "3599"})
        status, raw = answers[request.path].pop(0)
        return web.Response(status=status, text=raw, content_type="application/json")
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


async def test_the_client_raises_the_parsed_kind(aiohttp_server):
    push = "/mpesa/stkpush/v1/processrequest"
    server = await aiohttp_server(stand_in({push: [
        (500, envelope("500.001.1001", "Unable to lock subscriber, a transaction is already in process for the "
                                       "current subscriber")),
        (429, SPIKE_ARREST_FAULT),
        (400, envelope("400.002.02", "Bad Request - Invalid PhoneNumber")),
    ]}))
    async with aiohttp.ClientSession() as session:
        client = DarajaClient(session, base_url=str(server.make_url("")).rstrip("/"), consumer_key="k",
                              consumer_secret="s", shortcode="174379", passkey="p", timeout=5)
        request = StkPushRequest(phone="254708374149", amount=1, account_reference="ref", description="desc",
                                 callback_url="https://example.com/cb")
        for kind in (SubscriberLocked, RateLimited, InvalidField):
            with pytest.raises(kind):
                await client.stk_push(request)


async def test_an_apigee_spike_arrest_is_503_with_retry_after_and_gives_the_phone_back(start_app, aiohttp_server):
    push = "/mpesa/stkpush/v1/processrequest"
    server = await aiohttp_server(stand_in({push: [(429, SPIKE_ARREST_FAULT)] * 3}))
    running = await start_app(MPESA_BASE_URL=str(server.make_url("")), PUSH_LIMIT_PER_PHONE="1")
    for _ in range(3):  # a refusal gives the reservation back: never 429 from the per-phone limit
        resp = await running.client.post("/stkpush", json={"phone": "0708374149", "amount": 10})
        assert (resp.status, resp.headers.get("Retry-After")) == (503, "5")
        assert (await resp.json())["errorCode"] == "policies.ratelimit.SpikeArrestViolation"
    assert await running.payments.store.count() == 0
