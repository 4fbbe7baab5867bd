"""Helpers for the crash-recovery tests: a standalone simulator process that outlives the gateway,
the gateway as `python run.py` (killed with SIGKILL and restarted on the same SQLite file), a
burst of pushes that straddles the kill, and the comparison of the simulator's prompts (what
customers were asked and what they paid) with what the gateway wrote down.

Everything runs as real processes over loopback HTTP. Process output goes to log files in the
test's tmp_path (never to pipes nobody reads, which would block a chatty server)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import requests

ROOT = Path(__file__).resolve().parents[2]
RUN = str(ROOT / "run.py")

# Settings of either process that must come from the test, not from the developer's shell.
_OWN_PREFIXES = ("MPESA_", "SIMULATOR_", "RECONCILE_", "PUSH_LIMIT", "PAYMENT_", "DARAJA_", "CHECKOUT_")
_OWN_NAMES = ("PORT", "HOST", "DATABASE_URL", "CALLBACK_URL", "FRONTEND_URL", "APP_ENV")


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES) and k not in _OWN_NAMES}
    env.update({"PYTHONUNBUFFERED": "1", **settings})
    return env


class Process:
    """`python run.py …` with its output in a log file; started, killed and started again."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], workdir: Path, ready_url: str) -> None:
        self.name, self.args, self.env, self.workdir, self.ready_url = name, args, env, workdir, ready_url
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.ready_at: float | None = None  # time.time() when the last start answered
        self.log_paths: list[Path] = []

    def start(self, timeout: float = 30.0) -> float:
        """Start and wait until `ready_url` answers 200. Returns the seconds it took."""
        started = time.monotonic()
        self.starts += 1
        log_path = self.workdir / f"{self.name}-{self.starts}.log"
        self.log_paths.append(log_path)
        with open(log_path, "wb") as out:  # the child keeps its own copy of the descriptor
            self.proc = subprocess.Popen([sys.executable, RUN, *self.args], cwd=self.workdir, env=self.env,
                                         stdout=out, stderr=subprocess.STDOUT)
        deadline = started + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.name} exited early ({self.proc.returncode}):\n{self.output()}")
            if self.answering():
                return time.monotonic() - started
            time.sleep(0.05)
        self.kill()
        raise AssertionError(f"{self.name} did not answer {self.ready_url} in {timeout} s:\n{self.output()}")

    def answering(self) -> bool:
        """Whether `ready_url` answers 200 now (and if so, `ready_at` is now)."""
        try:
            if requests.get(self.ready_url, timeout=1).status_code == 200:
                self.ready_at = time.time()
                return True
        except requests.RequestException:
            pass
        return False

    def kill(self) -> None:
        """SIGKILL: no clean-up, no flush, no goodbye, like a power cut to the process."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()

    def output(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.read_text(errors='replace')[-6000:]}"
                         for p in self.log_paths if p.exists())

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.log_paths if p.exists())


class Simulator(Process):
    """`python run.py simulator --port N`: Daraja's paths at the root, control API at /simulator/api."""

    def __init__(self, port: int, workdir: Path, **settings: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        env = clean_env(HOST="127.0.0.1", MPESA_ENV="simulator", **settings)
        super().__init__("simulator", ["simulator", "--port", str(port)], env, workdir,
                         f"{self.url}/simulator/api/clock")

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        resp = requests.request(method, f"{self.url}/simulator/api{path}", timeout=10, **kwargs)
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text}"
        return resp.json() if resp.content else None

    def prompts(self) -> list[dict[str, Any]]:
        return self.api("GET", "/prompts")

    def fault(self, **body: Any) -> Any:
        return self.api("POST", "/faults", json=body)


