"""Daraja client libraries that this project did not write, pointed at the standalone simulator.

Each test starts nothing but what a developer would: `python run.py simulator --port N` in a
subprocess (Daraja's paths at the root of http://127.0.0.1:N) and a small HTTP receiver on
127.0.0.1 for the callbacks. Then the library, used as its README says, with only its base URL
changed, does what it would do against https://sandbox.safaricom.co.ke:

    OAuth token -> STK push to 254700000000 (pays after SIMULATOR_AUTO_ANSWER_SECONDS)
    -> STK query while the prompt is open (Daraja's "still processing" answer of the profile's
       time: HTTP 200 ResultCode "4999" today, HTTP 500 "being processed" before) -> STK query once
       settled (ResultCode "0")
    -> Daraja's success callback at the receiver, read by the library's own parser where it has one.

Every test runs against both of the simulator's profiles (SIMULATOR_PROFILE: `current`, today's
Daraja, and `legacy`, the one before late 2025).

The libraries are not dependencies of the project: `bash tests/clients/install.sh` installs the
pinned ones (tests/clients/requirements.txt, and tests/clients/node for npm). A test whose library is
missing is skipped and says how to install it. tests/clients/README.md records what each library
needed and what it tripped over.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
NODE_DIR = HERE / "node"
INSTALL_HINT = "install the client libraries with: bash tests/clients/install.sh"

# What a merchant configures: an app's key and secret, and the sandbox paybill with Safaricom's public
# sandbox passkey (gateway.config.SANDBOX_PASSKEY; published on Daraja's test-credentials page).
CONSUMER_KEY = "client-tests-consumer-key"
CONSUMER_SECRET = "client-tests-consumer-secret"
SHORTCODE = "174379"
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"

PAYS = "254700000000"  # README "Test numbers": pays after the auto-answer delay
CANCELS = "254700000002"  # the customer cancels: ResultCode 1032

SIMULATOR_ENV = {
    "MPESA_ENV": "simulator",
    "MPESA_CONSUMER_KEY": CONSUMER_KEY,
    "MPESA_CONSUMER_SECRET": CONSUMER_SECRET,
    "MPESA_BUSINESS_SHORTCODE": SHORTCODE,
    "MPESA_PASSKEY": PASSKEY,
    # Short timings: the scripted numbers answer after 3 s (time enough to see the query pending even on
    # a loaded machine, where a library may fetch a fresh token before each call), and the callback
    # follows 0.05 s later. SETTLE_TIMEOUT leaves ample room past the answer.
    "SIMULATOR_AUTO_ANSWER_SECONDS": "3",
    "SIMULATOR_CALLBACK_DELAY_SECONDS": "0.05",
    "SIMULATOR_CALLBACK_TIMEOUT_SECONDS": "5",
    "SIMULATOR_PROMPT_LIFETIME_SECONDS": "30",
    # Set explicitly so that a developer's .env cannot change what these tests expect.
    "SIMULATOR_SCENARIOS_FILE": "",
    "SIMULATOR_QUERY_PENDING_STYLE": "",  # the profile's
    "SIMULATOR_LOCK_SUBSCRIBER": "true",
}
PROFILES = ("current", "legacy")  # today's Daraja, and the one before late 2025
PENDING = {"current": "4999", "legacy": "500"}  # each one's "still processing" answer to an STK query
CANCELLED = {"current": "Request Cancelled by user.", "legacy": "Request cancelled by user"}  # 1032's wording
SETTLE_TIMEOUT = 15.0


# -- the standalone simulator, as `python run.py simulator` -----------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


_LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never via a proxy


def http_json(method: str, url: str, body: Any = None, timeout: float = 5.0) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with _LOOPBACK.open(req, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read() or b"null")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        try:
            return exc.code, json.loads(raw or b"null")
        except ValueError:
            return exc.code, raw.decode("utf-8", "replace")


@dataclass
class Simulator:
    base_url: str
    profile: str
    process: subprocess.Popen[bytes]
    log_path: Path

    @property
    def pending_style(self) -> str:
        return PENDING[self.profile]

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def prompt(self, checkout_request_id: str) -> dict[str, Any]:
        """The simulated handset's view of one push (control API, not Daraja's)."""
        status, body = http_json("GET", f"{self.base_url}/simulator/api/prompts/{checkout_request_id}")
        assert status == 200, (status, body)
        return body

    def wait_settled(self, checkout_request_id: str, timeout: float = SETTLE_TIMEOUT) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            prompt = self.prompt(checkout_request_id)
            if prompt["state"] != "open":
                return prompt
            assert time.monotonic() < deadline, f"{checkout_request_id} still open after {timeout} s"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_simulator(log_dir: Path, profile: str) -> Simulator:
    last_error = ""
    for attempt in range(3):  # a free port can be taken between choosing it and binding it
        port = free_port()
        log_path = log_dir / f"simulator-{profile}-{port}.log"
        env = {**os.environ, **SIMULATOR_ENV, "SIMULATOR_PROFILE": profile,
               "HOST": "127.0.0.1", "PORT": str(port), "PYTHONUNBUFFERED": "1"}
        with open(log_path, "wb") as log:
            command = [sys.executable, "run.py", "simulator", "--host", "127.0.0.1", "--port", str(port)]
            process = subprocess.Popen(command,
                                       cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        sim = Simulator(f"http://127.0.0.1:{port}", profile, process, log_path)
        deadline = time.monotonic() + 30
        while process.poll() is None and time.monotonic() < deadline:
            try:
                status, _ = http_json("GET", f"{sim.base_url}/simulator/api/scenarios", timeout=1)
                if status == 200:
                    return sim
            except OSError:
                pass
            time.sleep(0.05)
        sim.stop()
        last_error = f"attempt {attempt + 1}: exit code {process.returncode}\n{sim.log_tail()}"
    raise RuntimeError(f"`run.py simulator` did not start:\n{last_error}")


@pytest.fixture(scope="module")
def simulators(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[str], Simulator]]:
    """One standalone simulator per profile, started on first use, stopped after the module."""
    log_dir = tmp_path_factory.mktemp("client-simulators")
    running: dict[str, Simulator] = {}

    def get(profile: str) -> Simulator:
        if profile not in running:
            running[profile] = start_simulator(log_dir, profile)
        return running[profile]

    yield get
    for sim in running.values():
        sim.stop()


# Tests take the `simulators` factory and call it only after their library imported, so that a
# skipped test starts no simulator.
Simulators = Callable[[str], Simulator]
each_profile = pytest.mark.parametrize("profile", PROFILES)


# -- the merchant's callback endpoint ----------------------------------------------------------------


@dataclass
class Delivery:
    path: str
    content_type: str | None
    body: Any


class CallbackReceiver:
    """Records every POST; answers as a merchant should: 200 {"ResultCode": 0, "ResultDesc": "Accepted"}."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self._changed = threading.Condition()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    body: Any = json.loads(raw)
                except ValueError:
                    body = raw.decode("utf-8", "replace")
                with receiver._changed:
                    receiver.deliveries.append(Delivery(self.path, self.headers.get("Content-Type"), body))
                    receiver._changed.notify_all()
                out = json.dumps({"ResultCode": 0, "ResultDesc": "Accepted"}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        # A hard-to-guess path segment, as the README advises: the simulator must POST to it verbatim.
        self.path = f"/mpesa/callback/{secrets.token_hex(8)}"
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{self.path}"
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="callback-receiver", daemon=True)
        self._thread.start()

    def wait_for(self, checkout_request_id: str, timeout: float = SETTLE_TIMEOUT) -> Delivery:
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for delivery in self.deliveries:
                    cb = delivery.body.get("Body", {}).get("stkCallback", {}) if isinstance(delivery.body, dict) else {}
                    if cb.get("CheckoutRequestID") == checkout_request_id:
                        return delivery
                left = deadline - time.monotonic()
                assert left > 0, f"no callback for {checkout_request_id}; received {self.deliveries!r}"
                self._changed.wait(left)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def receiver() -> Iterator[CallbackReceiver]:
    rec = CallbackReceiver()
    yield rec
    rec.close()


