"""The simulator's tools as a user runs them: `python run.py sim …` against a real standalone
simulator process, and the `daraja_simulator` pytest fixture inside a user's own test suite.

Everything here is a subprocess: the simulator (`python run.py simulator`), each CLI command and
the user's pytest run. Callbacks go to a small `http.server` receiver in this process.
"""

from __future__ import annotations

import base64
import http.server
import json
import os
import re
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.daraja_http import DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET, SANDBOX_PASSKEY, nairobi_timestamp, stk_password

ROOT = Path(__file__).resolve().parents[2]
RUN = str(ROOT / "run.py")
INTERACTIVE = "254708374149"
PAYS = "254700000000"
SHORTCODE = "174379"
CLOCK_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(moved \+30 s\)")

# Settings the tests pass explicitly; anything else of these in the caller's environment is dropped.
OWN_SETTINGS = ("PORT", "HOST", "MPESA_", "SIMULATOR_", "CALLBACK_URL", "DATABASE_URL", "PYTEST_ADDOPTS",
                "PYTEST_PLUGINS")


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_SETTINGS)}
    env.update(settings)
    return env


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        time.sleep(0.05)


class Receiver:
    """A merchant's callback endpoint on a thread: records every JSON body, answers 200."""

    def __init__(self) -> None:
        self.bodies: list[dict[str, Any]] = []
        bodies = self.bodies

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                payload = b'{"ResultCode": 0, "ResultDesc": "Accepted"}'
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/mpesa/callback"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        wait_until(lambda: len(self.bodies) >= count, timeout, f"{count} callback(s) received")
        return self.bodies


class SimulatorProcess:
    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.log = log
        self.url = f"http://127.0.0.1:{port}/simulator"
        self.base_url = f"http://127.0.0.1:{port}"

    def api(self, method: str, path: str, body: Any = None) -> Any:
        resp = requests.request(method, f"{self.url}/api{path}", json=body, timeout=5)
        assert resp.status_code < 400, resp.text
        return resp.json() if resp.content else None

    def token(self) -> str:
        resp = requests.get(f"{self.base_url}/oauth/v1/generate", params={"grant_type": "client_credentials"},
                            auth=(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET), timeout=5)
        assert resp.status_code == 200, resp.text
        return resp.json()["access_token"]

    def push(self, token: str, phone: str = INTERACTIVE) -> requests.Response:
        ts = nairobi_timestamp()
        body = {"BusinessShortCode": SHORTCODE, "Password": stk_password(SHORTCODE, SANDBOX_PASSKEY, ts),
                "Timestamp": ts, "TransactionType": "CustomerPayBillOnline", "Amount": 10, "PartyA": phone,
                "PartyB": SHORTCODE, "PhoneNumber": phone, "CallBackURL": "http://127.0.0.1:9/cb",
                "AccountReference": "CLI", "TransactionDesc": "CLI test"}
        return requests.post(f"{self.base_url}/mpesa/stkpush/v1/processrequest", json=body,
                             headers={"Authorization": f"Bearer {token}"}, timeout=5)


@pytest.fixture(scope="module")
def simulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimulatorProcess]:
    """`python run.py simulator` on a free port with short timings, for the whole module."""
    port = free_port()
    log = tmp_path_factory.mktemp("simulator") / "output.log"
    env = clean_env(PORT=str(port), HOST="127.0.0.1", MPESA_ENV="simulator",
                    SIMULATOR_AUTO_ANSWER_SECONDS="0.2", SIMULATOR_CALLBACK_DELAY_SECONDS="0.05",
                    SIMULATOR_PROMPT_LIFETIME_SECONDS="20", SIMULATOR_CALLBACK_TIMEOUT_SECONDS="2")
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, RUN, "simulator"], cwd=log.parent, env=env,
                                stdout=out, stderr=subprocess.STDOUT)
    sim = SimulatorProcess(port, log)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"the simulator exited ({proc.returncode}):\n{log.read_text()}")
        try:
            return requests.get(f"{sim.url}/api/clock", timeout=1).status_code == 200
        except requests.RequestException:
            return False

    try:
        wait_until(up, 20, "the simulator answering")
        yield sim
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


@pytest.fixture
def sim(simulator: SimulatorProcess) -> SimulatorProcess:
    simulator.api("POST", "/reset")
    return simulator


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec = Receiver()
    rec.thread.start()
    yield rec
    rec.server.shutdown()
    rec.server.server_close()


