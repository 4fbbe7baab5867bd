"""The simulator against Safaricom's own examples (golden/), never against the gateway: it must
accept Safaricom's sample request as it is, and answer in the shapes Safaricom sends (the JSON type
of every field a typed client binds to, string-vs-number quirks included), in each profile the
wordings, forms and bytes captured for that time (SIMULATOR_PROFILE: current, legacy).

The simulator runs as `python run.py simulator`, as a client in another language would use it."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.conftest import free_port
from tests.contract.golden import body, example, shape, text
from tests.daraja_http import DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET, nairobi_timestamp, stk_password

ROOT = Path(__file__).resolve().parents[2]
PAYS, POOR, CANCELS, INTERACTIVE = "254700000000", "254700000001", "254700000002", "254708374149"
PENDING = {"current": "4999", "legacy": "500"}


class Receiver:
    """A merchant's callback endpoint on loopback: keeps every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        self.raw: dict[str, str] = {}  # CheckoutRequestID -> the bytes as they came
        received, raw = self.bodies, self.raw

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                text = self.rfile.read(int(self.headers["Content-Length"])).decode()
                received.append(json.loads(text))
                raw[received[-1]["Body"]["stkCallback"]["CheckoutRequestID"]] = text
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ResultCode": 0, "ResultDesc": "Accepted"}')

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/cb"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def callback_for(self, checkout_request_id: str, timeout: float = 5.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for b in self.bodies:
                if b["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_request_id:
                    return b
            time.sleep(0.05)
        raise AssertionError(f"no callback for {checkout_request_id}")


class Simulator:
    def __init__(self, base: str) -> None:
        self.base = base
        basic = base64.b64encode(f"{DEMO_CONSUMER_KEY}:{DEMO_CONSUMER_SECRET}".encode()).decode()
        self.oauth = requests.get(f"{base}/oauth/v1/generate?grant_type=client_credentials",
                                  headers={"Authorization": f"Basic {basic}"}, timeout=5)
        self.token = self.oauth.json()["access_token"]

    def post(self, path: str, payload: Any, token: str | None = None) -> requests.Response:
        return requests.post(self.base + path, json=payload, timeout=10,
                             headers={"Authorization": f"Bearer {token or self.token}"})

    def push(self, phone: str, callback_url: str, **changes: Any) -> requests.Response:
        """Safaricom's sample request as it is (its 2021 Password and Timestamp too), to `phone`."""
        request = {**body("stk_push_request"), "PartyA": phone, "PhoneNumber": phone, "CallBackURL": callback_url}
        return self.post("/mpesa/stkpush/v1/processrequest", {**request, **changes})

    def query(self, checkout_request_id: str) -> requests.Response:
        ts = nairobi_timestamp()
        return self.post("/mpesa/stkpushquery/v1/query", {
            "BusinessShortCode": "174379",
            "Password": stk_password("174379", example("stk_push_request")["passkey"], ts),
            "Timestamp": ts, "CheckoutRequestID": checkout_request_id})


def start(port: int, **settings: str) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPESA_", "SIMULATOR_"))}
    env.update({"SIMULATOR_AUTO_ANSWER_SECONDS": "0.2", "SIMULATOR_CALLBACK_DELAY_SECONDS": "0.05",
                "SIMULATOR_PROMPT_LIFETIME_SECONDS": "30", **settings})
    proc = subprocess.Popen([sys.executable, "run.py", "simulator", "--port", str(port)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            requests.get(f"http://127.0.0.1:{port}/simulator/api/scenarios", timeout=5)
            return proc
        except requests.RequestException:  # not listening yet, or a start-up too busy to answer in time
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the simulator did not start")


@pytest.fixture(scope="module", params=["current", "legacy"])
def simulator(request: pytest.FixtureRequest) -> Iterator[tuple[Simulator, Receiver, str]]:
    port = free_port()
    proc = start(port, SIMULATOR_PROFILE=request.param)
    receiver = Receiver()
    try:
        yield Simulator(f"http://127.0.0.1:{port}"), receiver, request.param
    finally:
        proc.kill()
        proc.wait()
        receiver.server.shutdown()


def test_oauth_answers_in_safaricoms_shape(simulator):
    sim, _, _ = simulator
    assert sim.oauth.status_code == 200
    assert shape(sim.oauth.json()) == shape(body("oauth_token"))
    assert sim.oauth.json()["expires_in"] == "3599"


def test_safaricoms_sample_request_is_accepted_as_it_is(simulator):
    sim, receiver, _ = simulator
    answer = sim.push(PAYS, receiver.url)
    assert answer.status_code == 200
    assert shape(answer.json()) == shape(body("stk_push_accepted"))
    assert answer.json()["ResponseCode"] == "0"
    assert answer.json()["CheckoutRequestID"].endswith(PAYS[3:])  # Daraja's id ends with the subscriber
    receiver.callback_for(answer.json()["CheckoutRequestID"])  # settled: the phone is free for the next test


def test_success_callback_has_safaricoms_shape(simulator):
    sim, receiver, _ = simulator
    cid = sim.push(PAYS, receiver.url).json()["CheckoutRequestID"]
    sent = receiver.callback_for(cid)
    golden = body("callback_success")
    assert shape(sent) == shape(golden)
    items = {i["Name"]: i for i in sent["Body"]["stkCallback"]["CallbackMetadata"]["Item"]}
    assert "Value" not in items["Balance"]
    assert len(str(items["TransactionDate"]["Value"])) == 14 and str(items["PhoneNumber"]["Value"]) == PAYS


def test_failure_callback_has_safaricoms_shape(simulator):
    sim, receiver, _ = simulator
    cid = sim.push(CANCELS, receiver.url).json()["CheckoutRequestID"]
    assert shape(receiver.callback_for(cid)) == shape(body("callback_failure"))


def test_query_answers_have_safaricoms_shapes(simulator):
    sim, receiver, profile = simulator
    waiting = sim.push(INTERACTIVE, receiver.url).json()["CheckoutRequestID"]
    pending = sim.query(waiting)
    golden = example(f"query_pending_{PENDING[profile]}")
    assert golden["profile"] == profile
    assert pending.status_code == golden["status"]
    assert shape(pending.json()) == shape(golden["body"])
    assert {k: pending.json()[k] for k in ("ResultCode", "ResultDesc", "errorCode", "errorMessage")
            if k in golden["body"]} == {k: golden["body"][k] for k in ("ResultCode", "ResultDesc", "errorCode",
                                                                      "errorMessage") if k in golden["body"]}
    requests.post(f"{sim.base}/simulator/api/prompts/{waiting}/cancel", timeout=5)
    failed = sim.query(waiting)
    assert failed.status_code == 200 and shape(failed.json()) == shape(body("query_failed"))
    assert failed.json()["ResponseDescription"] == body("query_failed")["ResponseDescription"]  # "successsfully"
    cancelled = body("query_failed")["ResultDesc"] if profile == "legacy" else \
        body("callback_cancelled_current")["Body"]["stkCallback"]["ResultDesc"]
    assert failed.json()["ResultDesc"] == cancelled
    paid = sim.push(PAYS, receiver.url).json()["CheckoutRequestID"]
    receiver.callback_for(paid)
    assert shape(sim.query(paid).json()) == shape(body("query_success"))


@pytest.mark.parametrize("golden, make", [
    ("error_invalid_field", lambda sim, url: sim.push(PAYS, url, BusinessShortCode=None)),
    ("error_invalid_token", lambda sim, url: sim.post("/mpesa/stkpush/v1/processrequest", {}, token="not-a-token")),
    ("error_wrong_credentials", lambda sim, url: sim.push(PAYS, url, Password=base64.b64encode(b"wrong").decode())),
])
def test_errors_come_in_safaricoms_envelope(simulator, golden, make):
    sim, receiver, _ = simulator
    answer = make(sim, receiver.url)
    expected = example(golden)
    assert answer.status_code == expected["status"]
    assert shape(answer.json()) == shape(expected["body"])
    assert (answer.json()["errorCode"], answer.json()["errorMessage"]) == \
        (expected["body"]["errorCode"], expected["body"]["errorMessage"])


def test_a_second_push_to_a_busy_phone_gets_safaricoms_lock_error(simulator):
    sim, receiver, _ = simulator
    phone = "254708374150"
    assert sim.push(phone, receiver.url).status_code == 200
    locked = sim.push(phone, receiver.url)
    golden = example("error_subscriber_locked")
    assert locked.status_code == golden["status"]
    assert (locked.json()["errorCode"], locked.json()["errorMessage"]) == \
        (golden["body"]["errorCode"], golden["body"]["errorMessage"])


# -- what changed over time: each profile answers as the captures of its time ----------------------

WORDINGS = {  # (number, golden file per profile)
    "cancelled": (CANCELS, {"current": "callback_cancelled_current", "legacy": "callback_failure"}),
    "insufficient funds": (POOR, {"current": "callback_insufficient_current",
                                  "legacy": "callback_insufficient_legacy"}),
}


@pytest.mark.parametrize("case", sorted(WORDINGS))
def test_failure_wordings_are_the_profiles_captures(simulator, case):
    sim, receiver, profile = simulator
    number, files = WORDINGS[case]
    golden = example(files[profile])
    assert golden["profile"] == profile
    cid = sim.push(number, receiver.url).json()["CheckoutRequestID"]
    sent = receiver.callback_for(cid)["Body"]["stkCallback"]
    expected = golden["body"]["Body"]["stkCallback"]
    assert (sent["ResultCode"], sent["ResultDesc"]) == (expected["ResultCode"], expected["ResultDesc"])


def test_an_unanswered_prompt_times_out_with_the_profiles_wording(simulator):
    sim, receiver, profile = simulator
    cid = sim.push("254708374151", receiver.url).json()["CheckoutRequestID"]
    requests.post(f"{sim.base}/simulator/api/prompts/{cid}/ignore", timeout=5)
    expected = body(f"callback_timeout_{profile}")["Body"]["stkCallback"]
    sent = receiver.callback_for(cid)["Body"]["stkCallback"]
    assert (sent["ResultCode"], sent["ResultDesc"]) == (expected["ResultCode"], expected["ResultDesc"])


def test_the_success_callback_is_byte_for_byte_daraja_s(simulator):
    """Compact JSON and `"Value":1.00`, the literal bytes a typed client (a Go int, a strict schema) meets."""
    sim, receiver, _ = simulator
    answer = sim.push(PAYS, receiver.url)
    cid, merchant = answer.json()["CheckoutRequestID"], answer.json()["MerchantRequestID"]
    raw = receiver.raw[cid] if cid in receiver.raw else (receiver.callback_for(cid) and receiver.raw[cid])
    sent = json.loads(raw)["Body"]["stkCallback"]
    items = {i["Name"]: i.get("Value") for i in sent["CallbackMetadata"]["Item"]}
    golden = text("callback_success_wire")
    g = json.loads(golden)["Body"]["stkCallback"]
    gitems = {i["Name"]: i.get("Value") for i in g["CallbackMetadata"]["Item"]}
    expected = (golden.replace(g["MerchantRequestID"], merchant).replace(g["CheckoutRequestID"], cid)
                .replace(gitems["MpesaReceiptNumber"], items["MpesaReceiptNumber"])
                .replace(str(gitems["TransactionDate"]), str(items["TransactionDate"]))
                .replace(str(gitems["PhoneNumber"]), PAYS))
    assert raw == expected
    assert '{"Name":"Amount","Value":1.00}' in raw


def test_an_invalid_token_answer_has_the_captured_headers(simulator):
    sim, _, _ = simulator
    answer = sim.post("/mpesa/stkpush/v1/processrequest", {}, token="not-a-token")
    golden = example("error_invalid_token")
    for name, value in golden["headers"].items():
        assert answer.headers[name] == value


@pytest.mark.parametrize("golden", ["error_invalid_phone", "error_invalid_callback_url"])
def test_requests_daraja_refuses_are_refused_the_same_way(simulator, golden):
    sim, receiver, _ = simulator
    case = example(golden)
    answer = sim.push(PAYS, receiver.url, **case["request"])
    assert answer.status_code == case["status"]
    assert (answer.json()["errorCode"], answer.json()["errorMessage"]) == \
        (case["body"]["errorCode"], case["body"]["errorMessage"])


def test_the_confirmation_sms_reads_as_the_profile_says(simulator):
    sim, receiver, profile = simulator
    cid = sim.push(PAYS, receiver.url, Amount="100", AccountReference="CART_1").json()["CheckoutRequestID"]
    receiver.callback_for(cid)
    sms = requests.get(f"{sim.base}/simulator/api/prompts/{cid}", timeout=5).json()["smsText"]
    if profile == "current":
        pattern = sms_pattern(body("sms_confirmation_current"))
        assert re.fullmatch(pattern, sms), (pattern, sms)
    else:
        assert sms.endswith("Transaction cost, Ksh0.00.") and "Amount you can transact" not in sms


def sms_pattern(sample: str) -> str:
    """The sample SMS with its receipt, date, time and amounts left open."""
    slots = {"UAB1C2D3E4": r"[A-Z0-9]{10}", "1/12/26": r"\d{1,2}/\d{1,2}/\d\d", "4:05 PM": r"\d{1,2}:\d\d [AP]M",
             "1,234.00": r"[\d,]+\.\d\d", "499,900.00": r"[\d,]+\.\d\d"}
    pattern = re.escape(sample)
    for token, rule in slots.items():
        assert re.escape(token) in pattern, token
        pattern = pattern.replace(re.escape(token), rule)
    return pattern


@pytest.fixture(scope="module", params=["current", "legacy"])
def limited(request: pytest.FixtureRequest) -> Iterator[tuple[Simulator, str]]:
    port = free_port()
    proc = start(port, SIMULATOR_PROFILE=request.param, SIMULATOR_SPIKE_ARREST_PER_SECOND="1")
    try:
        yield Simulator(f"http://127.0.0.1:{port}"), request.param
    finally:
        proc.kill()
        proc.wait()


def test_past_the_rate_limit_the_answer_is_the_profiles(limited):
    sim, profile = limited
    first, refused = (sim.post("/mpesa/stkpushquery/v1/query", {}) for _ in range(2))  # within one second
    assert first.status_code == 400  # through the limit: Daraja's own check of the (empty) query
    golden = example("spike_arrest_apigee" if profile == "current" else "spike_arrest_envelope")
    assert refused.status_code == golden["status"]
    assert shape(refused.json()) == shape(golden["body"])
    if profile == "current":
        assert refused.json()["fault"]["detail"] == golden["body"]["fault"]["detail"]
    else:
        assert refused.json()["errorMessage"] == golden["body"]["errorMessage"]