# -- what Daraja's callbacks look like (daraja-reference.md section 4) ------------------------------


def items_by_name(callback: dict[str, Any]) -> dict[str, Any]:
    return {item["Name"]: item.get("Value") for item in callback["CallbackMetadata"]["Item"]}


def assert_success_callback(delivery: Delivery, receiver: CallbackReceiver, checkout_request_id: str,
                            merchant_request_id: str, phone: str = PAYS, amount: int = 1) -> dict[str, Any]:
    assert delivery.path == receiver.path
    assert (delivery.content_type or "").split(";")[0].strip() == "application/json"
    cb = delivery.body["Body"]["stkCallback"]
    assert cb["CheckoutRequestID"] == checkout_request_id
    assert cb["MerchantRequestID"] == merchant_request_id
    assert cb["ResultCode"] == 0 and isinstance(cb["ResultCode"], int)  # a JSON number in callbacks
    assert cb["ResultDesc"] == "The service request is processed successfully."
    items = items_by_name(cb)
    assert items["Amount"] == amount
    receipt = items["MpesaReceiptNumber"]
    assert isinstance(receipt, str) and len(receipt) == 10 and receipt.isalnum() and receipt.isupper()
    assert isinstance(items["TransactionDate"], int) and len(str(items["TransactionDate"])) == 14
    assert items["PhoneNumber"] == int(phone)
    return items


