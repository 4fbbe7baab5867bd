"""The shipped nginx sample (deploy/nginx/) in front of the real gateway process, with real nginx.

The sample is rendered for the test with only these changes, each made on the shipped text and
checked to have matched: plain HTTP on a free loopback port instead of TLS (the redirect server
and the ssl_* lines dropped), the upstream's port, 2-second client time-outs, and logs under
tmp. Everything else (limits, headers, the live-update location) is the file an operator copies.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from requests.adapters import HTTPAdapter

from tests.conftest import FAST_ENV, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "deploy" / "nginx" / "mpesa-gateway.conf"
SAMPLE_HTTP = ROOT / "deploy" / "nginx" / "mpesa-gateway-http.conf"
CLIENT_TIMEOUT = 2.0  # client_header_timeout and client_body_timeout in the rendered copy


# --- nginx -------------------------------------------------------------------------------------

def nginx_path() -> str | None:
    for candidate in (os.environ.get("NGINX_PATH"), shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).exists():
            return candidate
    return None


def need(condition: bool, reason: str) -> None:
    """Skip when something this test needs is missing; in CI, fail instead."""
    if not condition:
        if os.environ.get("CI"):
            pytest.fail(f"{reason}; CI must run the reverse-proxy tests")
        pytest.skip(reason)


def loopback_aliases_work() -> bool:
    try:
        with socket.socket() as sock:
            sock.bind(("127.0.0.3", 0))
        return True
    except OSError:
        return False


def replace(text: str, pattern: str, repl: str, *, count: int = 1, flags: int = re.MULTILINE) -> str:
    """re.sub that insists on finding `pattern` exactly `count` times (the sample changed shape
    otherwise: update this rendering, and check the change is one an operator would want)."""
    new, found = re.subn(pattern, repl, text, flags=flags)
    assert found == count, f"{SAMPLE.name}: expected {count} match(es) of {pattern!r}, found {found}"
    return new


def drop_server_block(text: str, marker: str) -> str:
    """Remove the one top-level `server { … }` block that contains `marker`."""
    blocks = []
    for match in re.finditer(r"^server\s*\{", text, re.MULTILINE):
        depth, i = 0, match.end() - 1
        while True:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            if depth == 0:
                break
            i += 1
        blocks.append((match.start(), i + 1))
    chosen = [(a, b) for a, b in blocks if marker in text[a:b]]
    assert len(chosen) == 1, f"{SAMPLE.name}: expected one server block with {marker!r}, found {len(chosen)}"
    a, b = chosen[0]
    return text[:a] + text[b:]


def render_sample(listen_port: int, gateway_port: int, logs: Path) -> str:
    text = SAMPLE.read_text()
    text = drop_server_block(text, "return 301 https://")
    text = replace(text, r"^(\s*)listen 443 ssl http2;$", rf"\1listen 127.0.0.1:{listen_port};")
    text = replace(text, r"^\s*listen \[::\]:443 ssl http2;\n", "")
    for directive in ("ssl_certificate", "ssl_certificate_key"):
        text = replace(text, rf"^\s*{directive}\s[^;]*;\n", "")
    text = replace(text, r"^\s*ssl_\w+\s[^;]*;\n", "", count=len(re.findall(r"^\s*ssl_\w+\s", text, re.M)))
    text = replace(text, r"^(\s*server )127\.0\.0\.1:3001;", rf"\g<1>127.0.0.1:{gateway_port};")
    for directive in ("client_header_timeout", "client_body_timeout"):
        text = replace(text, rf"^(\s*{directive}) 10s;", rf"\1 {CLIENT_TIMEOUT:g}s;")
    text = replace(text, r"^(\s*access_log) /var/log/nginx/mpesa-gateway\.access\.log( mpesa_gateway;)",
                   rf"\1 {logs}/access.log\2")
    text = replace(text, r"^(\s*error_log)\s+/var/log/nginx/mpesa-gateway\.error\.log", rf"\1 {logs}/error.log")
    directives = "\n".join(line.split("#")[0] for line in text.splitlines())
    assert re.findall(r"\blisten\s[^;]*;", directives) == [f"listen 127.0.0.1:{listen_port};"]
    assert "ssl" not in directives and "/var/" not in directives and "/etc/" not in directives
    return text


def nginx_conf(prefix: Path) -> str:
    """A minimal nginx.conf that includes the two sample files where Debian's includes conf.d."""
    temp = "\n".join(f"    {kind}_temp_path {prefix}/{kind};"
                     for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    user = "user root;\n" if os.geteuid() == 0 else ""  # else workers would run as nobody
    return f"""{user}worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/main-error.log info;
events {{ worker_connections 256; }}
http {{
    default_type application/octet-stream;
    access_log off;
{temp}
    include {prefix}/conf.d/mpesa-gateway-http.conf;
    include {prefix}/conf.d/mpesa-gateway.conf;
}}
"""


def wait_listening(port: int, proc: subprocess.Popen, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            detail = log.read_text() if log and log.exists() else ""
            raise AssertionError(f"{what} exited early (code {proc.returncode}):\n{detail}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on {port} in 20 s")


def stop(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is not None:
        return
    proc.send_signal(sig)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # its own session: the master and its workers
        proc.wait()


# --- the gateway and nginx, once for the module -----------------------------------------------

class Stack:
    def __init__(self, proxy_port: int, gateway_port: int, prefix: Path) -> None:
        self.proxy = f"http://127.0.0.1:{proxy_port}"
        self.gateway = f"http://127.0.0.1:{gateway_port}"
        self.proxy_port, self.gateway_port, self.prefix = proxy_port, gateway_port, prefix


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    nginx = nginx_path()
    need(nginx is not None, "nginx not found: install it (Debian/Ubuntu: apt-get install nginx) or set NGINX_PATH")
    need(loopback_aliases_work(), "cannot bind 127.0.0.3 (all of 127/8 is loopback on Linux only)")
    prefix = tmp_path_factory.mktemp("nginx")
    (prefix / "conf.d").mkdir()
    for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (prefix / kind).mkdir()
    proxy_port, gateway_port = free_port(), free_port()
    (prefix / "conf.d" / "mpesa-gateway-http.conf").write_text(SAMPLE_HTTP.read_text())
    (prefix / "conf.d" / "mpesa-gateway.conf").write_text(render_sample(proxy_port, gateway_port, prefix))
    (prefix / "nginx.conf").write_text(nginx_conf(prefix))

    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPESA_", "SIMULATOR_", "RECONCILE_"))}
    env.update(FAST_ENV)
    env.update({
        "PORT": str(gateway_port), "HOST": "127.0.0.1", "DATABASE_URL": f"sqlite:///{prefix}/shop.sqlite3",
        "PYTHONUNBUFFERED": "1",
        "TRUSTED_PROXIES": "127.0.0.1",  # nginx's address as the gateway sees it
        "PUSH_LIMIT_PER_CLIENT": "2", "PUSH_LIMIT_PER_PHONE": "0",
        # The scripted number answers after 4 s: the live stream shows "pending", then the change
        # (seconds apart, so that a loaded machine cannot blur the two).
        "SIMULATOR_AUTO_ANSWER_SECONDS": "4", "SIMULATOR_PROMPT_LIFETIME_SECONDS": "30",
    })
    gateway_log = prefix / "gateway.log"
    nginx_log = prefix / "nginx.stderr"
    with open(gateway_log, "w") as gateway_out, open(nginx_log, "w") as nginx_out:
        gateway = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env, stdout=gateway_out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        proxy = None
        try:
            wait_listening(gateway_port, gateway, "the gateway", gateway_log)
            proxy = subprocess.Popen([nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                      "-g", "daemon off;"], stdout=nginx_out, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            wait_listening(proxy_port, proxy, "nginx", nginx_log)
            yield Stack(proxy_port, gateway_port, prefix)
        finally:
            if proxy is not None:
                stop(proxy, signal.SIGTERM)  # fast shutdown: open streams are cut
            stop(gateway, signal.SIGINT)
    errors = (prefix / "error.log").read_text() if (prefix / "error.log").exists() else ""
    assert "[emerg]" not in errors and "[crit]" not in errors, errors


class SourceAddress(HTTPAdapter):
    """Connections from a chosen loopback address (all of 127/8 is local on Linux)."""

    def __init__(self, address: str) -> None:
        self.address = address
        super().__init__()

    def init_poolmanager(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        kwargs["source_address"] = (self.address, 0)
        super().init_poolmanager(*args, **kwargs)


def client(address: str) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # loopback only, whatever proxy the environment names
    session.mount("http://", SourceAddress(address))
    return session


def read_events(response: requests.Response, started: float) -> Iterator[tuple[float, str, dict]]:
    """(seconds since `started`, event name, data) for each server-sent event."""
    event, data = "message", []
    for line in response.iter_lines(decode_unicode=True):
        if line == "":
            if data:
                yield time.monotonic() - started, event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].strip())


# --- the tests ---------------------------------------------------------------------------------

def test_a_payment_with_live_updates_works_through_nginx(stack: Stack) -> None:
    with client("127.0.0.1") as http:
        pushed = http.post(f"{stack.proxy}/stkpush", json={"phone": "0700000000", "amount": 10}, timeout=10)
        assert pushed.status_code == 200, pushed.text
        body = pushed.json()
        cid, token = body["checkoutRequestId"], body["paymentToken"]

        started = time.monotonic()
        with http.get(f"{stack.proxy}/stkpush/{cid}/events", params={"paymentToken": token},
                      stream=True, timeout=(3, 10)) as stream:
            assert stream.status_code == 200
            assert stream.headers["Content-Type"].startswith("text/event-stream")
            events = list(read_events(stream, started))
        statuses = [(name, data["status"]) for _, name, data in events]
        # "pending" as soon as the stream opens (not held back by nginx until the answer at 4 s), then
        # the change itself.
        assert statuses[0] == ("status", "pending"), events
        assert events[0][0] < 3.0, events
        assert statuses[-1] == ("status", "completed"), events
        assert events[-1][0] >= 0.5, events  # it came live, after the stream had opened
        assert events[-1][2]["amount"] == 10  # the token in the query string reached the gateway

        # The reconciler's STK query (every 0.3 s here) may settle it before the callback does: then
        # it is "completed" without a receipt until the callback adds one.
        deadline = time.monotonic() + 10
        while True:
            status = http.post(f"{stack.proxy}/stkpush/status", json={"checkoutRequestId": cid}, timeout=5)
            assert status.status_code == 200
            assert status.json()["status"] == "completed"  # never back to pending, never failed
            if status.json()["MpesaReceiptNumber"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status.json()["MpesaReceiptNumber"]
        assert status.headers["X-Content-Type-Options"] == "nosniff"  # the gateway's headers pass through


def test_the_access_log_keeps_no_payment_token_nor_callback_path(stack: Stack) -> None:
    with client("127.0.0.7") as http:
        pushed = http.post(f"{stack.proxy}/stkpush", json={"phone": "0712000099", "amount": 7}, timeout=10)
        assert pushed.status_code == 200, pushed.text
        cid, token = pushed.json()["checkoutRequestId"], pushed.json()["paymentToken"]
        confirmation = f"/confirmation.html?checkoutRequestId={cid}&paymentToken={token}"
        page = http.get(f"{stack.proxy}{confirmation}", timeout=5)
        assert page.status_code == 200 and "text/html" in page.headers["Content-Type"]
        # A browser on that page sends its address as Referer with what it fetches.
        status = http.post(f"{stack.proxy}/stkpush/status", json={"checkoutRequestId": cid, "paymentToken": token},
                           headers={"Referer": f"{stack.proxy}{confirmation}"}, timeout=5)
        assert status.status_code == 200 and status.json()["amount"] == 7
        # Daraja's callback through nginx, at simulator mode's callback path.
        callback = http.post(f"{stack.proxy}/mpesa/callback", json={"Body": {}}, timeout=5)
        assert callback.status_code == 400 and callback.json()["ResultCode"] == 1
    # nginx writes a request's line after its answer has gone out: give it a moment under load.
    deadline = time.monotonic() + 5
    while True:
        log = (stack.prefix / "access.log").read_text()
        if "POST (path not logged) HTTP/1.1\" 400" in log or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert "GET /confirmation.html HTTP/1.1\" 200" in log and "POST /stkpush/status HTTP/1.1\" 200" in log
    assert "POST (path not logged) HTTP/1.1\" 400" in log
    assert token not in log and "paymentToken" not in log and "/mpesa/callback" not in log


def test_a_client_cannot_set_the_host_the_gateway_sees(stack: Stack) -> None:
    """The gateway (aiohttp-remotes) takes the host from X-Forwarded-Host when its peer is a trusted
    proxy; nginx must not pass on the client's own, or a page elsewhere would pass the Origin check."""
    with client("127.0.0.8") as http:
        answer = http.post(f"{stack.proxy}/stkpush/status", json={"checkoutRequestId": "ws_CO_none"},
                           headers={"Origin": "https://evil.example", "X-Forwarded-Host": "evil.example",
                                    "Forwarded": "host=evil.example"}, timeout=5)
    assert answer.status_code == 403, answer.text
    assert answer.json()["message"] == "Cross-origin request refused"


def test_the_request_id_is_nginxs_own_and_in_its_access_log(stack: Stack) -> None:
    """The gateway adopts a trusted proxy's X-Request-Id: nginx sets its own, so a client cannot pick
    the id its log lines carry (or borrow another request's)."""
    with client("127.0.0.9") as http:
        answer = http.post(f"{stack.proxy}/stkpush/status", json={"checkoutRequestId": "ws_CO_none"},
                           headers={"X-Request-Id": "chosen-by-the-client"}, timeout=5)
    assert answer.status_code == 404, answer.text
    request_id = answer.headers["X-Request-Id"]
    assert re.fullmatch(r"[0-9a-f]{32}", request_id), request_id  # nginx's $request_id
    deadline = time.monotonic() + 5
    while request_id not in (log := (stack.prefix / "access.log").read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert request_id in log and "chosen-by-the-client" not in log


def closed_within(sock: socket.socket, limit: float) -> float | None:
    """Seconds until the peer closes `sock` (nothing else is expected), or None if still open at `limit`."""
    started = time.monotonic()
    while (left := limit - (time.monotonic() - started)) > 0:
        sock.settimeout(left)
        try:
            chunk = sock.recv(4096)
        except TimeoutError:
            return None
        except ConnectionResetError:
            return time.monotonic() - started
        if not chunk:
            return time.monotonic() - started
        # nginx may answer 408 before closing; keep reading until the close
    return None


def test_nginx_cuts_slow_headers_and_bodies_the_gateway_alone_does_not(stack: Stack) -> None:
    partial_headers = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: "
    partial_body = (b"POST /stkpush HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 40\r\n\r\n{\"phone\": ")
    sockets = {}
    try:
        for name, port, data in (("proxy headers", stack.proxy_port, partial_headers),
                                 ("proxy body", stack.proxy_port, partial_body),
                                 ("gateway headers", stack.gateway_port, partial_headers),
                                 ("gateway body", stack.gateway_port, partial_body)):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(data)
            sockets[name] = sock
        started = time.monotonic()
        for name in ("proxy headers", "proxy body"):
            closed = closed_within(sockets[name], CLIENT_TIMEOUT + 3)
            assert closed is not None, f"nginx kept the {name.split()[1]} socket open"
            assert CLIENT_TIMEOUT - 0.5 <= time.monotonic() - started <= CLIENT_TIMEOUT + 2.5, name
        # Well past nginx's time-out, the gateway still holds both sockets.
        time.sleep(max(0.0, 2 * CLIENT_TIMEOUT - (time.monotonic() - started)))
        for name in ("gateway headers", "gateway body"):
            assert closed_within(sockets[name], 0.3) is None, f"the gateway closed the {name.split()[1]} socket"
    finally:
        for sock in sockets.values():
            sock.close()


def push(http: requests.Session, base: str, phone: str, **headers: str) -> requests.Response:
    return http.post(f"{base}/stkpush", json={"phone": phone, "amount": 5}, headers=headers, timeout=10)


def test_the_gateway_counts_each_client_by_its_own_address_through_nginx(stack: Stack) -> None:
    """PUSH_LIMIT_PER_CLIENT=2, TRUSTED_PROXIES=127.0.0.1: nginx's X-Forwarded-For names the client."""
    first, second, third, fourth = (client(f"127.0.0.{n}") for n in (2, 3, 4, 5))
    phones = iter(f"07120000{n:02d}" for n in range(1, 30))  # interactive numbers: each push is accepted
    try:
        assert push(first, stack.proxy, next(phones)).status_code == 200
        assert push(first, stack.proxy, next(phones)).status_code == 200
        refused = push(first, stack.proxy, next(phones))
        assert refused.status_code == 429, refused.text
        assert int(refused.headers["Retry-After"]) >= 1
        assert "from your connection" in refused.json()["message"]  # the gateway's limit, not nginx's

        assert push(second, stack.proxy, next(phones)).status_code == 200  # another address: its own count
        # nginx replaces what a client puts in X-Forwarded-For, so even rubbish there changes nothing
        # (appended to, it would reach the gateway, which refuses a malformed header with 400).
        assert push(second, stack.proxy, next(phones), **{"X-Forwarded-For": "rubbish"}).status_code == 200

        # A client's own X-Forwarded-For is replaced by nginx: 127.0.0.2 is still 127.0.0.2.
        spoofed = push(first, stack.proxy, next(phones), **{"X-Forwarded-For": "9.9.9.9"})
        assert spoofed.status_code == 429, spoofed.text
        assert "from your connection" in spoofed.json()["message"]
        # ... and cannot borrow another address's count either (127.0.0.4 naming the spent 127.0.0.2).
        assert push(third, stack.proxy, next(phones), **{"X-Forwarded-For": "127.0.0.2"}).status_code == 200

        # Straight to the gateway, not through nginx: 127.0.0.2 is no trusted proxy, so its
        # X-Forwarded-For is ignored and the socket's address counts (127.0.0.2: spent) ...
        direct = push(first, stack.gateway, next(phones), **{"X-Forwarded-For": "9.9.9.9"})
        assert direct.status_code == 429, direct.text
        assert "from your connection" in direct.json()["message"]
        # ... and 127.0.0.5 naming the spent 127.0.0.2 is counted as 127.0.0.5.
        assert push(fourth, stack.gateway, next(phones), **{"X-Forwarded-For": "127.0.0.2"}).status_code == 200
    finally:
        for session in (first, second, third, fourth):
            session.close()
    log = (stack.prefix / "access.log").read_text()
    assert re.search(r"^127\.0\.0\.2 ", log, re.M) and re.search(r"^127\.0\.0\.3 ", log, re.M)


def test_nginx_stops_a_burst_of_pushes_with_a_json_429(stack: Stack) -> None:
    """The sample's own limit on POST /stkpush (burst 5): bodies the gateway refuses with 400,
    so the gateway's per-client count is not what stops them."""
    with client("127.0.0.6") as http:
        answers = [http.post(f"{stack.proxy}/stkpush", json={}, timeout=5) for _ in range(10)]
    codes = [a.status_code for a in answers]
    assert codes[:6] == [400] * 6 and 429 in codes[6:], codes
    limited = answers[codes.index(429)]
    assert limited.headers["Content-Type"].startswith("application/json")
    assert limited.json() == {"success": False, "message": "Too many requests from your connection. "
                                                           "Please wait a moment and try again."}
    assert int(limited.headers["Retry-After"]) >= 1
