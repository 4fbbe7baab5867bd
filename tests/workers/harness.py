"""Several gateway processes on one PostgreSQL database, against one standalone simulator: the
processes and the simulator are real (`python run.py …`), over loopback HTTP, with their output in
log files under the test's tmp_path."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg

from tests.conftest import free_port
from tests.gateway.crash_harness import Gateway, Process, Simulator, clean_env

__all__ = ["Instance", "Simulator", "WorkersGateway", "free_port", "oauth_requests", "push", "query", "status"]

# Quiet defaults for the gateways: no abuse limits unless a test sets them, no reconciler queries
# unless a test wants them.
QUIET = {
    "PUSH_LIMIT_PER_PHONE": "0",
    "PUSH_LIMIT_PER_CLIENT": "0",
    "LOOKUP_LIMIT_PER_CLIENT": "0",
    "RECONCILE_AFTER_SECONDS": "600",
}


class Instance(Process):
    """`python run.py [--workers N]` on its own port, sending Daraja calls to the simulator."""

    def __init__(self, name: str, sim: Simulator, database_url: str, workdir: Path, *, workers: int | None = None,
                 port: int | None = None, **settings: str) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = clean_env(HOST="127.0.0.1", PORT=str(self.port), MPESA_ENV="simulator", MPESA_BASE_URL=sim.url,
                        DATABASE_URL=database_url, **{**QUIET, **settings})
        args = ["--workers", str(workers)] if workers else []
        super().__init__(name, args, env, workdir, f"{self.url}/health")

    def children(self) -> list[int]:
        """The worker processes of a `--workers` instance (gunicorn's arbiter is `proc`)."""
        return children_of(self)

    def shutdown(self) -> None:
        shut_down(self)


def children_of(process: Process) -> list[int]:
    if process.proc is None or process.proc.poll() is not None:
        return []
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(process.proc.pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def shut_down(process: Process) -> None:
    """SIGTERM (gunicorn's arbiter stops its workers), then SIGKILL to any worker left behind."""
    workers = children_of(process)
    process.stop()
    for pid in workers:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def push(session: aiohttp.ClientSession, base: str, phone: str, amount: int = 10,
               **extra: Any) -> tuple[int, dict[str, Any]]:
    async with session.post(f"{base}/stkpush", json={"phone": phone, "amount": amount, **extra.pop("body", {})},
                            **extra) as resp:
        return resp.status, await resp.json(content_type=None)


async def status(session: aiohttp.ClientSession, base: str, checkout_request_id: str) -> dict[str, Any]:
    async with session.post(f"{base}/stkpush/status", json={"checkoutRequestId": checkout_request_id}) as resp:
        body: dict[str, Any] = await resp.json(content_type=None)
        return body


def oauth_requests(sim: Simulator) -> int:
    """OAuth requests the simulator has answered (its journal keeps the last 2,000 requests)."""
    entries = sim.api("GET", "/journal", params={"kind": "request", "limit": "2000"})
    return sum(1 for e in entries if e["url"].startswith("/oauth/"))


async def query(database_url: str, sql: str, *args: Any) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return list(await conn.fetch(sql, *args))
    finally:
        await conn.close()


async def wait_for(predicate: Any, timeout: float, step: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await predicate():
            return True
        await asyncio.sleep(step)
    return False


class WorkersGateway(Gateway):
    """`python run.py --workers N` on PostgreSQL, for the crash harness (tests/gateway/crash_harness.py):
    `kill()` SIGKILLs one worker (gunicorn's arbiter starts another), `start()` starts the arbiter or,
    after a kill, waits until N workers serve again; the database is read with asyncpg."""

    def __init__(self, port: int, simulator_url: str, workdir: Path, database_url: str, workers: int = 2,
                 **settings: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.database_url = database_url
        self.workers = workers
        self.killed: list[int] = []
        env = clean_env(HOST="127.0.0.1", PORT=str(port), MPESA_ENV="simulator", MPESA_BASE_URL=simulator_url,
                        DATABASE_URL=database_url, **settings)
        Process.__init__(self, "gateway", ["--workers", str(workers)], env, workdir, f"{self.url}/health")

    def children(self) -> list[int]:
        return children_of(self)

    def kill(self) -> None:
        workers = self.children()
        if workers:
            os.kill(workers[0], signal.SIGKILL)
            self.killed.append(workers[0])

    def start(self, timeout: float = 30.0) -> float:
        if self.proc is None or self.proc.poll() is not None:
            return super().start(timeout)
        started = time.monotonic()
        while time.monotonic() - started < timeout:
            workers = self.children()
            if len(workers) == self.workers and not set(workers) & set(self.killed) and self.answering():
                return time.monotonic() - started
            time.sleep(0.05)
        raise AssertionError(f"no new worker in {timeout} s:\n{self.output()}")

    def shutdown(self) -> None:
        shut_down(self)

    def _query(self, sql: str) -> list[dict[str, Any]]:
        async def fetch() -> list[dict[str, Any]]:
            conn = await asyncpg.connect(self.database_url)
            try:
                return [dict(r) for r in await conn.fetch(sql)]
            finally:
                await conn.close()

        # Called from the test's thread, with no event loop of its own running.
        return asyncio.run(fetch())