def assert_cancel_callback(delivery: Delivery, checkout_request_id: str, merchant_request_id: str,
                           profile: str) -> None:
    cb = delivery.body["Body"]["stkCallback"]
    assert cb["CheckoutRequestID"] == checkout_request_id
    assert cb["MerchantRequestID"] == merchant_request_id
    assert cb["ResultCode"] == 1032
    assert cb["ResultDesc"] == CANCELLED[profile]
    assert "CallbackMetadata" not in cb


def query_until_settled(query: Callable[[], Any], is_pending: Callable[[Any], bool],
                        timeout: float = SETTLE_TIMEOUT) -> tuple[Any, Any, int]:
    """(first answer, final answer, number of queries): the first is taken at once after the push."""
    first = query()
    final, count = first, 1
    deadline = time.monotonic() + timeout
    while is_pending(final):
        assert time.monotonic() < deadline, f"still pending after {timeout} s: {final!r}"
        time.sleep(0.1)
        final = query()
        count += 1
    return first, final, count


def assert_token(token: Any) -> None:
    assert isinstance(token, str) and len(token) == 28 and token.isalnum(), token


# -- daraja-v3 (PyPI): base_url is a constructor argument --------------------------------------------


def _daraja_v3() -> Any:
    # `mpesa.client` rather than `mpesa`: the unrelated mpesa-py also installs a top-level `mpesa`.
    return pytest.importorskip("mpesa.client", reason=f"daraja-v3 is not installed; {INSTALL_HINT}")


def _daraja_v3_flow(simulator: Simulator, receiver: CallbackReceiver, phone: str) -> tuple[Any, ...]:
    client_mod = _daraja_v3()
    from mpesa.exceptions import MpesaError

    client = client_mod.MpesaClient(CONSUMER_KEY, CONSUMER_SECRET, shortcode=SHORTCODE, passkey=PASSKEY,
                                    sandbox=True, base_url=simulator.base_url)
    assert_token(client._auth.token())  # no public token call; stk_push fetches the same cached token
    pushed = client.stk_push(phone=phone, amount=1, reference="ORDER1", description="Test",
                             callback_url=receiver.url)
    assert pushed.raw["ResponseCode"] == "0"
    assert pushed.checkout_request_id.startswith("ws_CO_") and pushed.checkout_request_id.endswith(phone[3:])

    def query() -> Any:
        try:
            return client.stk_query(pushed.checkout_request_id)
        except MpesaError as exc:  # how daraja-v3 surfaces Daraja's HTTP 500 "being processed"
            return exc

    def pending(answer: Any) -> bool:
        if isinstance(answer, MpesaError):
            return answer.code == "500.001.1001" and "The transaction is being processed" in answer.message
        return answer.result_code == "4999"

    first, final, _ = query_until_settled(query, pending)
    return client_mod, pushed, first, final, pending


@each_profile
def test_daraja_v3_push_query_callback(simulators: Simulators, profile: str,
                                       receiver: CallbackReceiver) -> None:
    _daraja_v3()
    simulator = simulators(profile)
    client_mod, pushed, first, final, pending = _daraja_v3_flow(simulator, receiver, PAYS)
    assert pending(first), first
    if simulator.pending_style == "4999":
        assert first.is_paid is False and first.result_desc == "The transaction is still under processing"
    assert final.result_code == "0" and final.is_paid is True, final
    assert final.checkout_request_id == pushed.checkout_request_id
    assert final.merchant_request_id == pushed.merchant_request_id

    delivery = receiver.wait_for(pushed.checkout_request_id)
    items = assert_success_callback(delivery, receiver, pushed.checkout_request_id, pushed.merchant_request_id)
    parsed = client_mod.MpesaClient.parse_stk_callback(delivery.body)
    assert parsed["paid"] is True and parsed["result_code"] == "0"
    assert parsed["mpesa_receipt"] == items["MpesaReceiptNumber"]
    assert parsed["phone"] == PAYS and parsed["amount"] == 1
    assert parsed["checkout_request_id"] == pushed.checkout_request_id


