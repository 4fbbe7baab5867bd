"""The simulator against Safaricom's own examples (golden/), never against the gateway: it must
accept Safaricom's sample request as it is, and answer in the shapes Safaricom sends (the JSON type
of every field a typed client binds to, string-vs-number quirks included).

The simulator runs as `python run.py simulator`, as a client in another language would use it."""

from __future__ import annotations

import base64
import json
import os
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
from tests.contract.golden import body, example, shape
from tests.daraja_http import DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET, nairobi_timestamp, stk_password

ROOT = Path(__file__).resolve().parents[2]
PAYS, CANCELS, INTERACTIVE = "254700000000", "254700000002", "254708374149"


class Receiver:
    """A merchant's callback endpoint on loopback: keeps every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[Any] = []
        received = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
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
            requests.get(f"http://127.0.0.1:{port}/simulator/api/scenarios", timeout=1)
            return proc
        except requests.ConnectionError:
            time.sleep(0.1)
    proc.kill()
    raise AssertionError("the simulator did not start")


@pytest.fixture(scope="module", params=["500", "4999"])
def simulator(request: pytest.FixtureRequest) -> Iterator[tuple[Simulator, Receiver, str]]:
    port = free_port()
    proc = start(port, SIMULATOR_QUERY_PENDING_STYLE=request.param)
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
    sim, receiver, style = simulator
    waiting = sim.push(INTERACTIVE, receiver.url).json()["CheckoutRequestID"]
    pending = sim.query(waiting)
    golden = example(f"query_pending_{style}")
    assert pending.status_code == golden["status"]
    assert shape(pending.json()) == shape(golden["body"])
    assert {k: pending.json()[k] for k in ("ResultCode", "ResultDesc", "errorCode", "errorMessage")
            if k in golden["body"]} == {k: golden["body"][k] for k in ("ResultCode", "ResultDesc", "errorCode",
                                                                      "errorMessage") if k in golden["body"]}
    requests.post(f"{sim.base}/simulator/api/prompts/{waiting}/cancel", timeout=5)
    failed = sim.query(waiting)
    assert failed.status_code == 200 and shape(failed.json()) == shape(body("query_failed"))
    assert failed.json()["ResponseDescription"] == body("query_failed")["ResponseDescription"]  # "successsfully"
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
