"""The real server process (`python run.py`), stopped and started again on the same SQLite file:
every transaction is still answered."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from tests.conftest import FAST_ENV, free_port, sqlite_only

pytestmark = sqlite_only  # the server process restarted on the same SQLite file

ROOT = Path(__file__).resolve().parents[2]


def start_server(env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{env['PORT']}/health"
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early:\n{proc.stdout.read()}")
        try:
            if requests.get(url, timeout=5).status_code == 200:
                return proc
        except requests.RequestException:  # not listening yet, or a start-up too busy to answer in time
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server did not start in 20 s")


def stop_server(proc: subprocess.Popen) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        out, _ = proc.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, _ = proc.communicate()
    return out


def wait_status(base: str, cid: str, want: str, timeout: float = 10) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = requests.post(f"{base}/stkpush/status", json={"checkoutRequestId": cid}, timeout=5).json()
        if body.get("status") == want or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


@pytest.fixture
def server_env(tmp_path):
    return gateway_env(tmp_path)


def gateway_env(tmp_path) -> dict[str, str]:
    """`python run.py`'s environment for a test: fast timings, a free port, a file in tmp_path."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPESA_", "SIMULATOR_", "RECONCILE_"))}
    env.update(FAST_ENV)
    env.update({"PORT": str(free_port()), "DATABASE_URL": f"sqlite:///{tmp_path}/shop.sqlite3",
                "SIMULATOR_PROMPT_LIFETIME_SECONDS": "60", "PYTHONUNBUFFERED": "1"})
    return env


def test_transactions_survive_a_restart(server_env):
    base = f"http://127.0.0.1:{server_env['PORT']}"
    proc = start_server(server_env)
    try:
        paid = requests.post(f"{base}/stkpush", json={"phone": "0700000000", "amount": 100,
                                                      "description": "Demo", "accountReference": "CART_1"},
                             timeout=10).json()
        waiting = requests.post(f"{base}/stkpush", json={"phone": "0712345678", "amount": 5}, timeout=10).json()
        completed = wait_status(base, paid["checkoutRequestId"], "completed")
        assert completed["status"] == "completed"
    finally:
        output = stop_server(proc)
    assert "M-Pesa Server Running" in output and "Mode: simulator" in output

    proc = start_server(server_env)
    try:
        again = requests.post(f"{base}/stkpush/status", json={"checkoutRequestId": paid["checkoutRequestId"]},
                              timeout=5)
        assert again.status_code == 200
        assert again.json()["transaction_id"] == completed["transaction_id"]
        pending = requests.post(f"{base}/stkpush/status",
                                json={"checkoutRequestId": waiting["checkoutRequestId"]}, timeout=5)
        assert (pending.status_code, pending.json()["status"]) == (200, "pending")
    finally:
        stop_server(proc)