@each_profile
def test_daraja_v3_cancelled_push(simulators: Simulators, profile: str, receiver: CallbackReceiver) -> None:
    _daraja_v3()
    client_mod, pushed, first, final, pending = _daraja_v3_flow(simulators(profile), receiver, CANCELS)
    assert pending(first), first
    assert final.result_code == "1032" and final.is_paid is False
    assert final.result_desc == CANCELLED[profile]

    delivery = receiver.wait_for(pushed.checkout_request_id)
    assert_cancel_callback(delivery, pushed.checkout_request_id, pushed.merchant_request_id, profile)
    parsed = client_mod.MpesaClient.parse_stk_callback(delivery.body)
    assert parsed["paid"] is False and parsed["result_code"] == "1032" and parsed["mpesa_receipt"] is None


# -- pydaraja (PyPI): the base URL is the `endpoint` argument ----------------------------------------


@each_profile
def test_pydaraja_push_query_callback(simulators: Simulators, profile: str, receiver: CallbackReceiver) -> None:
    pydaraja = pytest.importorskip("pydaraja", reason=f"pydaraja is not installed; {INSTALL_HINT}")
    simulator = simulators(profile)
    # pydaraja logs every Daraja error with LOGGER.debug(data, response.status_code) (utils.py), a
    # format call that cannot succeed; pytest's log capture turns that into an error. Keep its
    # logger above DEBUG for the duration of the test.
    utils_logger = logging.getLogger("pydaraja.utils")
    saved_level = utils_logger.level
    utils_logger.setLevel(logging.INFO)
    try:
        gateway = pydaraja.MpesaPaymentGateway(CONSUMER_KEY, CONSUMER_SECRET, SHORTCODE, PASSKEY,
                                               simulator.base_url)
        assert_token(gateway._access_token)  # fetched by the constructor
        resp = gateway.trigger_stk_push(PAYS, 1, receiver.url, account_reference="ORDER1", transaction_desc="Test")
        assert resp.status_code == 200, resp.text
        pushed = resp.json()
        assert pushed["ResponseCode"] == "0"
        checkout_request_id = pushed["CheckoutRequestID"]

        def query() -> Any:
            try:
                return gateway.query_stk_push(checkout_request_id)
            except Exception as exc:  # noqa: BLE001 - pydaraja raises a bare Exception for Daraja's HTTP 500
                return exc

        def pending(answer: Any) -> bool:
            if isinstance(answer, Exception):
                text = str(answer)
                return "500.001.1001" in text and "The transaction is being processed" in text
            return answer.status_code == 200 and answer.json()["ResultCode"] == "4999"

        first, final, _ = query_until_settled(query, pending)
    finally:
        utils_logger.setLevel(saved_level)

    assert pending(first), first
    assert not isinstance(final, Exception), final
    assert final.status_code == 200
    body = final.json()
    assert body["ResultCode"] == "0" and body["ResponseCode"] == "0"
    assert body["CheckoutRequestID"] == checkout_request_id
    assert body["MerchantRequestID"] == pushed["MerchantRequestID"]

    delivery = receiver.wait_for(checkout_request_id)
    assert_success_callback(delivery, receiver, checkout_request_id, pushed["MerchantRequestID"])


# -- mpesakit (PyPI): one line sets the base URL on its HTTP client ----------------------------------


