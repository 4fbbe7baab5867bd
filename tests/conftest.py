"""Shared fixtures: the real app (gateway + simulator over real loopback HTTP) on a free port,
with the simulator's timings shortened by settings so every scenario runs in about a second."""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from gateway.config import Settings
from gateway.keys import PAYMENTS
from gateway.payments import PaymentService
from run import build_app, load
from simulator.keys import SIMULATOR
from simulator.models import SimulatedDaraja

# Timings for tests: scripted answers after 0.2 s, callbacks 0.05 s later, queries after 0.6 s.
FAST_ENV = {
    "SIMULATOR_AUTO_ANSWER_SECONDS": "0.2",
    "SIMULATOR_CALLBACK_DELAY_SECONDS": "0.05",
    "SIMULATOR_PROMPT_LIFETIME_SECONDS": "2",
    "SIMULATOR_LATE_CALLBACK_SECONDS": "1.5",
    "RECONCILE_AFTER_SECONDS": "0.6",
    "RECONCILE_INTERVAL_SECONDS": "0.3",
    "RECONCILE_MAX_INTERVAL_SECONDS": "0.5",
    "PAYMENT_TIMEOUT_SECONDS": "30",
    "PUSH_LIMIT_PER_CLIENT": "0",  # every test client is 127.0.0.1; the limit has tests of its own
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


MALFORMED_REQUESTS = {  # what aiohttp's HTTP parser refuses before any app sees it, and the client bytes each holds
    b"GET /health HTTP/1.1\r\nHost: x\r\nBad Header Token\r\n\r\n": "Bad Header Token",
    b"G@T /health HTTP/1.1\r\nHost: x\r\n\r\n": "G@T",
    b"GET /health HTTP/1.1\r\nHost: x\r\nX-Long: " + b"q" * 9000 + b"\r\n\r\n": "qqqq",
    b"POST /stkpush HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzzq\r\n": "zzq",
}


def send_raw(port: int, data: bytes, timeout: float = 5.0) -> bytes:
    """Send bytes as they are to 127.0.0.1:port and read until the server closes (or `timeout`)."""
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except TimeoutError:
            pass
    return answer


@dataclass
class Running:
    """A started app: `client` talks to it over HTTP; `sim` and `payments` are its real parts."""

    client: TestClient
    app: web.Application
    settings: Settings
    tokens: dict[str, str] = field(default_factory=dict)  # paymentToken of each push made here

    @property
    def sim(self) -> SimulatedDaraja:
        return self.app[SIMULATOR]

    @property
    def payments(self) -> PaymentService:
        return self.app[PAYMENTS]

    def stk_queries(self) -> int:
        """How many STK queries the simulator has been sent (its whole journal: a plain read stops at 200)."""
        return sum(1 for e in self.sim.journal.entries(limit=10**6) if e.url.endswith("/stkpushquery/v1/query"))

    async def push(self, phone: str = "0700000000", amount: Any = 100, **extra: Any) -> dict[str, Any]:
        resp = await self.client.post("/stkpush", json={"phone": phone, "amount": amount, **extra})
        body = await resp.json()
        if body.get("paymentToken"):
            self.tokens[body["checkoutRequestId"]] = body["paymentToken"]
        return {"http": resp.status, **body}

    async def status(self, checkout_request_id: str, *, with_token: bool = True) -> dict[str, Any]:
        """The status answer, as the browser that made the push sees it (its token sent along)."""
        query: dict[str, str] = {"checkoutRequestId": checkout_request_id}
        if with_token and checkout_request_id in self.tokens:
            query["paymentToken"] = self.tokens[checkout_request_id]
        resp = await self.client.post("/stkpush/status", json=query)
        return {"http": resp.status, **await resp.json()}

    async def wait_status(self, checkout_request_id: str, want: str, timeout: float = 10.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            body = await self.status(checkout_request_id)
            if body.get("status") == want:
                return body
            if time.monotonic() > deadline:
                raise AssertionError(f"{checkout_request_id} still {body} after {timeout} s, wanted {want}")
            await asyncio.sleep(0.05)


# TEST_DATABASE=postgresql: the apps started by `start_app` store into a fresh PostgreSQL database
# (one per test, on the throw-away cluster below) instead of an SQLite file in tmp_path.
TEST_DATABASE = os.environ.get("TEST_DATABASE", "sqlite").strip().lower() or "sqlite"
if TEST_DATABASE not in ("sqlite", "postgresql"):
    raise pytest.UsageError(f"TEST_DATABASE must be sqlite or postgresql (got {TEST_DATABASE!r})")
ON_POSTGRESQL = TEST_DATABASE == "postgresql"

# For the tests that look at the SQLite file itself (or run a process that needs one).
sqlite_only = pytest.mark.skipif(ON_POSTGRESQL,
                                 reason="reads or writes the SQLite file itself (TEST_DATABASE=postgresql)")


def app_env(tmp_path: Any, database_url: str | None = None, **overrides: str) -> dict[str, str]:
    """Settings for a test app: a free port, a database file in tmp_path (or `database_url`), fast timings."""
    env = {"PORT": str(free_port()), "DATABASE_URL": database_url or f"sqlite:///{tmp_path}/test.sqlite3",
           **FAST_ENV}
    env.update(overrides)
    return env


@pytest.fixture
def database_url(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    """The test's database: an SQLite file in tmp_path, or (TEST_DATABASE=postgresql) a fresh
    PostgreSQL database."""
    if ON_POSTGRESQL:
        return str(request.getfixturevalue("postgres_url"))
    return f"sqlite:///{tmp_path}/test.sqlite3"


@pytest.fixture
def start_app(database_url: str, aiohttp_server: Any, aiohttp_client: Any,
              tmp_path: Any) -> Callable[..., Awaitable[Running]]:
    """`await start_app(SETTING="value", ...)` starts gateway + simulator with those settings.
    (`database_url` first: set up before the servers, its database is dropped after they stop.)"""

    async def start(**overrides: str) -> Running:
        settings, simulator_settings = load(app_env(tmp_path, database_url, **overrides))
        app = build_app(settings, simulator_settings)
        server = await aiohttp_server(app, host="127.0.0.1", port=settings.port)
        client = await aiohttp_client(server)
        return Running(client=client, app=app, settings=settings)

    return start


@pytest.fixture
async def running(start_app: Callable[..., Awaitable[Running]]) -> Running:
    return await start_app()


# -- PostgreSQL: one throw-away cluster per test process, a fresh database per test -------------

@pytest.fixture(scope="session")
def postgres_server():
    """The URL of a throw-away PostgreSQL cluster's `postgres` database. Skipped where the binaries
    are missing; in CI (env CI set) that is a failure instead."""
    import os

    from tests.pg_cluster import binaries, cluster

    if binaries() is None:
        reason = "PostgreSQL binaries not found (apt-get install postgresql: /usr/lib/postgresql/*/bin/initdb)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    with cluster() as url:
        yield url


@pytest.fixture
async def postgres_url(postgres_server):
    """A new, empty database on the test cluster, dropped afterwards."""
    import uuid

    import asyncpg

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    yield postgres_server.rsplit("/", 1)[0] + f"/{name}"
    admin = await asyncpg.connect(postgres_server)
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()