class Gateway(Process):
    """`python run.py` sending its Daraja calls to the standalone simulator; one SQLite file."""

    def __init__(self, port: int, simulator_url: str, workdir: Path, **settings: str) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.db_path = workdir / "gateway.sqlite3"
        env = clean_env(HOST="127.0.0.1", PORT=str(port), MPESA_ENV="simulator", MPESA_BASE_URL=simulator_url,
                        DATABASE_URL=f"sqlite:///{self.db_path}", **settings)
        super().__init__("gateway", [], env, workdir, f"{self.url}/health")

    def status(self, checkout_request_id: str) -> tuple[int, dict[str, Any]]:
        resp = requests.post(f"{self.url}/stkpush/status", json={"checkoutRequestId": checkout_request_id},
                             timeout=10)
        return resp.status_code, resp.json()

    def _query(self, sql: str) -> list[dict[str, Any]]:
        # The gateway keeps writing (WAL mode); a plain reader sees the last committed state.
        db = sqlite3.connect(self.db_path, timeout=10)
        try:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(sql).fetchall()]
        finally:
            db.close()

    def transactions(self) -> dict[str, dict[str, Any]]:
        return {r["checkout_request_id"]: r for r in self._query(
            "SELECT checkout_request_id, phone, amount, status, result_code, receipt, settled_by, late "
            "FROM transactions")}

    def attempts(self) -> list[dict[str, Any]]:
        return self._query("SELECT id, phone, amount, state, checkout_request_id, created_epoch FROM push_attempts")

    def callback_log(self) -> list[dict[str, Any]]:
        return self._query("SELECT checkout_request_id, outcome, received_at FROM callback_log")

    def unfinished_callbacks(self, rows: dict[str, dict[str, Any]]) -> int:
        """Callbacks acknowledged to Daraja but not yet matched or verified (`received`, `verifying`;
        versions of the gateway without those outcomes have none) that could still change a payment:
        no row for their id yet, a success whose row is not completed, a failure whose row is still
        pending. (One that agrees with its payment's final state is bookkeeping the gateway may
        finish at its next recovery pass.)"""
        count = 0
        for entry in self._query("SELECT checkout_request_id, body FROM callback_log "
                                 "WHERE outcome IN ('received', 'verifying')"):
            row = rows.get(entry["checkout_request_id"])
            try:
                paid = str(json.loads(entry["body"])["Body"]["stkCallback"]["ResultCode"]) == "0"
            except (ValueError, KeyError, TypeError):
                paid = True  # unreadable: assume the worst
            if row is None or (row["status"] != "completed" if paid else row["status"] == "pending"):
                count += 1
        return count


# -- test customers ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Customer:
    msisdn: str  # 2547…
    amount: int
    outcome: str  # the ResultCode the simulator settles with: "0" pays

    @property
    def phone(self) -> str:  # as a shop's customer types it
        return "0" + self.msisdn[3:]


def write_scenarios(path: Path, count: int, first: int = 254711000000, fail_every: int = 5) -> list[Customer]:
    """`count` distinct numbers that answer by themselves: most pay, every `fail_every`-th cancels."""
    customers = [Customer(str(first + i), 10 + i, "1032" if i % fail_every == fail_every - 1 else "0")
                 for i in range(count)]
    entries = [{"msisdn": c.msisdn, "title": f"crash customer {i}", "outcome": c.outcome, "balance": 500_000}
               for i, c in enumerate(customers)]
    path.write_text(json.dumps(entries))
    return customers


# -- the burst -----------------------------------------------------------------------------------

@dataclass
class PushResult:
    customer: Customer
    started: float | None = None  # time.time() of the attempt that counted
    finished: float | None = None
    http: int | None = None
    checkout_request_id: str | None = None
    error: str | None = None  # the request may have reached the gateway, but no answer came
    refused: int = 0  # connection refused (nothing sent), tried again


@dataclass
class Kill:
    at: float  # time.time() of the SIGKILL
    ok_before: int  # pushes answered 200 before it
    in_flight: int  # pushes sent and not yet answered at that moment
    ready_at: float | None = None  # time.time() when the restarted gateway answered /health
    start_seconds: float | None = None  # process start to ready