@each_profile
def test_mpesakit_push_query_callback(simulators: Simulators, profile: str, receiver: CallbackReceiver) -> None:
    mpesakit = pytest.importorskip("mpesakit", reason=f"mpesakit is not installed; {INSTALL_HINT}")
    from mpesakit.errors import MpesaApiException

    simulator = simulators(profile)

    client = mpesakit.MpesaClient(CONSUMER_KEY, CONSUMER_SECRET, environment="sandbox")
    client.http_client.base_url = simulator.base_url  # the one-line override (mpesakit has no base-URL option)
    assert_token(client.token_manager.get_token())
    pushed = client.stk_push(business_short_code=int(SHORTCODE), transaction_type="CustomerPayBillOnline",
                             amount=1, party_a=PAYS, party_b=SHORTCODE, phone_number=PAYS,
                             callback_url=receiver.url, account_reference="ORDER1", transaction_desc="Test",
                             passkey=PASSKEY)
    assert pushed.is_successful()

    def query() -> Any:
        try:
            return client.stk_query(business_short_code=int(SHORTCODE),
                                    checkout_request_id=pushed.CheckoutRequestID, passkey=PASSKEY)
        except MpesaApiException as exc:  # mpesakit raises on any non-2xx answer
            return exc

    def pending(answer: Any) -> bool:
        if isinstance(answer, MpesaApiException):
            raw = answer.error.raw_response or {}
            return (answer.error.status_code == 500 and raw.get("errorCode") == "500.001.1001"
                    and answer.error.error_message == "The transaction is being processed")
        return str(answer.ResultCode) == "4999"

    first, final, _ = query_until_settled(query, pending)
    assert pending(first), first
    assert not isinstance(final, Exception), final
    assert str(final.ResultCode) == "0" and final.is_successful()
    assert final.CheckoutRequestID == pushed.CheckoutRequestID
    assert final.MerchantRequestID == pushed.MerchantRequestID

    delivery = receiver.wait_for(pushed.CheckoutRequestID)
    items = assert_success_callback(delivery, receiver, pushed.CheckoutRequestID, pushed.MerchantRequestID)
    parsed = client.process_stk_callback(delivery.body)
    assert parsed.is_successful
    assert parsed.mpesa_receipt_number == items["MpesaReceiptNumber"]
    assert parsed.amount == 1.0 and parsed.phone_number == PAYS
    assert parsed.balance is None  # the Balance item carries no Value, as in real callbacks


# -- daraja (PyPI): push only; one line sets its API_BASE attribute ----------------------------------


@each_profile
def test_daraja_push_callback(simulators: Simulators, profile: str, receiver: CallbackReceiver,
                              tmp_path: Path) -> None:
    daraja = pytest.importorskip("daraja", reason=f"daraja is not installed; {INSTALL_HINT}")
    simulator = simulators(profile)
    config = tmp_path / "daraja.json"
    config.write_text(json.dumps({
        "consumerKey": CONSUMER_KEY, "consumerSecret": CONSUMER_SECRET, "passKey": PASSKEY,
        "shortCode": SHORTCODE, "tillNumber": SHORTCODE, "callbackUrl": receiver.url,
        "transactionType": "CustomerPayBillOnline", "accountReference": "ORDER1",
        "transactionDescription": "Test",
    }))
    mpesa = daraja.Mpesa(str(config), "dev")
    mpesa.API_BASE = simulator.base_url  # the one-line override
    assert_token(asyncio.run(mpesa.get_auth()))
    pushed = asyncio.run(mpesa.stk(PAYS, 1))
    assert pushed is not None, "daraja printed the error and returned None"  # it swallows exceptions
    assert pushed["ResponseCode"] == "0"
    checkout_request_id = pushed["CheckoutRequestID"]

    # The library has no STK query: read the simulated handset instead.
    assert simulator.prompt(checkout_request_id)["state"] == "open"
    settled = simulator.wait_settled(checkout_request_id)
    assert settled["resultCode"] == "0"

    delivery = receiver.wait_for(checkout_request_id)
    items = assert_success_callback(delivery, receiver, checkout_request_id, pushed["MerchantRequestID"])
    assert items["MpesaReceiptNumber"] == settled["receipt"]


# -- django-daraja (PyPI): push only; its base-URL function is replaced -----------------------------


def _configure_django() -> None:
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            INSTALLED_APPS=["django_daraja"],
            DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}},
            DEFAULT_AUTO_FIELD="django.db.models.AutoField",
            USE_TZ=True,
            MPESA_ENVIRONMENT="sandbox",
            MPESA_CONSUMER_KEY=CONSUMER_KEY,
            MPESA_CONSUMER_SECRET=CONSUMER_SECRET,
            MPESA_EXPRESS_SHORTCODE=SHORTCODE,
            MPESA_SHORTCODE=SHORTCODE,
            MPESA_PASSKEY=PASSKEY,
        )
        django.setup()
        from django.core.management import call_command

        call_command("migrate", "django_daraja", verbosity=0)