def cli(*args: str, url: str | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, RUN, "sim", *(["--url", url] if url else []), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, cwd=ROOT,
                          env=env if env is not None else clean_env())


def cli_json(sim: SimulatorProcess, *args: str) -> Any:
    result = cli(*args, url=sim.url)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


# -- the sim command -----------------------------------------------------------------------------------


def test_cli_prompts_prints_a_table_newest_first_and_json_on_request(sim):
    first = sim.api("POST", "/trigger", {"msisdn": INTERACTIVE, "amount": 120, "callbackUrl": "http://127.0.0.1:9/"})
    second = sim.api("POST", "/trigger", {"msisdn": "254711000001", "amount": 7, "callbackUrl": "http://127.0.0.1:9/"})

    result = cli("prompts", url=sim.url)
    assert result.returncode == 0, result.stderr
    header, *rows = result.stdout.splitlines()
    assert header.split()[:5] == ["CheckoutRequestID", "phone", "amount", "state", "result"]
    assert [row.split()[:4] for row in rows] == [
        [second["checkoutRequestId"], "254711000001", "7", "open"],
        [first["checkoutRequestId"], INTERACTIVE, "120", "open"],
    ]
    assert re.search(r"\d+s$", rows[0])  # seconds left on an open prompt

    filtered = cli("prompts", "--msisdn", INTERACTIVE, url=sim.url)
    assert [row.split()[0] for row in filtered.stdout.splitlines()[1:]] == [first["checkoutRequestId"]]
    assert cli("prompts", "--state", "settled", url=sim.url).stdout.strip() == "no prompts"
    as_json = cli_json(sim, "--json", "prompts")
    assert [p["checkoutRequestId"] for p in as_json] == [second["checkoutRequestId"], first["checkoutRequestId"]]


def test_cli_trigger_then_pin_pays_and_the_callback_reaches_the_callback_url(sim, receiver):
    prompt = cli_json(sim, "trigger", INTERACTIVE, "50", "--callback-url", receiver.url, "--reference", "ORDER-7")
    assert (prompt["state"], prompt["msisdn"], prompt["amount"], prompt["accountReference"]) == (
        "open", INTERACTIVE, 50, "ORDER-7")
    paid = cli_json(sim, "pin", prompt["checkoutRequestId"])
    assert (paid["state"], paid["resultCode"]) == ("settled", "0")
    assert re.fullmatch(r"[A-Z0-9]{10}", paid["receipt"])
    [body] = receiver.wait_for(1)
    callback = body["Body"]["stkCallback"]
    assert (callback["CheckoutRequestID"], callback["ResultCode"]) == (prompt["checkoutRequestId"], 0)
    row = cli("prompts", url=sim.url).stdout.splitlines()[1]
    assert row.split()[3:6] == ["settled", "0", paid["receipt"]]


@pytest.mark.parametrize("command, code", [("wrong-pin", "2001"), ("cancel", "1032"), ("ignore", "1037")])
def test_cli_answers_a_prompt_the_way_the_command_says(sim, receiver, command, code):
    prompt = sim.api("POST", "/trigger", {"msisdn": INTERACTIVE, "amount": 10, "callbackUrl": receiver.url})
    answered = cli_json(sim, command, prompt["checkoutRequestId"])
    assert (answered["state"], answered["resultCode"]) == ("settled", code)
    [body] = receiver.wait_for(1)
    assert body["Body"]["stkCallback"]["ResultCode"] == int(code)
    again = cli("pin", prompt["checkoutRequestId"], url=sim.url)
    assert again.returncode == 1
    assert "HTTP 409" in again.stderr and "already settled" in again.stderr


def test_cli_pin_with_an_explicit_wrong_pin_fails_2001_and_an_unknown_id_exits_1(sim):
    prompt = sim.api("POST", "/trigger", {"msisdn": INTERACTIVE, "amount": 10, "callbackUrl": "http://127.0.0.1:9/"})
    assert cli_json(sim, "pin", prompt["checkoutRequestId"], "9999")["resultCode"] == "2001"
    missing = cli("pin", "ws_CO_nothing", url=sim.url)
    assert (missing.returncode, missing.stdout) == (1, "")
    assert "HTTP 404" in missing.stderr and "no such prompt" in missing.stderr