@dataclass
class Burst:
    results: list[PushResult]
    kills: list[Kill] = field(default_factory=list)
    duration: float = 0.0

    def ok(self) -> list[PushResult]:
        return [r for r in self.results if r.http == 200 and r.checkout_request_id]

    def by_http(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for r in self.results:
            key = str(r.http) if r.http is not None else f"no answer ({r.error})" if r.error else "not sent"
            counts[key] = counts.get(key, 0) + 1
        return counts

    def windows(self) -> list[tuple[float, float]]:
        """(kill, ready again) for every kill: when the gateway was dead."""
        return [(k.at, k.ready_at or k.at) for k in self.kills]


async def _burst(gateway: Gateway, customers: list[Customer], concurrency: int, kill_after_ok: list[int],  # noqa: C901
                 deadline: float, offsets: list[float], held: tuple[Simulator, float] | None) -> Burst:
    """POST /stkpush for every customer, `concurrency` at a time, push i not before `offsets[i]`
    seconds from the start (non-decreasing). Each time the number of pushes answered 200 reaches
    the next figure in `kill_after_ok` (and the gateway is up), SIGKILL the gateway and start it
    again at once, in a thread, while the burst goes on.

    With `held` (the simulator, and how long it holds each push's answer), the kill waits (about
    3 s at most) until the simulator has a prompt on a phone whose push is in flight, made less
    than half that time ago: its answer is still held, so the kill lands while Daraja has a push
    the gateway has no answer for. (On a loaded machine the pushes in flight at a bare count may
    all still be queued before Daraja.)

    A connection refused means nothing was sent: that push is tried again until the gateway is
    back. Any other failure (reset, disconnect, time-out) may have sent it: never retried, so a
    retry can never be the reason a customer gets two prompts."""
    results = [PushResult(c) for c in customers]
    burst = Burst(results)
    queue: asyncio.Queue[tuple[PushResult, float]] = asyncio.Queue()
    for r, offset in zip(results, offsets, strict=True):
        queue.put_nowait((r, offset))
    in_flight: dict[int, str] = {}  # id(result) -> its msisdn
    thresholds = sorted(kill_after_ok)
    restarts: list[asyncio.Future[float]] = []
    killing: list[asyncio.Task[None]] = []
    loop_started = time.monotonic()
    ok_count = 0

    def maybe_kill() -> None:
        if len(burst.kills) >= len(thresholds) or ok_count < thresholds[len(burst.kills)]:
            return
        if restarts and not restarts[-1].done() or killing and not killing[-1].done():
            return  # still coming back from the previous kill, or this one is waiting for its moment
        killing.append(asyncio.ensure_future(kill()))

    async def kill() -> None:
        if held is not None:
            await until_held(*held)
        burst.kills.append(Kill(at=time.time(), ok_before=ok_count, in_flight=len(in_flight)))
        gateway.kill()
        restarts.append(asyncio.ensure_future(asyncio.to_thread(restart, burst.kills[-1])))

    async def until_held(sim: Simulator, hold: float) -> None:
        """Return once the simulator holds an answer (see `_burst`), or after about 3 s, or when
        asking it fails: then the kill comes all the same, and the test's own checks say whether
        it overlapped a push at Daraja."""
        give_up = time.monotonic() + 3
        with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError, KeyError, TypeError):
            async with asyncio.timeout(3.5), aiohttp.ClientSession() as control:
                while time.monotonic() < give_up:
                    async with control.get(f"{sim.url}/simulator/api/prompts", params={"limit": "20"}) as resp:
                        newest = await resp.json()
                    phones = set(in_flight.values())
                    if any(p["msisdn"] in phones and p["createdAt"] > p["now"] - hold / 2 for p in newest):
                        return
                    await asyncio.sleep(0.02)

    def restart(kill: Kill) -> float:
        kill.start_seconds = gateway.start()
        kill.ready_at = gateway.ready_at
        return kill.start_seconds

    # force_close: a fresh connection for every request, so "refused" really means "not sent".
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=True)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def worker() -> None:
            nonlocal ok_count
            while True:
                try:
                    r, offset = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                await asyncio.sleep(max(0.0, loop_started + offset - time.monotonic()))
                while True:
                    r.started = time.time()
                    in_flight[id(r)] = r.customer.msisdn
                    try:
                        async with session.post(f"{gateway.url}/stkpush",
                                                json={"phone": r.customer.phone, "amount": r.customer.amount}) as resp:
                            body = await resp.json(content_type=None)
                            r.http = resp.status
                            r.checkout_request_id = body.get("checkoutRequestId") if isinstance(body, dict) else None
                    except aiohttp.ClientConnectorError:
                        in_flight.pop(id(r), None)
                        r.refused += 1
                        if time.monotonic() > deadline:
                            r.error = "gateway not back in time"
                            break
                        await asyncio.sleep(0.05)
                        continue
                    except (TimeoutError, aiohttp.ClientError, ValueError) as exc:
                        r.error = type(exc).__name__
                    r.finished = time.time()
                    in_flight.pop(id(r), None)
                    break
                if r.http == 200:
                    ok_count += 1
                    maybe_kill()

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:  # never leave a restart running behind the caller's back (it starts a process)
            for waiting in killing:  # a kill still waiting for its moment when the burst is over: none
                waiting.cancel()
            await asyncio.gather(*killing, return_exceptions=True)
            await asyncio.gather(*restarts, return_exceptions=True)
        for killed in killing:
            if not killed.cancelled():
                killed.result()
    for restarted in restarts:
        restarted.result()  # a failed restart fails the burst, with the gateway's output
    burst.duration = time.monotonic() - loop_started
    return burst


def run_burst(gateway: Gateway, customers: list[Customer], concurrency: int, kill_after_ok: list[int],
              offsets: list[float] | None = None, timeout: float = 40.0,
              held: tuple[Simulator, float] | None = None) -> Burst:
    offsets = offsets if offsets is not None else [0.0] * len(customers)
    return asyncio.run(_burst(gateway, customers, concurrency, kill_after_ok, time.monotonic() + timeout, offsets,
                              held))