def test_start_up_refuses_an_unsafe_mode_with_one_clear_line(server_env):
    env = {**server_env, "MPESA_ENV": "production", "MPESA_CONSUMER_KEY": "k", "MPESA_CONSUMER_SECRET": "s",
           "MPESA_BUSINESS_SHORTCODE": "600000", "MPESA_PASSKEY": "p", "CALLBACK_URL": "http://shop.example/cb"}
    proc = subprocess.run([sys.executable, "run.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == ["Configuration error: CALLBACK_URL must be an https URL (got 'http://shop.example/cb')"]


def test_banner_never_prints_a_secret(server_env):
    port = server_env["PORT"]
    env = {**server_env, "MPESA_CONSUMER_KEY": "demo-key", "MPESA_CONSUMER_SECRET": "TopSecret-998877",
           "MPESA_PASSKEY": "PassKey-112233", "CALLBACK_URL": f"http://127.0.0.1:{port}/hooks/s3cr3t-path"}
    proc = start_server(env)
    output = stop_server(proc)
    assert "M-Pesa Business Code: 174379" in output
    assert "TopSecret-998877" not in output and "PassKey-112233" not in output
    assert f"Callback: http://127.0.0.1:{port}/… (path hidden)" in output
    assert "s3cr3t" not in output and "/hooks" not in output  # the callback's path is its only secret


def test_start_up_refuses_a_callback_path_that_collides_with_a_route(server_env):
    env = {**server_env, "CALLBACK_URL": f"http://127.0.0.1:{server_env['PORT']}/stkpush"}
    proc = subprocess.run([sys.executable, "run.py"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "Configuration error: CALLBACK_URL's path collides with the route /stkpush: give the callback a path of "
        "its own (e.g. /mpesa/callback/<random>)"]


def test_shutdown_is_prompt_with_live_streams_open(server_env):
    base = f"http://127.0.0.1:{server_env['PORT']}"
    proc = start_server(server_env)
    pushed = requests.post(f"{base}/stkpush", json={"phone": "0712345678", "amount": 5}, timeout=10).json()
    streams = [requests.get(f"{base}/stkpush/{pushed['checkoutRequestId']}/events", stream=True, timeout=10),
               requests.get(f"{base}/simulator/api/events", stream=True, timeout=10)]
    assert all(s.status_code == 200 for s in streams)
    started = time.monotonic()
    stop_server(proc)
    assert proc.returncode is not None
    assert time.monotonic() - started < 5


def test_a_second_ctrl_c_stops_at_once_with_one_line_and_the_attempt_kept(server_env):
    base = f"http://127.0.0.1:{server_env['PORT']}"
    proc = start_server(server_env)
    database = sqlite3.connect(server_env["DATABASE_URL"].removeprefix("sqlite:///"))  # migrated by the start
    try:
        hang = {"count": 1, "push": "timeout", "delay": 8}  # Daraja takes 8 s to answer the next push
        assert requests.post(f"{base}/simulator/api/faults", json=hang, timeout=5).status_code in (200, 201)
        answers: list[object] = []

        def push() -> None:
            try:
                answers.append(requests.post(f"{base}/stkpush", json={"phone": "0712345678", "amount": 5}, timeout=20))
            except requests.RequestException as exc:
                answers.append(exc)

        sender = threading.Thread(target=push)
        sender.start()
        deadline = time.monotonic() + 5
        while not database.execute("SELECT COUNT(*) FROM push_attempts").fetchone()[0]:
            assert time.monotonic() < deadline, "the push was not sent"
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert proc.poll() is None  # the first waits for the push in flight
        proc.send_signal(signal.SIGINT)
        started = time.monotonic()
        out, _ = proc.communicate(timeout=10)
        assert time.monotonic() - started < 3 and proc.returncode == 130
        sender.join(timeout=20)
        assert "Traceback" not in out and "Error" not in out, out
        assert out.strip().splitlines()[-1] == ("SIGINT again: stopping at once; what was in flight is picked up at "
                                                "the next start, as after a crash.")
        assert isinstance(answers[0], requests.ConnectionError)  # cut short: no answer, never a false one
        assert database.execute("SELECT state FROM push_attempts").fetchall() == [("sending",)]
    finally:
        database.close()
        if proc.poll() is None:
            proc.kill()
    stop_server(start_server(server_env))  # the next start is an ordinary one


def test_the_standalone_simulators_second_ctrl_c_claims_nothing_is_kept(tmp_path):
    # The gateway's line (above) says what the next start picks up; the simulator keeps nothing.
    from tests.daraja_http import DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET, NOWHERE, basic, stk_push_body
    from tests.gateway.crash_harness import Simulator

    sim = Simulator(free_port(), tmp_path)
    sim.start()
    try:
        token = requests.get(f"{sim.url}/oauth/v1/generate?grant_type=client_credentials", timeout=5, headers={
            "Authorization": basic(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)}).json()["access_token"]
        sim.fault(push="timeout", delay=8)  # its next push is answered in 8 s
        def push() -> None:
            with contextlib.suppress(requests.RequestException):  # cut short: no answer
                requests.post(f"{sim.url}/mpesa/stkpush/v1/processrequest", json=stk_push_body("254712345678", NOWHERE),
                              headers={"Authorization": f"Bearer {token}"}, timeout=20)

        sender = threading.Thread(target=push)
        sender.start()
        deadline = time.monotonic() + 10
        while not sim.prompts():  # the push has reached the simulator, its answer held back
            assert time.monotonic() < deadline, "the push did not reach the simulator"
            time.sleep(0.05)
        assert sim.proc is not None
        sim.proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        assert sim.proc.poll() is None  # the first waits for the push in flight
        sim.proc.send_signal(signal.SIGINT)
        assert sim.proc.wait(timeout=3) == 130
        sender.join(timeout=20)
    finally:
        sim.kill()
    out = sim.log_text()
    assert "Traceback" not in out and out.strip().splitlines()[-1] == "SIGINT again: stopping at once.", out