def test_cli_faults_queue_list_and_clear(sim, receiver):
    added = cli_json(sim, "faults", "callback=never", "--count", "1")
    assert added == {"remaining": 1, "msisdn": None, "behaviour": {"callback": "never"}}
    assert cli_json(sim, "faults")["next"] == [added]

    silent = sim.api("POST", "/trigger", {"msisdn": PAYS, "amount": 10, "callbackUrl": receiver.url})
    loud = sim.api("POST", "/trigger", {"msisdn": "254700000001", "amount": 10, "callbackUrl": receiver.url})
    for cid in (silent["checkoutRequestId"], loud["checkoutRequestId"]):  # both scripted: settle by themselves
        wait_until(lambda cid=cid: sim.api("GET", f"/prompts/{cid}")["state"] == "settled", 5, "settled")
    receiver.wait_for(1)
    time.sleep(0.3)  # longer than the callback delay: the first one's callback would have come by now
    assert [b["Body"]["stkCallback"]["CheckoutRequestID"] for b in receiver.bodies] == [loud["checkoutRequestId"]]

    cli_json(sim, "faults", "push=error", "amount_format=decimal", "--count", "2", "--msisdn", INTERACTIVE)
    subscriber = cli_json(sim, "faults", "--subscriber", "254711000001", "push=busy", "callback_delay=2.5")
    assert subscriber == {"push": "busy", "callback_delay": 2.5}
    listed = cli_json(sim, "faults")
    assert listed == {"next": [{"remaining": 2, "msisdn": INTERACTIVE,
                                "behaviour": {"push": "error", "amount_format": "decimal"}}],
                      "subscribers": {"254711000001": {"push": "busy", "callback_delay": 2.5}}}
    cleared_one = cli("faults", "--subscriber", "254711000001", "--clear", url=sim.url)
    assert (cleared_one.returncode, cleared_one.stdout) == (0, "")
    assert cli_json(sim, "faults", "--clear") == {"next": [], "subscribers": {}}
    assert sim.api("GET", "/faults") == {"next": [], "subscribers": {}}


@pytest.mark.parametrize("args, message", [
    (["push=explode"], "fault: push must be one of accept, locked, error, busy, timeout, slow"),
    (["callback_delay=-1"], "fault: callback_delay must be a number of seconds from 0 to 3600"),
    (["callback=never", "--count", "0"], "count must be a whole number from 1 to 10000"),
    (["colour=red"], "unknown field(s) colour"),
    (["callback"], "'callback' is not key=value"),
], ids=["bad-push", "negative-delay", "count-0", "unknown-key-only", "no-equals"])
def test_cli_faults_with_a_bad_setting_exits_1_with_the_reason(sim, args, message):
    result = cli("faults", *args, url=sim.url)
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith("error: ") and message in result.stderr
    assert sim.api("GET", "/faults") == {"next": [], "subscribers": {}}


def test_cli_clock_moves_time_so_an_open_prompt_expires_with_1037(sim, receiver):
    prompt = sim.api("POST", "/trigger", {"msisdn": INTERACTIVE, "amount": 10, "callbackUrl": receiver.url})
    moved = cli("clock", "30", url=sim.url)
    assert moved.returncode == 0, moved.stderr
    assert CLOCK_LINE.fullmatch(moved.stdout.strip())
    assert CLOCK_LINE.fullmatch(cli("clock", url=sim.url).stdout.strip())  # reading it does not move it
    assert sim.api("GET", "/clock")["offsetSeconds"] == 30.0
    assert sim.api("GET", f"/prompts/{prompt['checkoutRequestId']}")["resultCode"] == "1037"
    [body] = receiver.wait_for(1)
    assert body["Body"]["stkCallback"]["ResultCode"] == 1037
    bad = cli("clock", "-5", url=sim.url)
    assert bad.returncode == 1 and "advanceSeconds must be a number of seconds" in bad.stderr


def test_cli_expire_tokens_makes_the_old_token_invalid(sim):
    token = sim.token()
    assert sim.push(token).status_code == 200
    assert cli_json(sim, "expire-tokens") == {"expired": 1}
    refused = sim.push(token, "254711000001")
    assert (refused.status_code, refused.json()["errorCode"]) == (404, "404.001.03")
    assert sim.push(sim.token(), "254711000001").status_code == 200


