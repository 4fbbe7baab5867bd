"""The gateway's Daraja code against Safaricom's own examples (golden/), never against the simulator.

The Daraja side here is a stand-in HTTP server that answers each golden body verbatim: it plays
Safaricom, whose exact bytes are the point."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from gateway.daraja.client import DarajaClient, StkPushRequest
from gateway.daraja.errors import DarajaError, RateLimited
from gateway.daraja.wire import parse_stk_callback, stk_password
from gateway.result_messages import customer_message
from tests.contract.golden import body, example, text


def test_the_password_formula_reproduces_safaricoms_sample():
    sample = example("stk_push_request")
    request = sample["body"]
    assert stk_password(str(request["BusinessShortCode"]), sample["passkey"], request["Timestamp"]) == \
        request["Password"]


class Safaricom:
    """Answers with golden bodies: `answers[path]` is a list of golden names, served in order."""

    def __init__(self) -> None:
        self.answers: dict[str, list[str]] = {}
        self.requests: list[tuple[str, dict[str, str], Any]] = []

    def app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            raw = await request.read()
            self.requests.append((request.path, dict(request.headers), json.loads(raw) if raw else None))
            name = self.answers[request.path].pop(0)
            return web.Response(text=text(name), status=example(name).get("status", 200),
                                content_type="application/json")
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.fixture
async def daraja(aiohttp_server: Any) -> Any:
    safaricom = Safaricom()
    safaricom.answers["/oauth/v1/generate"] = ["oauth_token"] * 3
    server = await aiohttp_server(safaricom.app())
    async with aiohttp.ClientSession() as session:
        client = DarajaClient(session, base_url=str(server.make_url("")).rstrip("/"), consumer_key="key",
                              consumer_secret="secret", shortcode="174379",
                              passkey=example("stk_push_request")["passkey"], timeout=5)
        yield safaricom, client


async def test_the_push_the_gateway_sends_has_the_fields_of_safaricoms_sample(daraja):
    safaricom, client = daraja
    safaricom.answers["/mpesa/stkpush/v1/processrequest"] = ["stk_push_accepted"]
    accepted = await client.stk_push(StkPushRequest(phone="254722000000", amount=1, account_reference="accountref",
                                                    description="txndesc", callback_url="https://mydomain.com/path"))
    golden = body("stk_push_accepted")
    assert (accepted.merchant_request_id, accepted.checkout_request_id) == \
        (golden["MerchantRequestID"], golden["CheckoutRequestID"])
    [(_, headers, sent)] = [r for r in safaricom.requests if r[0].endswith("processrequest")]
    assert set(sent) == set(body("stk_push_request"))
    assert sent["Password"] == stk_password("174379", example("stk_push_request")["passkey"], sent["Timestamp"])
    assert headers["Authorization"] == "Bearer " + body("oauth_token")["access_token"]


@pytest.mark.parametrize("answer, pending, code", [
    ("query_success", False, "0"), ("query_failed", False, "1032"),
    ("query_pending_500", True, None), ("query_pending_4999", True, None),
])
async def test_the_gateway_reads_every_query_answer_safaricom_sends(daraja, answer, pending, code):
    safaricom, client = daraja
    safaricom.answers["/mpesa/stkpushquery/v1/query"] = [answer]
    result = await client.stk_query(body("query_success")["CheckoutRequestID"])
    assert (result.pending, result.result_code) == (pending, code)


@pytest.mark.parametrize("answer", ["error_invalid_field", "error_wrong_credentials", "error_subscriber_locked"])
async def test_the_gateway_keeps_safaricoms_error_code_and_message(daraja, answer):
    safaricom, client = daraja
    safaricom.answers["/mpesa/stkpushquery/v1/query"] = [answer]
    with pytest.raises(DarajaError) as raised:
        await client.stk_query("ws_CO_1")
    golden = example(answer)
    assert (raised.value.http_status, raised.value.error_code, raised.value.error_message) == \
        (golden["status"], golden["body"]["errorCode"], golden["body"]["errorMessage"])


async def test_an_invalid_token_answer_makes_the_gateway_fetch_a_new_token_once(daraja):
    safaricom, client = daraja
    safaricom.answers["/mpesa/stkpushquery/v1/query"] = ["error_invalid_token", "query_success"]
    assert (await client.stk_query(body("query_success")["CheckoutRequestID"])).result_code == "0"
    assert [r[0] for r in safaricom.requests].count("/oauth/v1/generate") == 2


@pytest.mark.parametrize("name, code, amount, receipt, phone", [
    ("callback_success", "0", 1.0, "NLJ7RT61SV", "254708374149"),
    ("callback_failure", "1032", None, None, None),
    ("callback_failure_text_code", "SFC_IC0003", None, None, None),
])
def test_the_gateway_reads_safaricoms_callbacks(name, code, amount, receipt, phone):
    cb = parse_stk_callback(json.loads(text(name)))
    assert (cb.result_code, cb.amount, cb.receipt, cb.phone) == (code, amount, receipt, phone)
    assert cb.checkout_request_id == body(name)["Body"]["stkCallback"]["CheckoutRequestID"]


async def test_the_callback_endpoint_takes_safaricoms_bytes(running):
    for name in ("callback_success", "callback_failure", "callback_failure_text_code"):
        resp = await running.client.post(running.settings.callback_path, data=text(name),
                                         headers={"Content-Type": "application/json"})
        assert (resp.status, await resp.json()) == (200, {"ResultCode": 0, "ResultDesc": "Accepted"}), name


@pytest.mark.parametrize("legacy, current", [
    ("callback_failure", "callback_cancelled_current"),
    ("callback_timeout_legacy", "callback_timeout_current"),
    ("callback_insufficient_legacy", "callback_insufficient_current"),
])
def test_both_wordings_of_a_result_tell_the_customer_the_same(legacy, current):
    old, new = (parse_stk_callback(body(name)) for name in (legacy, current))
    assert old.result_code == new.result_code and old.result_desc != new.result_desc
    assert customer_message(old.result_code, old.result_desc) == customer_message(new.result_code, new.result_desc)


@pytest.mark.parametrize("literal", ["1", "1.0", "1.00"])
def test_the_amount_reads_the_same_however_it_is_written(literal):
    raw = text("callback_success_wire").replace('"Value":1.00', f'"Value":{literal}')
    assert f'"Value":{literal}}}' in raw
    assert parse_stk_callback(json.loads(raw)).amount == 1


@pytest.mark.parametrize("answer", ["spike_arrest_apigee", "spike_arrest_envelope"])
async def test_both_rate_limit_answers_are_read_as_a_rate_limit(daraja, answer):
    safaricom, client = daraja
    safaricom.answers["/mpesa/stkpushquery/v1/query"] = [answer]
    with pytest.raises(RateLimited):
        await client.stk_query("ws_CO_1")