# -- settling and comparing ----------------------------------------------------------------------

def wait_quiet(sim: Simulator, gateway: Gateway, timeout: float, quiet: float = 2.0,
               stuck: float = 20.0) -> tuple[float, str]:
    """Wait until nothing is left to happen: no open prompt, every settled prompt's callback tried,
    no pending payment at the gateway, no callback the gateway took but has not finished with that
    could still change a payment (see `Gateway.unfinished_callbacks`), and nothing changed for
    `quiet` seconds.
    Gives up after `timeout`, or once prompts and callbacks are done and the gateway's state has
    not moved for `stuck` seconds: longer than its reconciler's interval (1 s here) and its
    recovery pass (every 15 s), so a payment that does not move in that time never will.
    Returns (seconds waited, why it stopped)."""
    started = time.monotonic()
    last: Any = None
    same_since = time.monotonic()
    while True:
        prompts = sim.prompts()
        rows = gateway.transactions()
        unfinished = gateway.unfinished_callbacks(rows)
        open_prompts = sum(1 for p in prompts if p["state"] == "open")
        untried = sum(1 for p in prompts if p["state"] != "open" and not p["callbacks"])
        pending = sum(1 for r in rows.values() if r["status"] == "pending")
        snapshot = (len(prompts), open_prompts, untried, len(rows), unfinished,
                    tuple(sorted((cid, r["status"], r["receipt"]) for cid, r in rows.items())))
        now = time.monotonic()
        if snapshot != last:
            last, same_since = snapshot, now
        left = f"{pending} payments pending, {unfinished} callbacks not finished by the gateway"
        if open_prompts == 0 and untried == 0 and pending == 0 and unfinished == 0 and now - same_since >= quiet:
            return now - started, "quiet"
        if open_prompts == 0 and untried == 0 and now - same_since >= stuck:
            return now - started, f"stuck: {left}, and nothing moved for {stuck:.0f} s"
        if now - started > timeout:
            return now - started, f"timed out: {open_prompts} prompts open, {untried} callbacks not yet sent, {left}"
        time.sleep(0.25)


# What the simulator's callback POST reports when the receiving process dies under it.
CUT_BY_A_KILL = ("ClientConnectorError", "ClientOSError", "ServerDisconnectedError")