def test_cli_journal_lists_callbacks_and_resend_posts_one_again(sim, receiver):
    prompt = sim.api("POST", "/trigger", {"msisdn": PAYS, "amount": 10, "callbackUrl": receiver.url})
    receiver.wait_for(1)
    entries = wait_until(lambda: cli_json(sim, "journal", "--kind", "callback"), 5, "the callback journaled")
    assert [(e["kind"], e["url"], e["status"], e["checkoutRequestId"]) for e in entries] == [
        ("callback", receiver.url, 200, prompt["checkoutRequestId"])]

    resent = cli_json(sim, "resend", str(entries[0]["id"]))
    assert resent == {"checkoutRequestId": prompt["checkoutRequestId"], "url": receiver.url, "queued": True}
    first, second = receiver.wait_for(2)
    assert second == first
    missing = cli("resend", "99999", url=sim.url)
    assert missing.returncode == 1 and "no such callback in the journal" in missing.stderr


def test_cli_reset_forgets_prompts_faults_and_journal(sim):
    sim.api("POST", "/trigger", {"msisdn": INTERACTIVE, "amount": 10, "callbackUrl": "http://127.0.0.1:9/"})
    sim.api("POST", "/faults", {"push": "error"})
    sim.push(sim.token(), "254711000001")  # journaled, and uses up the fault
    sim.api("POST", "/faults", {"push": "error"})
    assert cli_json(sim, "reset") == {"reset": True}
    assert cli("prompts", url=sim.url).stdout.strip() == "no prompts"
    assert cli_json(sim, "journal") == []
    assert cli_json(sim, "faults") == {"next": [], "subscribers": {}}


def test_cli_scenarios_lists_the_catalogue(sim):
    scenarios = cli_json(sim, "scenarios")
    assert {s["msisdn"] for s in scenarios} == {INTERACTIVE} | {f"2547000000{i:02d}" for i in range(10)}
    assert {s["msisdn"]: s["push"] for s in scenarios}["254700000006"] == "locked"


def test_cli_finds_the_simulator_from_simulator_url_or_port_without_url(sim):
    sim.api("POST", "/trigger", {"msisdn": INTERACTIVE, "amount": 10, "callbackUrl": "http://127.0.0.1:9/"})
    by_url = cli("prompts", env=clean_env(SIMULATOR_URL=sim.url))
    by_port = cli("prompts", env=clean_env(PORT=str(sim.port)))
    for result in (by_url, by_port):
        assert result.returncode == 0, result.stderr
        assert INTERACTIVE in result.stdout


def test_cli_exits_1_when_the_simulator_cannot_be_reached():
    url = f"http://127.0.0.1:{free_port()}/simulator"
    result = cli("prompts", url=url)
    assert (result.returncode, result.stdout) == (1, "")
    assert f"cannot reach the simulator at {url}" in result.stderr


@pytest.mark.parametrize("shop_setting", [
    {"DATABASE_URL": "postgres://x/y"}, {"SHOP_API_KEY": "too-short"}, {"MPESA_ENV": "production"},
    {"CALLBACK_URL": "https://x/"},
], ids=["postgres", "short-shop-api-key", "production-without-credentials", "callback-without-path"])
def test_standalone_simulator_starts_whatever_the_shops_settings_say(tmp_path, shop_setting):
    port = free_port()
    log = tmp_path / "output.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, RUN, "simulator", "--port", str(port)], cwd=tmp_path,
                                env=clean_env(HOST="127.0.0.1", **shop_setting), stdout=out, stderr=subprocess.STDOUT)
    try:
        def token() -> requests.Response | None:
            assert proc.poll() is None, f"the simulator exited ({proc.returncode}):\n{log.read_text()}"
            try:
                return requests.get(f"http://127.0.0.1:{port}/oauth/v1/generate", timeout=1,
                                    params={"grant_type": "client_credentials"},
                                    auth=(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET))
            except requests.RequestException:
                return None
        assert wait_until(token, 20, "the simulator answering").status_code == 200
    finally:
        proc.terminate()
        proc.wait(10)


def test_standalone_simulator_output_names_the_consumer_key_but_no_secret(sim):
    sim.push(sim.token())
    output = sim.log.read_text()
    assert f"Daraja simulator running at http://127.0.0.1:{sim.port}" in output
    assert DEMO_CONSUMER_KEY in output
    credentials = base64.b64encode(f"{DEMO_CONSUMER_KEY}:{DEMO_CONSUMER_SECRET}".encode()).decode()
    for secret in (DEMO_CONSUMER_SECRET, SANDBOX_PASSKEY, credentials):
        assert secret not in output


# -- the pytest plugin ---------------------------------------------------------------------------------

