"""Schemathesis against the live servers: every operation of the gateway's document (GET /openapi.json)
and of the standalone simulator's (GET /simulator/openapi.json), with inputs generated from the
documents, valid and invalid, sent over real HTTP to `python run.py` (simulator mode, a fresh SQLite
file) and to `python run.py simulator`. Every answer must be no server error, of a documented status,
content type and headers, and with a body (each event, for a stream) that its schema accepts.

The inputs reach the handlers, not only the validation in front of them: in some of the cases, real
values take the place of generated ones (a real payment and its paymentToken, a real order, the demo
catalogue's items, phone numbers, a prompt, a valid Daraja password), and the shop's API key, the
consumer key and secret and a fresh access token go where the documents ask for them.

Bounded for CI: a fixed seed (Hypothesis derandomized), a few examples per operation, no example
database; the coverage phase adds each operation's boundary and negative cases."""

from __future__ import annotations

import base64
import itertools
import json
import time
from collections.abc import Callable, Iterator, MutableMapping
from datetime import datetime
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import strategies as st
from schemathesis import checks as builtin

from gateway.daraja.wire import stk_password
from gateway.openapi import document as gateway_document
from simulator.openapi import document as simulator_document
from simulator.settings import DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET, SANDBOX_PASSKEY, SANDBOX_SHORTCODE
from tests.conftest import free_port
from tests.gateway.crash_harness import Process, clean_env

pytestmark = pytest.mark.slow

SHOP_KEY = "schemathesis-shop-key-0123456789abcdef"
SEED = 20261201
CHECKS = [builtin.not_a_server_error, builtin.status_code_conformance, builtin.content_type_conformance,
          builtin.response_schema_conformance, builtin.response_headers_conformance]
# The gateway also: a wrong method gets 405 with Allow; the shop's API key is really required.
GATEWAY_CHECKS = [*CHECKS, builtin.unsupported_method, builtin.ignored_auth]
# Prompts answered and settled quickly; Daraja's "slow" and "timeout" behaviours short. No abuse
# limits: every request here comes from 127.0.0.1, so the per-client limits (tested on their own)
# would answer 429 to nearly everything after the first few dozen requests and hide the handlers
# behind them; no lock on a phone with a prompt open, for the same reason (409 to every push).
SETTINGS = {
    "SIMULATOR_AUTO_ANSWER_SECONDS": "0.2",
    "SIMULATOR_CALLBACK_DELAY_SECONDS": "0.05",
    "SIMULATOR_PROMPT_LIFETIME_SECONDS": "2",
    "SIMULATOR_LATE_CALLBACK_SECONDS": "1",
    "SIMULATOR_SLOW_SECONDS": "0.2",
    "SIMULATOR_TIMEOUT_SECONDS": "1",
    "SIMULATOR_LOCK_SUBSCRIBER": "false",
    "RECONCILE_AFTER_SECONDS": "0.6",
    "RECONCILE_INTERVAL_SECONDS": "0.3",
    "RECONCILE_MAX_INTERVAL_SECONDS": "0.5",
    "PUSH_LIMIT_PER_PHONE": "0",
    "PUSH_LIMIT_PER_CLIENT": "0",
    "LOOKUP_LIMIT_PER_CLIENT": "0",
}


def config(max_examples: int, **more: Any) -> schemathesis.Config:
    return schemathesis.Config.from_dict({
        **more,
        "seed": SEED,
        "suppress-health-check": ["too_slow", "filter_too_much", "data_too_large", "large_base_example"],
        "request-timeout": 10,
        "max-stream-events": 1,  # of a live-update stream, its first event is enough
        "generation": {"mode": "all", "max-examples": max_examples, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},
    })


def start(process: Process) -> Process:
    try:
        process.start()
    except BaseException:
        process.stop()
        raise
    return process


Table = dict[str, Callable[[], st.SearchStrategy[Any]]]


def realistic(value: Any, table: Table, finish: Callable[[dict[str, Any]], dict[str, Any]] = dict,
              add: Table | None = None) -> Any:
    """`value` as generated, or with the fields `table` knows drawn from its strategies instead, and
    those of `add` added (then passed through `finish`)."""
    if not isinstance(value, dict):
        return st.just(value)
    known = {name: make() for name, make in table.items() if name in value}
    known.update({name: make() for name, make in (add or {}).items()})
    if not known:
        return st.just(value)
    return st.one_of(st.just(value), st.fixed_dictionaries(known).map(lambda drawn: finish({**value, **drawn})))


def phones(prefix: str = "07") -> st.SearchStrategy[str]:
    """Numbers nobody else uses in these tests: 0719… (2547 19…)."""
    return st.integers(0, 999_999).map(lambda n: f"{prefix}19{n:06d}")


KEYS = itertools.count()