@dataclass
class Comparison:
    prompts: list[dict[str, Any]]
    rows: dict[str, dict[str, Any]]
    attempts: list[dict[str, Any]]
    accepted_missing: list[str] = field(default_factory=list)  # answered 200, no row (status 404)
    paid: list[dict[str, Any]] = field(default_factory=list)
    paid_unrecorded: list[dict[str, Any]] = field(default_factory=list)
    paid_wrong_amount: list[dict[str, Any]] = field(default_factory=list)
    failed_prompts: list[dict[str, Any]] = field(default_factory=list)
    faked: list[dict[str, Any]] = field(default_factory=list)  # not paid, but completed at the gateway
    pending: list[dict[str, Any]] = field(default_factory=list)
    phantom_rows: list[str] = field(default_factory=list)  # rows for ids Daraja never issued
    lost_answers: list[dict[str, Any]] = field(default_factory=list)  # prompts whose push got no 200
    callbacks_logged: dict[str, list[str]] = field(default_factory=dict)  # id -> outcomes in callback_log

    def attempt_states(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for a in self.attempts:
            counts[a["state"]] = counts.get(a["state"], 0) + 1
        return counts

    def open_attempts_with_prompt(self) -> list[dict[str, Any]]:
        """Attempts still `sending`/`unknown` whose phone has a prompt no gateway row accounts for."""
        unaccounted = {p["msisdn"] for p in self.prompts if p["checkoutRequestId"] not in self.rows}
        return [a for a in self.attempts if a["state"] in ("sending", "unknown") and a["phone"] in unaccounted]

    def callbacks_around(self, windows: list[tuple[float, float]]) -> tuple[int, int]:
        """(callback POSTs under way at the moment of a kill, callback POSTs that found the gateway
        dead between a kill and its restart), for the (kill, ready again) windows."""
        during = dead = 0
        for p in self.prompts:
            for cb in p["callbacks"]:
                end = cb["at"] + (cb["durationMs"] or 0) / 1000
                for kill_at, ready_at in windows:
                    if cb["at"] < kill_at <= end:
                        during += 1
                    if cb["status"] is None and kill_at <= cb["at"] <= ready_at:
                        dead += 1
        return during, dead


    def beyond_reach(self, windows: list[tuple[float, float]]) -> list[dict[str, Any]]:
        """Paid prompts no gateway could record: the push's answer died with the process AND every
        callback for it came while the gateway was down (Daraja does not retry callbacks and has no
        query by phone, so nothing ever names that CheckoutRequestID to the gateway again)."""
        lost = {p["checkoutRequestId"] for p in self.lost_answers}

        def while_dead(cb: dict[str, Any]) -> bool:
            # Never acknowledged (no HTTP answer), and sent while the gateway was dead, or cut by a
            # kill while under way: refused just after a kill it began just before (`at` is when the
            # simulator started it; it connects a few milliseconds later), or its connection dropped
            # mid-request. (A time-out is not excused: a live gateway held it unanswered.)
            if cb["status"] is not None:
                return False
            if any(kill <= cb["at"] <= ready for kill, ready in windows):
                return True
            end = cb["at"] + (cb["durationMs"] or 0) / 1000
            return str(cb["error"] or "").startswith(CUT_BY_A_KILL) and any(
                cb["at"] < kill <= end for kill, _ in windows)
        # ... and never stored either: a callback the gateway logged is its to finish after a restart.
        return [p for p in self.paid_unrecorded
                if p["checkoutRequestId"] in lost and not self.callbacks_logged.get(p["checkoutRequestId"])
                and p["callbacks"] and all(map(while_dead, p["callbacks"]))]

    def orphan_accepted(self) -> list[dict[str, Any]]:
        """Attempts marked accepted/adopted with an id, but no payment row for that id."""
        return [a for a in self.attempts if a["state"] in ("accepted", "adopted")
                and a["checkout_request_id"] not in self.rows]


def compare(sim: Simulator, gateway: Gateway, answered_ok: dict[str, PushResult]) -> Comparison:
    prompts = sim.prompts()
    rows = gateway.transactions()
    c = Comparison(prompts, rows, gateway.attempts())
    for entry in gateway.callback_log():
        c.callbacks_logged.setdefault(entry["checkout_request_id"], []).append(entry["outcome"])
    for cid in answered_ok:
        code, body = gateway.status(cid)  # the public contract: 404 means the gateway has no such payment
        assert code in (200, 404), f"status of {cid}: {code} {body} (set LOOKUP_LIMIT_PER_CLIENT=0?)"
        if code == 404 or cid not in rows:
            c.accepted_missing.append(cid)
    ids = set()
    for p in prompts:
        cid = p["checkoutRequestId"]
        ids.add(cid)
        row = rows.get(cid)
        if cid not in answered_ok:
            c.lost_answers.append(p)
        if p["state"] == "settled" and p["resultCode"] == "0":
            c.paid.append(p)
            if row is None or row["status"] != "completed":
                c.paid_unrecorded.append(p)
            elif row["amount"] != p["amount"]:
                c.paid_wrong_amount.append(p)
        elif p["state"] == "settled":
            c.failed_prompts.append(p)
            if row is not None and row["status"] == "completed":
                c.faked.append(p)
    c.pending = [r for r in rows.values() if r["status"] == "pending"]
    c.phantom_rows = [cid for cid in rows if cid not in ids]
    return c


def explain_unrecorded(c: Comparison, burst: Burst | None, limit: int = 8) -> str:
    """Why each paid-but-unrecorded prompt was missed: its push's answer, its callbacks, its attempt."""
    lines = []
    by_phone: dict[str, list[dict[str, Any]]] = {}
    for a in c.attempts:
        by_phone.setdefault(a["phone"], []).append(a)
    results = {r.customer.msisdn: r for r in burst.results} if burst else {}
    for p in c.paid_unrecorded[:limit]:
        row = c.rows.get(p["checkoutRequestId"])
        first_kill = burst.kills[0].at if burst and burst.kills else 0.0
        cbs = [(round(cb["at"] - first_kill, 2), cb["status"] or cb["error"]) for cb in p["callbacks"]]
        r = results.get(p["msisdn"])
        push = f"push http={r.http} error={r.error}" if r else "push ?"
        attempts = [(a["state"], a["checkout_request_id"]) for a in by_phone.get(p["msisdn"], [])]
        lines.append(f"  {p['checkoutRequestId']} KES {p['amount']}: {push}; row={row and row['status']}; "
                     f"callbacks sent (s after the first kill, receiver's answer)={cbs}; gateway's callback_log="
                     f"{c.callbacks_logged.get(p['checkoutRequestId'], [])}; push_attempts={attempts}")
    if len(c.paid_unrecorded) > limit:
        lines.append(f"  … and {len(c.paid_unrecorded) - limit} more")
    return "\n".join(lines)


def poll(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()
