"""Request ids on every answer and log line, JSON logs, and the Prometheus metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from aiohttp.http_exceptions import BadHttpMessage, BadStatusLine, InvalidHeader, LineTooLong

from gateway.logs import MalformedRequestFilter
from gateway.observability import METRICS
from tests.conftest import MALFORMED_REQUESTS, free_port, send_raw
from tests.gateway.crash_harness import Process, clean_env

HEX_ID = re.compile(r"[0-9a-f]{16}")


SAMPLE = re.compile(r'^([a-z_:]+)(?:\{(.*)\})? (\S+)$')
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def metric(text: str, name: str, **labels: str) -> float:
    """The value of one sample in Prometheus' text format (0 if absent), whatever its labels' order."""
    for line in text.splitlines():
        found = SAMPLE.match(line)
        if found and found[1] == name and dict(LABEL.findall(found[2] or "")) == labels:
            return float(found[3])
    return 0.0


# -- request ids ----------------------------------------------------------------------------------

async def test_every_answer_carries_a_request_id_of_its_own(start_app):
    running = await start_app()
    answers = [
        await running.client.post("/stkpush", json={"phone": "0712345678", "amount": 10}),
        await running.client.post("/stkpush", json={"phone": "12", "amount": 10}),  # 400
        await running.client.post("/stkpush/status", json={"checkoutRequestId": "ws_CO_nope"}),  # 404
        await running.client.get("/no/such/page"),  # 404 from the router
        await running.client.put("/stkpush"),  # 405
        await running.client.post("/stkpush", data="x", headers={"Content-Type": "text/plain"}),  # 415
        await running.client.get("/health"),
        await running.client.get("/pay.html"),
    ]
    ids = [resp.headers.get("X-Request-Id") for resp in answers]
    assert [resp.status for resp in answers] == [200, 400, 404, 404, 405, 415, 200, 200]
    assert all(i and HEX_ID.fullmatch(i) for i in ids), ids
    assert len(set(ids)) == len(ids)
    pushed = await answers[0].json()
    async with running.client.get(f"/stkpush/{pushed['checkoutRequestId']}/events") as stream:  # a stream too
        assert HEX_ID.fullmatch(stream.headers["X-Request-Id"])


async def test_a_second_hook_on_the_answers_stops_the_start(tmp_path):
    """Every answer's request id and security headers come from one hook; one added beside it (by
    web/ or the simulator, after the gateway's own set-up) would run on every answer: the start
    refuses it."""
    from gateway.app import _one_answer_hook
    from run import build_app, load
    from tests.conftest import app_env

    app = build_app(*load(app_env(tmp_path)))
    assert _one_answer_hook in app.on_startup
    await _one_answer_hook(app)  # as built: one

    async def another(request: Any, response: Any) -> None:
        response.headers["X-Another"] = "1"

    app.on_response_prepare.append(another)
    with pytest.raises(RuntimeError, match="one hook"):
        await _one_answer_hook(app)


async def test_a_request_id_is_taken_only_from_a_trusted_proxy_and_only_when_plain(start_app):
    direct = await start_app()
    resp = await direct.client.get("/health", headers={"X-Request-Id": "from-the-client-1"})
    assert resp.headers["X-Request-Id"] != "from-the-client-1"  # anyone could send it

    behind = await start_app(TRUSTED_PROXIES="127.0.0.1")  # the test client is the proxy
    resp = await behind.client.get("/health", headers={"X-Request-Id": "nginx-7f3a.2:9"})
    assert resp.headers["X-Request-Id"] == "nginx-7f3a.2:9"
    for bad in ("two words", "x" * 129, "a\tb", "é"):
        resp = await behind.client.get("/health", headers={"X-Request-Id": bad})
        assert HEX_ID.fullmatch(resp.headers["X-Request-Id"]), bad  # not copied into headers and logs


# -- the metrics ----------------------------------------------------------------------------------

async def test_metrics_are_off_unless_enabled(start_app):
    running = await start_app()
    assert (await running.client.get("/metrics")).status == 404
    assert (await running.client.get("/health")).status == 200
    # Off, the endpoints are not even timed: nothing would read it (and a status poll costs less).
    registry = running.app[METRICS].registry
    assert not [s for m in registry.collect() if m.name == "mpesa_http_request_seconds" for s in m.samples]


async def test_metrics_count_pushes_callbacks_queries_and_time_daraja_and_the_endpoints(start_app):
    # The reconciler is left at its default (20 s): a query settling the payment first would make the
    # callback a repeat, not "applied".
    running = await start_app(METRICS_ENABLED="true", PUSH_LIMIT_PER_PHONE="1", SIMULATOR_AUTO_ANSWER_SECONDS="600")
    first = await running.push("0712345670", 10)
    assert first["http"] == 200
    assert (await running.push("0712345670", 10))["http"] == 429  # limited
    assert (await running.push("0700000000", 10, orderId=None))["http"] in (200, 400)
    await running.client.post(f"/simulator/api/prompts/{first['checkoutRequestId']}/pin", json={"pin": "12345"})
    await running.wait_status(first["checkoutRequestId"], "completed")
    # The callback's count goes up once its payment is stored, so a poll can see the payment first.
    deadline = time.monotonic() + 10
    while True:
        resp = await running.client.get("/metrics")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
        if metric(text, "mpesa_callbacks_total", outcome="applied") or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)
    assert metric(text, "mpesa_stk_pushes_total", outcome="accepted") >= 1
    assert metric(text, "mpesa_stk_pushes_total", outcome="limited") == 1
    assert metric(text, "mpesa_callbacks_total", outcome="applied") == 1
    assert metric(text, "mpesa_daraja_request_seconds_count", call="oauth") == 1
    assert metric(text, "mpesa_daraja_request_seconds_count", call="stkpush") >= 1
    assert metric(text, "mpesa_http_request_seconds_count", route="/stkpush", method="POST", status="200") >= 1
    assert metric(text, "mpesa_http_request_seconds_count", route="/stkpush", method="POST", status="429") == 1
    assert "/metrics" not in text  # the metrics do not time themselves as a public endpoint


async def test_queries_are_counted_by_result(start_app):
    running = await start_app(METRICS_ENABLED="true", RECONCILE_AFTER_SECONDS="0.1", RECONCILE_INTERVAL_SECONDS="0.1",
                              SIMULATOR_AUTO_ANSWER_SECONDS="600")
    pushed = await running.push("0712345673", 10)
    deadline = time.monotonic() + 10
    text = ""
    while time.monotonic() < deadline:
        text = await (await running.client.get("/metrics")).text()
        if metric(text, "mpesa_stk_queries_total", result="pending"):
            break
        await asyncio.sleep(0.1)
    assert metric(text, "mpesa_stk_queries_total", result="pending") >= 1  # asked while the prompt was open
    await running.client.post(f"/simulator/api/prompts/{pushed['checkoutRequestId']}/cancel")
    await running.wait_status(pushed["checkoutRequestId"], "failed")
    assert metric(text, "mpesa_daraja_request_seconds_count", call="stkquery") >= 1


async def test_daraja_errors_are_counted_by_code(start_app):
    running = await start_app(METRICS_ENABLED="true")
    await running.client.post("/simulator/api/faults", json={"count": 1, "push": "error"})
    assert (await running.push("0712345671", 10))["http"] >= 400
    text = await (await running.client.get("/metrics")).text()
    errors = [line for line in text.splitlines() if line.startswith("mpesa_daraja_errors_total{")]
    assert errors and 'call="stkpush"' in errors[0], text
    assert metric(text, "mpesa_stk_pushes_total", outcome="refused") + \
        metric(text, "mpesa_stk_pushes_total", outcome="unknown") == 1


async def test_the_metrics_token_is_required_when_set_and_never_shown(start_app):
    token = "metrics-token-of-the-shop-31"
    running = await start_app(METRICS_ENABLED="true", METRICS_TOKEN=token)
    assert (await running.client.get("/metrics")).status == 401
    wrong = await running.client.get("/metrics", headers={"Authorization": "Bearer not-the-token-at-all"})
    assert wrong.status == 401 and token not in await wrong.text()
    right = await running.client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    assert right.status == 200 and token not in await right.text()


# -- JSON logs, with the request's id on its lines -------------------------------------------------

@pytest.fixture
def gateway(tmp_path: Path) -> Any:
    port = free_port()
    process = Process("gateway", [], clean_env(HOST="127.0.0.1", PORT=str(port), LOG_FORMAT="json",
                                               DATABASE_URL=f"sqlite:///{tmp_path}/g.sqlite3",
                                               SIMULATOR_AUTO_ANSWER_SECONDS="600",
                                               SIMULATOR_CALLBACK_DELAY_SECONDS="0"),
                      tmp_path, f"http://127.0.0.1:{port}/health")
    process.url = f"http://127.0.0.1:{port}"  # type: ignore[attr-defined]
    process.start()
    try:
        yield process
    finally:
        process.stop()


def test_json_logs_carry_the_request_id_payment_id_masked_phone_outcome_and_timing(gateway: Any) -> None:
    pushed = requests.post(f"{gateway.url}/stkpush", json={"phone": "0712345672", "amount": 15}, timeout=10)
    assert pushed.status_code == 200
    cid, rid = pushed.json()["checkoutRequestId"], pushed.headers["X-Request-Id"]
    requests.post(f"{gateway.url}/simulator/api/prompts/{cid}/pin", json={"pin": "12345"}, timeout=10)
    deadline = time.monotonic() + 10
    lines: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        text = gateway.log_text()
        lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        if any(line.get("outcome") == "applied" for line in lines):
            break
        time.sleep(0.1)
    raw = [line for line in gateway.log_text().splitlines() if line.strip() and not line.startswith(
        ("Demo Shop", "Server:", "Frontend:", "M-Pesa", "Mode:", "Daraja:", "Callback:", "Database:", "Pay page:",
         "Simulator:"))]
    assert all(line.startswith("{") for line in raw), [line for line in raw if not line.startswith("{")][:3]
    push = [line for line in lines if line.get("paymentId") == cid and line.get("outcome") == "accepted"]
    assert len(push) == 1, lines
    assert push[0]["requestId"] == rid and push[0]["phone"] == "2547****5672" and push[0]["durationMs"] > 0
    assert push[0]["level"] == "INFO" and push[0]["logger"] == "gateway.http" and push[0]["time"].endswith("Z")
    callback = [line for line in lines if line.get("paymentId") == cid and line.get("outcome") == "applied"]
    assert len(callback) == 1 and HEX_ID.fullmatch(callback[0]["requestId"]) and callback[0]["requestId"] != rid
    gateways = [line["message"] for line in lines if line["logger"].startswith("gateway")]
    assert not [m for m in gateways if "254712345672" in m]  # the gateway masks the phone in its lines


def test_a_request_the_http_parser_refuses_is_one_info_line_without_a_traceback(gateway: Any) -> None:
    port = int(gateway.url.rsplit(":", 1)[1])
    for raw in MALFORMED_REQUESTS:
        assert send_raw(port, raw).startswith((b"HTTP/1.0 400 ", b"HTTP/1.1 400 ")), raw[:40]
    assert requests.get(f"{gateway.url}/health", timeout=10).status_code == 200
    lines = [json.loads(line) for line in gateway.log_text().splitlines() if line.startswith("{")]
    refused = [line for line in lines if line["logger"] == "aiohttp.server"]
    # all but the bad method: on a connection's first request aiohttp logs that at DEBUG only
    assert len(refused) == len(MALFORMED_REQUESTS) - 1, refused
    assert {line["level"] for line in refused} == {"INFO"} and not [line for line in refused if "exception" in line]
    assert {line["message"].split(": ", 1)[0] for line in refused} == {
        "malformed HTTP request from 127.0.0.1, answered 400"}
    assert all(line["message"].split(": ", 1)[1] for line in refused)  # the parser's reason
    text = gateway.log_text()
    assert "Traceback" not in text and not [echo for echo in MALFORMED_REQUESTS.values() if echo in text]


def test_a_server_error_keeps_its_level_and_traceback() -> None:
    failure = RuntimeError("a bug in the server")
    record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                               ("127.0.0.1",), (RuntimeError, failure, None))
    assert MalformedRequestFilter().filter(record)
    assert record.levelno == logging.ERROR and record.exc_info is not None and record.getMessage().startswith("Error")


def test_the_parsers_reason_is_logged_without_the_clients_bytes() -> None:
    # The words of aiohttp's C parser and of its pure-Python one (AIOHTTP_NO_EXTENSIONS=1), each with client bytes.
    for exc, reason in ((BadStatusLine("EVIL\r\nX /x HTTP/1.1"), "Bad status line"),
                        (LineTooLong(b"EVIL" * 3000, 8190), "Got more than 8190 bytes when reading"),
                        (BadHttpMessage("Invalid header token:\n\n  b'EVIL'\n  ^"), "Invalid header token"),
                        (InvalidHeader(b"EVIL\x00"), "Invalid HTTP header")):
        record = logging.LogRecord("aiohttp.server", logging.ERROR, __file__, 1, "Error handling request from %s",
                                   ("127.0.0.1",), (type(exc), exc, None))
        assert MalformedRequestFilter().filter(record)
        assert record.getMessage() == f"malformed HTTP request from 127.0.0.1, answered 400: {reason}"
        assert record.levelno == logging.INFO and record.exc_info is None


def test_production_metrics_need_a_token():
    from gateway.config import ConfigError, load_settings
    from tests.gateway.test_config import PRODUCTION

    with pytest.raises(ConfigError, match="METRICS_ENABLED in production needs METRICS_TOKEN"):
        load_settings({**PRODUCTION, "METRICS_ENABLED": "true"})
    assert load_settings({**PRODUCTION, "METRICS_ENABLED": "true", "METRICS_TOKEN": "t" * 20}).metrics_enabled


async def test_no_request_can_make_the_metrics_grow_without_bound(start_app):
    running = await start_app(METRICS_ENABLED="true")
    for i in range(40):
        await running.client.request(f"X{i}METHOD", "/stkpush")
        await running.client.post(f"/no/such/route/{i}")
        await running.client.post("/stkpush/status", json={"checkoutRequestId": f"ws_CO_{i}"})
    text = await (await running.client.get("/metrics")).text()
    series = {line.split(" ")[0] for line in text.splitlines() if line.startswith("mpesa_http_request_seconds_count")}
    # 120 requests: the status polls' two answers (404, then 429 once the lookup limit is reached);
    # made-up methods and paths add nothing.
    assert series == {'mpesa_http_request_seconds_count{method="POST",route="/stkpush/status",status="404"}',
                      'mpesa_http_request_seconds_count{method="POST",route="/stkpush/status",status="429"}'}, series
    assert "METHOD" not in text and "/no/such" not in text


def test_daraja_codes_become_labels_only_in_their_own_shape():
    from gateway.observability import bounded

    assert [bounded(c) for c in ("500.001.1001", "404.001.03", "HTTP 502", "ResponseCode 1", "unavailable",
                                 "pending", "settled")] == ["500.001.1001", "404.001.03", "HTTP 502",
                                                            "ResponseCode 1", "unavailable", "pending", "settled"]
    assert [bounded(c) for c in ("x" * 40, "1" * 30, "DROP TABLE", "")] == ["other"] * 4