@each_profile
def test_django_daraja_push_callback(simulators: Simulators, profile: str, receiver: CallbackReceiver,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("django", reason=f"Django is not installed; {INSTALL_HINT}")
    pytest.importorskip("django_daraja", reason=f"django-daraja is not installed; {INSTALL_HINT}")
    simulator = simulators(profile)
    _configure_django()
    from django_daraja.models import AccessToken
    from django_daraja.mpesa import core, utils

    # api_base_url() returns hard-coded hosts; core.py imported its own reference to it.
    base = lambda: simulator.base_url + "/"  # noqa: E731 - django-daraja joins paths without a slash
    monkeypatch.setattr(utils, "api_base_url", base)
    monkeypatch.setattr(core, "api_base_url", base)
    AccessToken.objects.all().delete()  # its token cache lives in the database, 50 minutes

    client = core.MpesaClient()
    assert_token(client.access_token())
    resp = client.stk_push("0700000000", 1, "ORDER1", "Test", receiver.url)
    assert resp.status_code == 200, resp.text
    assert resp.response_code == "0" and resp.checkout_request_id.startswith("ws_CO_")

    # django-daraja has no STK query: read the simulated handset instead.
    assert simulator.prompt(resp.checkout_request_id)["state"] == "open"
    settled = simulator.wait_settled(resp.checkout_request_id)
    assert settled["resultCode"] == "0"

    delivery = receiver.wait_for(resp.checkout_request_id)
    items = assert_success_callback(delivery, receiver, resp.checkout_request_id, resp.merchant_request_id)
    parsed = client.parse_stk_result(json.dumps(delivery.body))  # takes the raw request body
    assert parsed["ResultCode"] == 0 and parsed["MpesaReceiptNumber"] == items["MpesaReceiptNumber"]
    assert parsed["PhoneNumber"] == int(PAYS) and parsed["Balance"] is None


# -- mpesa-node (npm, Safaricom's own Node library): one line sets its baseURL ---------------------


def node_or_skip() -> str:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not on PATH")
    if not (NODE_DIR / "node_modules" / "mpesa-node").is_dir():
        pytest.skip(f"mpesa-node is not installed in tests/clients/node; {INSTALL_HINT}")
    return node


def run_node_driver(simulator: Simulator, phone: str) -> dict[str, Any]:
    node = node_or_skip()
    env = {**os.environ, "MPESA_CONSUMER_KEY": CONSUMER_KEY, "MPESA_CONSUMER_SECRET": CONSUMER_SECRET}
    done = subprocess.run([node, "drive.js", "--base", simulator.base_url, "--phone", phone],
                          cwd=NODE_DIR, env=env, capture_output=True, text=True, timeout=60)
    lines = done.stdout.strip().splitlines()
    assert lines, f"drive.js printed nothing (exit {done.returncode}): {done.stderr}"
    result = json.loads(lines[-1])
    assert done.returncode == 0 and "error" not in result, (result, done.stderr)
    return result


@each_profile
def test_mpesa_node_push_query_callback(simulators: Simulators, profile: str) -> None:
    node_or_skip()
    simulator = simulators(profile)
    result = run_node_driver(simulator, PAYS)
    assert result["token"] == {"status": 200, "expiresIn": "3599", "tokenLength": 28}
    push = result["push"]
    assert push["status"] == 200 and push["data"]["ResponseCode"] == "0"
    checkout_request_id = push["data"]["CheckoutRequestID"]
    merchant_request_id = push["data"]["MerchantRequestID"]

    pending = result["pending"]
    if simulator.pending_style == "500":
        assert pending["status"] == 500
        assert pending["data"] == {"requestId": checkout_request_id, "errorCode": "500.001.1001",
                                   "errorMessage": "The transaction is being processed"}
    else:
        assert pending["status"] == 200 and pending["data"]["ResultCode"] == "4999"
    final = result["final"]
    assert final["status"] == 200 and final["data"]["ResultCode"] == "0"
    assert final["data"]["CheckoutRequestID"] == checkout_request_id

    cb = result["callback"]
    assert cb["contentType"].split(";")[0] == "application/json" and cb["path"] == "/mpesa/callback"
    stk = cb["body"]["Body"]["stkCallback"]
    assert stk["CheckoutRequestID"] == checkout_request_id and stk["MerchantRequestID"] == merchant_request_id
    assert stk["ResultCode"] == 0
    items = items_by_name(stk)
    assert items["Amount"] == 1 and items["PhoneNumber"] == int(PAYS) and len(items["MpesaReceiptNumber"]) == 10


@each_profile
def test_mpesa_node_cancelled_push(simulators: Simulators, profile: str) -> None:
    node_or_skip()
    result = run_node_driver(simulators(profile), CANCELS)
    assert result["final"]["data"]["ResultCode"] == "1032"
    assert result["final"]["data"]["ResultDesc"] == CANCELLED[profile]
    stk = result["callback"]["body"]["Body"]["stkCallback"]
    assert stk["ResultCode"] == 1032 and "CallbackMetadata" not in stk