USER_TESTS = '''
import base64
import http.server
import json
import threading
import time
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
import requests

CALLBACKS = []


def nairobi_timestamp():
    return datetime.now(ZoneInfo("Africa/Nairobi")).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode, passkey, timestamp):
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        CALLBACKS.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"ResultCode": 0, "ResultDesc": "Accepted"}')

    def log_message(self, *args):
        pass


@pytest.fixture
def callback_url():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/mpesa/callback"
    server.shutdown()
    server.server_close()


def test_checkout_pays(daraja_simulator, callback_url):
    base = daraja_simulator.base_url
    token = requests.get(f"{base}/oauth/v1/generate", params={"grant_type": "client_credentials"},
                         auth=(daraja_simulator.consumer_key, daraja_simulator.consumer_secret),
                         timeout=5).json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    shortcode, passkey = daraja_simulator.shortcode, daraja_simulator.passkey
    ts = nairobi_timestamp()
    pushed = requests.post(f"{base}/mpesa/stkpush/v1/processrequest", headers=headers, timeout=5, json={
        "BusinessShortCode": shortcode, "Password": stk_password(shortcode, passkey, ts), "Timestamp": ts,
        "TransactionType": "CustomerPayBillOnline", "Amount": 10, "PartyA": "254708374149",
        "PartyB": shortcode, "PhoneNumber": "254708374149", "CallBackURL": callback_url,
        "AccountReference": "ORDER-1", "TransactionDesc": "Order 1"})
    assert pushed.status_code == 200, pushed.text
    checkout_id = pushed.json()["CheckoutRequestID"]

    daraja_simulator.pin(checkout_id)

    deadline = time.monotonic() + 5
    while not CALLBACKS and time.monotonic() < deadline:
        time.sleep(0.02)
    assert CALLBACKS[0]["Body"]["stkCallback"]["CheckoutRequestID"] == checkout_id
    assert CALLBACKS[0]["Body"]["stkCallback"]["ResultCode"] == 0
    while not daraja_simulator.prompt(checkout_id)["callbacks"] and time.monotonic() < deadline:
        time.sleep(0.02)
    ts = nairobi_timestamp()
    queried = requests.post(f"{base}/mpesa/stkpushquery/v1/query", headers=headers, timeout=5, json={
        "BusinessShortCode": shortcode, "Password": stk_password(shortcode, passkey, ts), "Timestamp": ts,
        "CheckoutRequestID": checkout_id})
    assert queried.status_code == 200, queried.text
    assert queried.json()["ResultCode"] == "0"


def test_state_was_reset_between_tests(daraja_simulator):
    assert daraja_simulator.prompts() == []
    assert daraja_simulator.journal() == []
'''

USER_CONFTEST = '''
import pytest


@pytest.fixture(scope="session")
def daraja_simulator_env():
    return {"SIMULATOR_PIN": "2468"}
'''

USER_OVERRIDE_TEST = '''
def test_the_pin_comes_from_the_overridden_settings(daraja_simulator):
    assert daraja_simulator.pin_code == "2468"
    trigger = {"msisdn": "254708374149", "amount": 10, "callbackUrl": "http://127.0.0.1:9/cb"}
    first = daraja_simulator.control.call("POST", "/trigger", trigger)
    assert daraja_simulator.pin(first["checkoutRequestId"], "12345")["resultCode"] == "2001"
    second = daraja_simulator.control.call("POST", "/trigger", trigger)
    assert daraja_simulator.pin(second["checkoutRequestId"])["resultCode"] == "0"
'''


def run_user_suite(directory: Path, test_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "pytest", str(test_file), "-q", "-p", "no:cacheprovider"],
                          cwd=directory, capture_output=True, text=True, timeout=60, env=clean_env())


def test_plugin_fixture_serves_a_synchronous_client_and_resets_state_between_tests(tmp_path):
    test_file = tmp_path / "test_user_checkout.py"
    test_file.write_text(textwrap.dedent(USER_TESTS))
    result = run_user_suite(tmp_path, test_file)
    assert "2 passed" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0


def test_plugin_settings_fixture_can_be_overridden_in_the_users_conftest(tmp_path):
    (tmp_path / "conftest.py").write_text(textwrap.dedent(USER_CONFTEST))
    test_file = tmp_path / "test_user_pin.py"
    test_file.write_text(textwrap.dedent(USER_OVERRIDE_TEST))
    result = run_user_suite(tmp_path, test_file)
    assert "1 passed" in result.stdout, result.stdout + result.stderr
    assert result.returncode == 0