def unique_keys(headers: Any) -> None:
    """A new Idempotency-Key for each case that has a valid one: generated keys repeat ("0", "00" …),
    and a repeated key with another body is only ever a 409."""
    key = headers.get("Idempotency-Key") if isinstance(headers, MutableMapping) else None
    if isinstance(key, str) and 0 < len(key) < 200 and key.isascii() and key.isprintable():
        headers["Idempotency-Key"] = f"{key}-{next(KEYS)}"


# -- the gateway ---------------------------------------------------------------------------------

class Seeded:
    """Ids that exist on the live gateway: a settled payment, an open order, the catalogue's items."""

    def __init__(self, url: str) -> None:
        pushed = requests.post(f"{url}/stkpush", json={"phone": "0708374149", "amount": 10}, timeout=10).json()
        self.checkout_request_id: str = pushed["checkoutRequestId"]
        self.payment_token: str = pushed["paymentToken"]
        order = requests.post(f"{url}/orders", headers={"Authorization": f"Bearer {SHOP_KEY}"}, timeout=10,
                              json={"amount": 25, "reference": "INV-ST-1"}).json()
        self.order_id: str = order["orderId"]
        self.item_ids: list[str] = [item["id"] for item in requests.get(f"{url}/catalogue", timeout=10)
                                    .json()["items"]]
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # settled: its live-update stream is one event long
            status = requests.post(f"{url}/stkpush/status", timeout=10,
                                   json={"checkoutRequestId": self.checkout_request_id}).json()
            if status["status"] != "pending":
                break
            time.sleep(0.1)

    def body_table(self, path: str) -> Table:
        table: Table = {
            "checkoutRequestId": lambda: st.just(self.checkout_request_id),
            "paymentToken": lambda: st.just(self.payment_token),
            "orderId": lambda: st.just(self.order_id),
            "phone": phones,
            "amount": lambda: st.integers(1, 5000),
        }
        if path == "/catalogue/orders":
            table["items"] = lambda: st.lists(st.fixed_dictionaries({
                "id": st.sampled_from(self.item_ids), "quantity": st.integers(1, 3)}), min_size=1, max_size=3)
        return table


SEEDED: list[Seeded] = []  # the live gateway's, for the hooks (set by the `gateway` fixture)


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("gateway")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(HOST="127.0.0.1", PORT=str(port), MPESA_ENV="simulator", SHOP_API_KEY=SHOP_KEY,
                    DATABASE_URL=f"sqlite:///{workdir}/gateway.sqlite3", **SETTINGS)
    process = start(Process("gateway", [], env, workdir, f"{url}/health"))
    try:
        # The document under test is the one the live server serves.
        assert requests.get(f"{url}/openapi.json", timeout=10).json() == gateway_document()
        SEEDED[:] = [Seeded(url)]
        yield url
    finally:
        SEEDED.clear()
        process.stop()


gateway_api = schemathesis.openapi.from_dict(
    gateway_document(), config=config(max_examples=20, auth={"openapi": {"shopApiKey": {"bearer": SHOP_KEY}}}))


@gateway_api.hook
def flatmap_path_parameters(ctx: Any, parameters: Any) -> Any:
    if not SEEDED:
        return st.just(parameters)
    seeded = SEEDED[0]
    return realistic(parameters, {"orderId": lambda: st.just(seeded.order_id),
                                  "checkoutRequestId": lambda: st.just(seeded.checkout_request_id)})


@gateway_api.hook
def flatmap_query(ctx: Any, query: Any) -> Any:
    return realistic(query, {"paymentToken": lambda: st.just(SEEDED[0].payment_token)} if SEEDED else {})


@gateway_api.hook("flatmap_body")
def gateway_bodies(ctx: Any, body: Any) -> Any:
    if not SEEDED:
        return st.just(body)
    table = SEEDED[0].body_table(ctx.operation.path)
    # A push for an amount (no order) needs one; so does an order without items.
    add = {"amount": table["amount"]} if isinstance(body, dict) and ctx.operation.path in ("/stkpush", "/orders") \
        and "orderId" not in body and "items" not in body else {}
    return realistic(body, table, add=add)


@gateway_api.parametrize()
def test_the_gateway_answers_as_its_document_says(case: Any, gateway: str) -> None:
    unique_keys(case.headers)  # (hooks do not see the coverage phase's cases)
    case.call_and_validate(base_url=gateway, checks=GATEWAY_CHECKS)


# -- the standalone simulator --------------------------------------------------------------------

SINK = "http://127.0.0.1:9/callback"  # loopback's discard port: no callback ever leaves this machine
SIMULATOR: list[dict[str, str]] = []  # the live simulator's URL and a prompt of its own


def _basic() -> str:
    return "Basic " + base64.b64encode(f"{DEMO_CONSUMER_KEY}:{DEMO_CONSUMER_SECRET}".encode()).decode()


def _token(url: str) -> str:
    resp = requests.get(f"{url}/oauth/v1/generate", params={"grant_type": "client_credentials"},
                        headers={"Authorization": _basic()}, timeout=10)
    return str(resp.json()["access_token"])


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    workdir = tmp_path_factory.mktemp("simulator")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = clean_env(HOST="127.0.0.1", MPESA_ENV="simulator", **SETTINGS)
    process = start(Process("simulator", ["simulator", "--port", str(port)], env, workdir,
                            f"{url}/simulator/api/clock"))
    try:
        assert requests.get(f"{url}/simulator/openapi.json", timeout=10).json() == \
            json.loads(json.dumps(simulator_document("")))
        prompt = requests.post(f"{url}/simulator/api/trigger", timeout=10,
                               json={"msisdn": "254719000000", "amount": 5, "callbackUrl": SINK}).json()
        SIMULATOR[:] = [{"url": url, "checkoutRequestId": prompt["checkoutRequestId"]}]
        yield url
    finally:
        SIMULATOR.clear()
        process.stop()


simulator_api = schemathesis.openapi.from_dict(json.loads(json.dumps(simulator_document(""))),
                                               config=config(max_examples=15))


@simulator_api.auth(refresh_interval=None)
class DarajaCredentials:
    """The consumer key and secret for OAuth; for Daraja's paths, a token fetched just now (the
    control API's /tokens/expire and /reset end the earlier ones)."""

    def get(self, case: Any, context: Any) -> str | None:
        if case.operation.path == "/oauth/v1/generate":
            return _basic()
        if case.operation.path.startswith("/mpesa/") and SIMULATOR:
            return f"Bearer {_token(SIMULATOR[0]['url'])}"
        return None

    def set(self, case: Any, data: str, context: Any) -> None:
        case.headers = {**(case.headers or {}), "Authorization": data}


def _daraja_request(body: dict[str, Any]) -> dict[str, Any]:
    """With a real shortcode and timestamp, the password that goes with them."""
    if {"BusinessShortCode", "Timestamp", "Password"} <= set(body):
        body["Password"] = stk_password(str(body["BusinessShortCode"]), SANDBOX_PASSKEY, str(body["Timestamp"]))
    return body


def _prompt_id() -> st.SearchStrategy[str]:
    return st.just(SIMULATOR[0]["checkoutRequestId"]) if SIMULATOR else st.text()


SIMULATOR_FIELDS: Table = {
    "msisdn": lambda: phones("2547"), "PhoneNumber": lambda: phones("2547"), "PartyA": lambda: phones("2547"),
    "amount": lambda: st.integers(1, 5000), "Amount": lambda: st.integers(1, 5000),
    "BusinessShortCode": lambda: st.just(SANDBOX_SHORTCODE), "PartyB": lambda: st.just(SANDBOX_SHORTCODE),
    "TransactionType": lambda: st.just("CustomerPayBillOnline"),
    "Timestamp": lambda: st.just(datetime.now().strftime("%Y%m%d%H%M%S")),
    "Password": lambda: st.just(""), "CheckoutRequestID": _prompt_id, "checkoutRequestId": _prompt_id,
}


@simulator_api.hook("flatmap_path_parameters")
def simulator_paths(ctx: Any, parameters: Any) -> Any:
    return realistic(parameters, SIMULATOR_FIELDS)


@simulator_api.hook("flatmap_body")
def simulator_bodies(ctx: Any, body: Any) -> Any:
    return realistic(body, SIMULATOR_FIELDS, _daraja_request)


@simulator_api.hook("map_body")
def callbacks_stay_here(ctx: Any, body: Any) -> Any:
    if isinstance(body, dict):
        for name in ("CallBackURL", "callbackUrl"):
            if name in body:
                body[name] = SINK
    return body


def _daraja_answer(case: Any, response: Any) -> list[Any]:
    """The checks Daraja's own answers skip, each answer documented as Daraja sends it: a 500 in
    Daraja's error envelope (`500.001.1001` …: Daraja's wire, not a crash; its body is still checked),
    and the empty 400 Daraja sends for a wrong consumer key or secret (no body, so no Content-Type)."""
    if not case.operation.path.startswith(("/mpesa/", "/oauth/")):
        return []
    if response.status_code == 500:
        try:
            daraja = str(response.json().get("errorCode", "")).startswith("500.")
        except (ValueError, AttributeError):
            daraja = False
        return [builtin.not_a_server_error] if daraja else []
    if case.operation.path == "/oauth/v1/generate" and response.status_code == 400 and not response.content:
        return [builtin.content_type_conformance, builtin.response_schema_conformance]
    return []


@simulator_api.parametrize()
def test_the_simulator_answers_as_its_document_says(case: Any, simulator: str) -> None:
    response = case.call(base_url=simulator)
    skipped = _daraja_answer(case, response)
    case.validate_response(response, checks=[check for check in CHECKS if check not in skipped])
