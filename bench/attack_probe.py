"""Security-review figures, measured against a freshly started real server over loopback.

    .venv/bin/python bench/attack_probe.py [--slow-sockets]

Starts `python run.py` (simulator mode, a fresh SQLite file in a temporary folder, a free port,
the default limits) and, where a probe needs other settings, a second and third server of its
own; then tries what an attacker would and prints one line per figure ("what was tried → what
happened"):

  1. enumeration: 3,000 status lookups of made-up CheckoutRequestIDs in Daraja's shape around a
     real push (the real id late in the sequence): 404s, 429s, whether the real one was found; the
     same lookups one at a time and all at once; then what the real id tells without its
     paymentToken and with it, on the status API and the confirmation page
  2. prompt bombing: 30 concurrent pushes to one phone; pushes whose answer is lost (504) count too
  3. one client, many phones: 60 pushes to 60 numbers from one client address
  4. cross-site: text/plain and application/json pushes carrying a foreign Origin
  5. streams: 500 live-update streams opened within about 1 s from one client address; how long
     a closed stream keeps its slot; streams whose client leaves at once
  6. slow headers: 200 sockets holding a partial request line for 30 s, beside sockets trickling
     header bytes and sockets with a body that never finishes (only with --slow-sockets)
  7. absurd input: callbacks with NaN, inf, 1e300, 2**63 amounts (and whether each body was kept);
     a 5,000-digit amount
  8. storage of junk: 300 callbacks for unknown ids with a 60,000-character ResultDesc
  9. start-up refusals of unsafe settings, and whether the banner prints the callback's secret path
 10. the reconciler's back-off arithmetic for absurd attempt counts

Every request goes to 127.0.0.1. Per-client limits are keyed by the client's address, so probes
that must not share one client's budget (or lock-out) send from other loopback addresses
(127.0.0.2 … 127.0.0.10: Linux routes all of 127.0.0.0/8 to the loopback interface; on macOS add
them with `sudo ifconfig lo0 alias 127.0.0.N`). Settings inherited from the environment
(MPESA_*, SIMULATOR_*, RECONCILE_*, PUSH_LIMIT*, LOOKUP_LIMIT*, STREAM_LIMIT*, TRUSTED_PROXIES,
CALLBACK_URL, DATABASE_URL, PORT, and HOST, FRONTEND_URL, APP_ENV, DARAJA_*, PAYMENT_TIMEOUT_*)
are removed, and blanked if a .env file would bring them back, so the defaults are the defaults.
Bounded in requests and time (about 25 s; 40 s with --slow-sockets); the servers are always stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
RUN_DEADLINE_SECONDS = 110  # the whole run, servers included
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=15)
SERVER_START_SECONDS = 20
SLOW_SOCKET_WAIT = 30.0

STRIP_PREFIXES = ("MPESA_", "SIMULATOR_", "RECONCILE_", "PUSH_LIMIT", "LOOKUP_LIMIT", "STREAM_LIMIT", "DARAJA_",
                  "PAYMENT_TIMEOUT")
STRIP_NAMES = ("TRUSTED_PROXIES", "CALLBACK_URL", "DATABASE_URL", "PORT", "HOST", "FRONTEND_URL", "APP_ENV")

# Client addresses: one per probe that must have a budget (or a lock-out) of its own.
ENUMERATOR = "127.0.0.1"
CUSTOMER = "127.0.0.2"
MANY_PHONES = "127.0.0.3"
CROSS_SITE = "127.0.0.4"
STREAMER = "127.0.0.5"
SLOWLORIS = "127.0.0.6"
JUNK = "127.0.0.7"
ONE_AT_A_TIME = "127.0.0.8"
ALL_AT_ONCE = "127.0.0.9"
ABRUPT = "127.0.0.10"

SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"

FIVE_XX: list[tuple[str, int]] = []  # (what, status) of every 5xx answer the probes received


def say(what: str, happened: str) -> None:
    print(f"  {what} → {happened}", flush=True)


def section(title: str) -> None:
    print(f"\n{title}", flush=True)


def n(value: int) -> str:
    return f"{value:,}"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stripped(name: str) -> bool:
    return name.startswith(STRIP_PREFIXES) or name in STRIP_NAMES


def clean_env(**settings: str) -> dict[str, str]:
    """The inherited environment without the gateway's settings, plus `settings`. Names a .env in
    the project would set (run.py loads it; real variables win) are blanked: blank means default."""
    env = {k: v for k, v in os.environ.items() if not _stripped(k)}
    dotenv = ROOT / ".env"
    if dotenv.exists():
        try:
            from dotenv import dotenv_values
            for name in dotenv_values(dotenv):
                if _stripped(name):
                    env[name] = ""
        except ImportError:
            pass
    env.update(settings)
    return env


def record_5xx(what: str, status: int) -> None:
    if status >= 500:
        FIVE_XX.append((what, status))


def client(address: str, *, limit: int = 100) -> aiohttp.ClientSession:
    """A client session whose connections come from `address` (a loopback address) to 127.0.0.1."""
    connector = aiohttp.TCPConnector(limit=limit, local_addr=(address, 0), force_close=False)
    return aiohttp.ClientSession(connector=connector, timeout=REQUEST_TIMEOUT)


async def post_json(session: aiohttp.ClientSession, url: str, body: Any, what: str,
                    **headers: str) -> tuple[int, Any, dict[str, str]]:
    async with session.post(url, json=body, headers=headers or None) as resp:
        text = await resp.text()
        record_5xx(what, resp.status)
        try:
            data = json.loads(text)
        except ValueError:
            data = text
        return resp.status, data, dict(resp.headers)


async def post_raw(session: aiohttp.ClientSession, url: str, data: bytes | str, what: str,
                   content_type: str = "application/json", **headers: str) -> tuple[int, Any]:
    async with session.post(url, data=data, headers={"Content-Type": content_type, **headers}) as resp:
        text = await resp.text()
        record_5xx(what, resp.status)
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


def counts(statuses: list[int] | Counter[int]) -> str:
    counter = statuses if isinstance(statuses, Counter) else Counter(statuses)
    return ", ".join(f"{status}: {n(count)}" for status, count in sorted(counter.items()))


# -- servers --------------------------------------------------------------------------------------


@dataclass
class Server:
    name: str
    settings: dict[str, str]
    tmp: tempfile.TemporaryDirectory[str] = field(default_factory=tempfile.TemporaryDirectory)
    port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def db_path(self) -> Path:
        return Path(self.tmp.name) / "probe.sqlite3"

    @property
    def log_path(self) -> Path:
        return Path(self.tmp.name) / "server.log"

    def start(self) -> None:
        env = clean_env(PORT=str(self.port), DATABASE_URL=f"sqlite:///{self.db_path}", **self.settings)
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env,
                                            stdout=subprocess.DEVNULL, stderr=log)

    async def wait_ready(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + SERVER_START_SECONDS
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise RuntimeError(f"{self.name} server exited with {self.process.returncode}: "
                                       f"{self.log_path.read_text(errors='replace')[-2000:]}")
                try:
                    async with session.get(f"{self.base}/health") as resp:
                        if resp.status == 200:
                            return
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} server did not answer /health within {SERVER_START_SECONDS} s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)

    def log_findings(self) -> tuple[int, int, list[str]]:
        """Tracebacks, ERROR lines, and the distinct ERROR messages (without time stamps)."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        errors = [line for line in text.splitlines() if " ERROR " in line]
        distinct = sorted({re.sub(r"ws_CO_\w+", "ws_CO_…", line.split(" ERROR ", 1)[1])[:140] for line in errors})
        return text.count("Traceback (most recent call last)"), len(errors), distinct

    def db(self) -> contextlib.closing[sqlite3.Connection]:
        """The server's SQLite file, read-only (WAL: committed data only); closed after the block."""
        return contextlib.closing(sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10))


# -- 1. enumeration -------------------------------------------------------------------------------


@dataclass
class RealPush:
    checkout_request_id: str
    token: str
    phone: str
    amount: int
    reference: str
    description: str


async def probe_enumeration(main: Server) -> RealPush:
    section("1. Enumeration of payment ids (default LOOKUP_LIMIT_PER_CLIENT=20 unknown ids per 60 s)")
    real = RealPush("", "", "0712345678", 4321, "PRBREF77", "PrbDesc99")
    async with client(ENUMERATOR, limit=50) as session:
        status, body, _ = await post_json(session, f"{main.base}/stkpush",
                                          {"phone": real.phone, "amount": real.amount,
                                           "accountReference": real.reference, "description": real.description},
                                          "real push")
        if status != 200:
            raise RuntimeError(f"the real push failed: {status} {body}")
        real.checkout_request_id, real.token = body["checkoutRequestId"], body["paymentToken"]
        cid = real.checkout_request_id
        say(f"one real push to {real.phone} (KES {real.amount}, {real.reference}, {real.description})",
            f"200, {cid}")

        # Daraja's shape: ws_CO_ + DDMMYYYYHHmmss + milliseconds (unpadded) + the subscriber's 9 digits.
        second = datetime.strptime(cid[6:20], "%d%m%Y%H%M%S")
        subscriber = cid[-9:]
        guesses = []
        for shift in (-1, 1, 0):  # the real push's second last
            moment = second + timedelta(seconds=shift)
            for millis in range(1000):
                guess = f"ws_CO_{moment:%d%m%Y%H%M%S}{millis}{subscriber}"
                if guess != cid:
                    guesses.append(guess)
        guesses = guesses[:2999]
        real_at = 2900
        guesses.insert(real_at, cid)

        answers: list[int] = [0] * len(guesses)
        retry_after: set[str] = set()
        queue: asyncio.Queue[int] = asyncio.Queue()
        for i in range(len(guesses)):
            queue.put_nowait(i)

        async def worker() -> None:
            while not queue.empty():
                i = queue.get_nowait()
                async with session.post(f"{main.base}/stkpush/status",
                                        json={"checkoutRequestId": guesses[i]}) as resp:
                    await resp.read()
                    answers[i] = resp.status
                    record_5xx("status lookup", resp.status)
                    if resp.status == 429:
                        retry_after.add(resp.headers.get("Retry-After", "?"))

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(50)))
        elapsed = time.perf_counter() - started
        tally = Counter(answers)
        first_429 = next((i for i, s in enumerate(answers) if s == 429), None)
        found = answers[real_at] == 200
        say(f"{n(len(guesses))} POST /stkpush/status of ids in Daraja's shape (the 3 s around the real push × "
            f"1,000 ms, subscriber …{subscriber[-4:]}; the real id at #{n(real_at + 1)}), 50 at a time",
            f"{counts(tally)}; first 429 at #{'-' if first_429 is None else n(first_429 + 1)}; "
            f"Retry-After {'/'.join(sorted(retry_after)) or '-'} s; {elapsed:.2f} s ({len(guesses) / elapsed:,.0f}/s)")
        say("was the real id ever found", f"{'YES' if found else 'no'} (its lookup was answered {answers[real_at]})")
        status, body, _ = await post_json(session, f"{main.base}/stkpush/status",
                                          {"checkoutRequestId": cid, "paymentToken": real.token}, "status")
        say(f"the real id WITH its paymentToken, from the enumerating address {ENUMERATOR} right after",
            f"{status} ({'locked out too: the limit is per address, real customer or not' if status == 429 else body})")

    # How many unknown ids a client gets answered depends on how many it has in flight at once:
    # the same made-up ids one at a time, and all at once, each from a fresh address.
    for address, total, width in ((ONE_AT_A_TIME, 40, 1), (ALL_AT_ONCE, 300, 300)):
        async with client(address, limit=0) as burst:
            sem = asyncio.Semaphore(width)

            async def lookup(guess: str, sem: asyncio.Semaphore = sem, burst: aiohttp.ClientSession = burst) -> int:
                async with sem, burst.post(f"{main.base}/stkpush/status", json={"checkoutRequestId": guess}) as resp:
                    await resp.read()
                    record_5xx("status lookup", resp.status)
                    return resp.status

            made_up = [g for g in guesses if g != cid][:total]
            started = time.perf_counter()
            tally = Counter(await asyncio.gather(*(lookup(g) for g in made_up)))
            say(f"{total} lookups of made-up ids from {address}, {'one at a time' if width == 1 else 'all at once'}",
                f"{counts(tally)} ({time.perf_counter() - started:.2f} s)")
    async with client(CUSTOMER) as session:
        detail_fields = ("amount", "phoneMasked", "accountReference", "description")
        status, body, _ = await post_json(session, f"{main.base}/stkpush/status", {"checkoutRequestId": cid},
                                          "status")
        leaked = [f for f in detail_fields if isinstance(body, dict) and f in body]
        say(f"the real id's status WITHOUT its paymentToken (from {CUSTOMER})",
            f"{status}, fields {sorted(body) if isinstance(body, dict) else body}; "
            f"amount/phone/reference/description {'PRESENT: ' + ', '.join(leaked) if leaked else 'absent'}")
        status, body, _ = await post_json(session, f"{main.base}/stkpush/status",
                                          {"checkoutRequestId": cid, "paymentToken": real.token}, "status")
        present = [f for f in detail_fields if isinstance(body, dict) and f in body]
        say("the real id's status WITH its paymentToken",
            f"{status}, fields {sorted(body) if isinstance(body, dict) else body}; "
            f"{'all four present' if len(present) == 4 else 'present: ' + (', '.join(present) or 'none')} "
            f"({', '.join(f'{f}={body[f]!r}' for f in present)})")
        for label, query in (("WITHOUT", {"checkoutRequestId": cid}),
                             ("WITH", {"checkoutRequestId": cid, "paymentToken": real.token})):
            async with session.get(f"{main.base}/confirmation.html", params=query) as resp:
                html = await resp.text()
                record_5xx("confirmation page", resp.status)
            data_block = re.compile(r'<script type="application/json"[^>]*>(.*?)</script>', flags=re.S)
            outside = data_block.sub("", html)
            data_blocks = data_block.findall(html)
            found_outside = {
                "amount": any(a in outside for a in (f"{real.amount:,}", str(real.amount))),
                "reference": real.reference in outside,
                "9 subscriber digits": subscriber in outside,
            }
            found_data = {
                "amount": any(str(real.amount) in b for b in data_blocks),
                "reference": any(real.reference in b for b in data_blocks),
                "9 subscriber digits": any(subscriber in b for b in data_blocks),
            }
            say(f"GET /confirmation.html?checkoutRequestId=… {label} the token",
                f"{resp.status}; outside the JSON data block: "
                + ", ".join(f"{k} {'YES' if v else 'no'}" for k, v in found_outside.items())
                + "; inside it: " + ", ".join(f"{k} {'yes' if v else 'no'}" for k, v in found_data.items()))
    return real


# -- 2. prompt bombing ----------------------------------------------------------------------------


async def probe_prompt_bombing(unlocked: Server, short_timeout: Server) -> None:
    section("2. Prompt bombing one phone (default PUSH_LIMIT_PER_PHONE=5 per 300 s; SIMULATOR_LOCK_SUBSCRIBER=false)")
    async with client(ENUMERATOR, limit=0) as session:
        body = {"phone": "0712999001", "amount": 10}
        started = time.perf_counter()
        results = await asyncio.gather(*(post_json(session, f"{unlocked.base}/stkpush", body, "bombing push")
                                         for _ in range(30)))
        elapsed = time.perf_counter() - started
        waits = sorted({h.get("Retry-After", "?") for s, _, h in results if s == 429})
        say("30 concurrent POST /stkpush to 0712999001", f"{counts([s for s, _, _ in results])}; "
            f"Retry-After {'/'.join(waits) or '-'} s; {elapsed:.2f} s")

    async with client(ENUMERATOR) as session:
        status, body, _ = await post_json(session, f"{short_timeout.base}/simulator/api/faults",
                                          {"count": 6, "push": "timeout", "delay": 2}, "fault")
        say("simulator fault {count: 6, push: timeout, delay: 2} on a server with DARAJA_TIMEOUT_SECONDS=0.5",
            f"{status}")
        codes, times = [], []
        for _ in range(6):
            started = time.perf_counter()
            status, _, _ = await post_json(session, f"{short_timeout.base}/stkpush",
                                           {"phone": "0712999002", "amount": 10}, "lost-answer push")
            codes.append(status)
            times.append(time.perf_counter() - started)
        say("6 sequential POST /stkpush to 0712999002 whose answers are lost",
            f"{' '.join(map(str, codes))} ({' '.join(f'{t:.1f}' for t in times)} s)")


# -- 3. one client, many phones -------------------------------------------------------------------


async def probe_many_phones(main: Server) -> None:
    section("3. One client, many phones (default PUSH_LIMIT_PER_CLIENT=30 per 300 s)")
    phones = [f"07120000{i:02d}" for i in range(60)]
    async with client(MANY_PHONES, limit=10) as session:
        started = time.perf_counter()
        results = await asyncio.gather(*(post_json(session, f"{main.base}/stkpush", {"phone": p, "amount": 10},
                                                   "many-phones push") for p in phones))
        elapsed = time.perf_counter() - started
    say(f"60 POST /stkpush to 60 interactive numbers ({phones[0]}…{phones[-1]}) from {MANY_PHONES}, 10 at a time",
        f"{counts([s for s, _, _ in results])}; {elapsed:.2f} s")


# -- 4. cross-site --------------------------------------------------------------------------------


async def probe_cross_site(main: Server) -> None:
    section("4. Cross-site pushes (a page on https://evil.example firing pushes from its visitors' browsers)")
    body = json.dumps({"phone": "0712000100", "amount": 10})
    url = f"{main.base}/stkpush"
    async with client(CROSS_SITE) as session:
        for label, content_type, origin in (
                ("Content-Type: text/plain + Origin: https://evil.example", "text/plain", "https://evil.example"),
                ("Content-Type: application/json + Origin: https://evil.example", "application/json",
                 "https://evil.example"),
                ("Content-Type: text/plain, no Origin", "text/plain", None),
                ("Content-Type: application/json, no Origin", "application/json", None)):
            headers = {"Origin": origin} if origin else {}
            status, answer = await post_raw(session, url, body, "cross-site push", content_type, **headers)
            message = answer.get("message") if isinstance(answer, dict) else str(answer)[:60]
            say(f"POST /stkpush, {label}", f"{status} ({message})")


# -- 5. streams -----------------------------------------------------------------------------------


async def probe_streams(main: Server, real: RealPush) -> int:
    section("5. Live-update streams (default STREAM_LIMIT_PER_CLIENT=10, STREAM_LIMIT_TOTAL=1000)")
    url = f"{main.base}/stkpush/{real.checkout_request_id}/events"
    async with client(CUSTOMER) as session:
        status, body, _ = await post_json(session, f"{main.base}/stkpush/status",
                                          {"checkoutRequestId": real.checkout_request_id}, "status")
    state = body.get("status") if isinstance(body, dict) else body
    held: list[aiohttp.ClientResponse] = []
    statuses: list[int] = []
    errors: Counter[str] = Counter()
    timeout = aiohttp.ClientTimeout(total=None, connect=5, sock_connect=5, sock_read=None)
    connector = aiohttp.TCPConnector(limit=0, local_addr=(STREAMER, 0))
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        async def one(i: int) -> None:
            await asyncio.sleep(i * 0.002)  # 500 within about 1 s
            try:
                resp = await asyncio.wait_for(session.get(url), 10)
            except (TimeoutError, aiohttp.ClientError) as exc:
                errors[type(exc).__name__] += 1
                return
            statuses.append(resp.status)
            record_5xx("stream", resp.status)
            if resp.status == 200:
                held.append(resp)
            else:
                await resp.read()
                resp.release()

        started = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(500)))
        elapsed = time.perf_counter() - started
        say(f"500 GET /stkpush/{{id}}/events for the real id (status {state}) from {STREAMER} within ~1 s",
            f"{counts(statuses)}{'; errors ' + dict(errors).__repr__() if errors else ''}; "
            f"all answered in {elapsed:.2f} s; {len(held)} held open")
        for resp in held:
            resp.close()
    return len(held)


STREAM_FREED_WAIT = 30.0


async def stream_slot_freed(main: Server, real: RealPush, closed: int) -> tuple[str, str]:
    """After the client closed its streams: how long until the same address may open one again."""
    url = f"{main.base}/stkpush/{real.checkout_request_id}/events"
    closed_at = time.perf_counter()
    freed = None
    tries: Counter[int] = Counter()
    connector = aiohttp.TCPConnector(limit=1, local_addr=(STREAMER, 0))
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=5)) as session:
        while time.perf_counter() - closed_at < STREAM_FREED_WAIT:
            try:
                async with session.get(url) as resp:
                    tries[resp.status] += 1
                    record_5xx("stream", resp.status)
                    if resp.status == 200:
                        freed = time.perf_counter() - closed_at
                        with contextlib.suppress(aiohttp.ClientError, asyncio.TimeoutError):
                            await asyncio.wait_for(resp.content.readany(), 5)  # its first event, as a page would
                        break
                    await resp.read()
            except (TimeoutError, aiohttp.ClientError):
                tries[0] += 1
            await asyncio.sleep(0.5)
    what = f"all {closed} closed by the client; a new stream from {STREAMER}, tried every 0.5 s"
    if freed is None:
        return what, f"still refused after {STREAM_FREED_WAIT:.0f} s ({counts(tries)})"
    return what, f"200 again after {freed:.1f} s ({counts(tries)})"


ABRUPT_STREAMS = 20
EXPECTED_TRACEBACKS: list[int] = []  # tracebacks a probe provoked on purpose (main server)


async def abrupt_streams(main: Server, real: RealPush) -> tuple[str, str]:
    """Streams whose client leaves as soon as its request is sent (a closed tab, a dropped line)."""
    request = (f"GET /stkpush/{real.checkout_request_id}/events HTTP/1.1\r\nHost: 127.0.0.1:{main.port}\r\n"
               "\r\n").encode()
    before_text = main.log_path.read_text(errors="replace")
    before = before_text.count("Traceback (most recent call last)")
    for _ in range(ABRUPT_STREAMS):
        _, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", main.port, local_addr=(ABRUPT, 0)), 5)
        writer.write(request)
        await writer.drain()
        writer.close()
        await writer.wait_closed()
    added, grown, settle = 0, 0, time.monotonic() + 3
    while time.monotonic() < settle:  # the server logs each one a moment later
        await asyncio.sleep(0.25)
        text = main.log_path.read_text(errors="replace")
        added, grown = text.count("Traceback (most recent call last)") - before, len(text) - len(before_text)
        if added >= ABRUPT_STREAMS:
            break
    EXPECTED_TRACEBACKS.append(added)
    kinds = sorted(set(re.findall(r"^(\w[\w.]*(?:Error|Exception)): ", text[len(before_text):], flags=re.M)))
    return (f"{ABRUPT_STREAMS} GET /stkpush/{{id}}/events for the real id from {ABRUPT}, each socket closed as soon as "
            "its request was sent",
            f"{added} 'unhandled error' tracebacks in the server's ERROR log ({n(grown)} bytes of log"
            + (f"; {', '.join(kinds)}" if kinds else "") + "); no limit applies to a known id")


# -- 6. slow headers ------------------------------------------------------------------------------


SLOW_BODY = (b"POST /stkpush/status HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100\r\n\r\n{\"checkoutRequestId\": ")


async def hold_sockets(port: int, count: int, first: bytes, drip: bytes | None,
                       deadline: float) -> tuple[int, list[float], Counter[str], int]:
    """`count` sockets that send `first` (and then `drip` every 2 s, if given) until `deadline`.
    Returns (opened, seconds after which the gateway closed each closed one, first answer lines, failed)."""
    sockets: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    failed = 0
    for _ in range(count):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port, local_addr=(SLOWLORIS, 0)), 5)
        except (TimeoutError, OSError):
            failed += 1
            continue
        writer.write(first)
        sockets.append((reader, writer))
    await asyncio.gather(*(w.drain() for _, w in sockets), return_exceptions=True)
    started = time.monotonic()
    closed_after: list[float] = []
    answered: Counter[str] = Counter()

    async def dripping(writer: asyncio.StreamWriter) -> None:
        while drip is not None and time.monotonic() + 2 < deadline:
            await asyncio.sleep(2)
            try:
                writer.write(drip)
                await writer.drain()
            except OSError:
                return

    async def watch(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        dripper = asyncio.create_task(dripping(writer))
        try:
            data = await asyncio.wait_for(reader.read(200), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            return  # still open at the deadline
        except OSError:
            data = b""
        finally:
            dripper.cancel()
        if data:
            answered[data.split(b"\r\n", 1)[0].decode(errors="replace")] += 1
        closed_after.append(time.monotonic() - started)

    await asyncio.gather(*(watch(r, w) for r, w in sockets))
    for _, writer in sockets:
        writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in sockets), return_exceptions=True)
    return len(sockets), closed_after, answered, failed


def held_report(opened: int, closed_after: list[float], answered: Counter[str], failed: int) -> str:
    closed = (f"closed by the gateway: {len(closed_after)} (after {min(closed_after):.1f}–{max(closed_after):.1f} s)"
              if closed_after else "closed by the gateway: 0")
    return (f"still open: {opened - len(closed_after)}; {closed}" + (f"; answered {dict(answered)}" if answered else "")
            + (f"; could not connect: {failed}" if failed else ""))


async def slow_sockets(main: Server) -> list[tuple[str, str]]:
    """200 sockets that never finish their request line, watched for 30 s; beside them, for
    comparison, 20 that trickle header bytes and 20 whose body never finishes."""
    deadline = time.monotonic() + SLOW_SOCKET_WAIT
    idle, trickle, body = await asyncio.gather(
        hold_sockets(main.port, 200, b"GET /hea", None, deadline),
        hold_sockets(main.port, 20, b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ", b"a", deadline),
        hold_sockets(main.port, 20, SLOW_BODY, None, deadline))
    lines = [
        (f"200 sockets from {SLOWLORIS}, each sent 'GET /hea' and nothing more, watched for {SLOW_SOCKET_WAIT:.0f} s",
         held_report(*idle)),
        ("beside them: 20 sockets trickling one header byte every 2 s", held_report(*trickle)),
        ("and 20 sockets with complete headers and a body that never finishes (Content-Length: 100)",
         held_report(*body)),
    ]
    header_closed = idle[1] + trickle[1]
    if header_closed and all(14 <= t <= 16.5 for t in header_closed):
        lines.append(("note", "aiohttp has no time-out for slow request headers as such; the sockets above were "
                              "closed by aiohttp's keep-alive timer (run.py: keepalive_timeout=15 s), which aiohttp "
                              f"{aiohttp.__version__} arms when a connection opens and which trickled bytes do not "
                              "reset. A body that never finishes is not cut. The nginx sample in deploy/ closes "
                              "both after 10 s (client_header_timeout, client_body_timeout), as "
                              "tests/gateway/test_reverse_proxy.py proves with real nginx"))
    else:
        lines.append(("note", "aiohttp has no time-out for slow request headers; the nginx sample in deploy/ closes "
                              "such sockets (client_header_timeout), as tests/gateway/test_reverse_proxy.py "
                              "proves with real nginx"))
    return lines


# -- 7. absurd input ------------------------------------------------------------------------------

CALLBACK_TEMPLATE = ('{"Body":{"stkCallback":{"MerchantRequestID":"probe-absurd-%(tag)s",'
                     '"CheckoutRequestID":"ws_CO_PROBE_ABSURD_%(tag)s","ResultCode":0,'
                     '"ResultDesc":"The service request is processed successfully.","CallbackMetadata":{"Item":['
                     '{"Name":"Amount","Value":%(amount)s},{"Name":"MpesaReceiptNumber","Value":"PRB%(tag)s"},'
                     '{"Name":"TransactionDate","Value":20261126092046},{"Name":"PhoneNumber","Value":254712000999}'
                     ']}}}}')


async def probe_absurd_input(main: Server) -> None:
    section("7. Absurd input")
    cases = [("STRNAN", '"nan"'), ("STRINF", '"inf"'), ("E300", "1e300"), ("TWO63", "9223372036854775808"),
             ("LITNAN", "NaN"), ("CONTROL", "1")]
    url = f"{main.base}/mpesa/callback"
    results = {}
    async with client(JUNK) as session:
        for tag, amount in cases:
            raw = CALLBACK_TEMPLATE % {"tag": tag, "amount": amount}
            results[tag] = (amount, len(raw.encode()), *(await post_raw(session, url, raw, "absurd callback")))
        with main.db() as db:
            for tag, (amount, size, status, answer) in results.items():
                rows = db.execute("SELECT outcome, length(CAST(body AS BLOB)), note FROM callback_log "
                                  "WHERE instr(body, ?) > 0", (f"PROBE_ABSURD_{tag}",)).fetchall()
                desc = answer.get("ResultDesc") if isinstance(answer, dict) else str(answer)[:60]
                kept = "; ".join(f"kept: {o}, {b} of {size} bytes" + (f" ({note})" if note else "")
                                 for o, b, note in rows) or "NOT kept"
                label = "Amount 1 (a normal value, for comparison)" if tag == "CONTROL" else f"Amount {amount}"
                say(f"callback for an unknown id, {label}", f"{status} {desc!r}; {kept}")
        for label, raw in (("a 5,000-digit amount string", json.dumps({"phone": "0712000200", "amount": "9" * 5000})),
                           ("a 5,000-digit bare JSON number", '{"phone": "0712000200", "amount": ' + "9" * 5000 + "}")):
            status, answer = await post_raw(session, f"{main.base}/stkpush", raw, "absurd push")
            message = answer.get("message") if isinstance(answer, dict) else str(answer)[:60]
            say(f"POST /stkpush with {label}", f"{status} ({message})")


# -- 8. storage of junk ---------------------------------------------------------------------------


async def probe_junk(main: Server) -> None:
    section("8. Storage of junk callbacks (callback_log bodies capped at 8 KiB)")
    url = f"{main.base}/mpesa/callback"
    desc = "x" * 60_000
    bodies = [json.dumps({"Body": {"stkCallback": {
        "MerchantRequestID": f"probe-junk-{i}", "CheckoutRequestID": f"ws_CO_PROBE_JUNK_{i:04d}",
        "ResultCode": 1032, "ResultDesc": desc}}}) for i in range(300)]
    sent = sum(len(b.encode()) for b in bodies)
    statuses: list[int] = []
    async with client(JUNK, limit=50) as session:
        async def one(body: str) -> None:
            async with session.post(url, data=body, headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                statuses.append(resp.status)
                record_5xx("junk callback", resp.status)

        started = time.perf_counter()
        await asyncio.gather(*(one(b) for b in bodies))
        elapsed = time.perf_counter() - started
    with main.db() as db:
        rows, total, biggest = db.execute(
            "SELECT count(*), coalesce(sum(length(CAST(body AS BLOB))), 0), "
            "coalesce(max(length(CAST(body AS BLOB))), 0) FROM callback_log "
            "WHERE instr(body, 'ws_CO_PROBE_JUNK_') > 0").fetchone()
        outcomes = Counter(o for (o,) in db.execute(
            "SELECT outcome FROM callback_log WHERE instr(body, 'ws_CO_PROBE_JUNK_') > 0"))
        all_rows, all_total = db.execute(
            "SELECT count(*), coalesce(sum(length(CAST(body AS BLOB))), 0) FROM callback_log").fetchone()
    say(f"300 callbacks for unknown ids, each with a 60,000-character ResultDesc ({n(sent)} bytes sent), 50 at a time",
        f"{counts(statuses)}; {elapsed:.2f} s ({300 / elapsed:,.0f}/s)")
    say("callback_log afterwards", f"{n(rows)} rows ({', '.join(f'{o}: {c}' for o, c in outcomes.items())}), "
        f"{n(total)} bytes of body in all, the biggest {n(biggest)} bytes "
        f"(300 × 8 KiB = {n(300 * 8192)}); whole table {n(all_rows)} rows, {n(all_total)} bytes")


# -- 9. start-up refusals -------------------------------------------------------------------------


async def run_refusal(label: str, settings: dict[str, str], tmp: str) -> str:
    port = settings.get("PORT") or str(free_port())
    env = clean_env(**{"PORT": port, "DATABASE_URL": f"sqlite:///{tmp}/{abs(hash(label))}.sqlite3", **settings})
    proc = await asyncio.create_subprocess_exec(sys.executable, "run.py", cwd=ROOT, env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), 15)
    except TimeoutError:
        proc.terminate()
        await proc.wait()
        return "did NOT exit within 15 s (it started: no refusal)"
    lines = [line for line in err.decode(errors="replace").splitlines() if line.strip()]
    shown = next((line for line in lines if line.startswith("Configuration error")), lines[-1] if lines else "")
    return f"exit {proc.returncode}, {len(lines)} line(s) on stderr: {shown}"


async def probe_startup(tmp: str) -> None:
    section("9. Start-up refusals of unsafe settings")
    production = {"MPESA_ENV": "production", "MPESA_CONSUMER_KEY": "k", "MPESA_CONSUMER_SECRET": "s",
                  "MPESA_BUSINESS_SHORTCODE": "600000"}
    collide_port = str(free_port())
    cases = [
        ("RECONCILE_INTERVAL_SECONDS=0", {"RECONCILE_INTERVAL_SECONDS": "0"}),
        (f"CALLBACK_URL=http://127.0.0.1:{collide_port}/stkpush",
         {"PORT": collide_port, "CALLBACK_URL": f"http://127.0.0.1:{collide_port}/stkpush"}),
        ("production with Safaricom's sandbox MPESA_PASSKEY (CALLBACK_URL=https://shop.example.com/mpesa/callback/abc)",
         {**production, "MPESA_PASSKEY": SANDBOX_PASSKEY,
          "CALLBACK_URL": "https://shop.example.com/mpesa/callback/abc"}),
        ("production with CALLBACK_URL=https://shop.example.com/ (own passkey)",
         {**production, "MPESA_PASSKEY": "probe-own-passkey-not-the-sandbox-one",
          "CALLBACK_URL": "https://shop.example.com/"}),
    ]
    results = await asyncio.gather(*(run_refusal(label, settings, tmp) for label, settings in cases))
    for (label, _), result in zip(cases, results, strict=True):
        say(f"python run.py with {label}", result)

    port = free_port()
    env = clean_env(PORT=str(port), DATABASE_URL=f"sqlite:///{tmp}/banner.sqlite3",
                    CALLBACK_URL=f"http://127.0.0.1:{port}/hooks/s3cr3t-path")
    proc = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        ready = False
        deadline = time.monotonic() + SERVER_START_SECONDS
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=1)) as session:
            while time.monotonic() < deadline and proc.poll() is None:
                try:
                    async with session.get(f"http://127.0.0.1:{port}/health") as resp:
                        if resp.status == 200:
                            ready = True
                            break
                except (TimeoutError, aiohttp.ClientError):
                    pass
                await asyncio.sleep(0.1)
            if ready:  # the callback path works although the banner hides it
                async with session.post(f"http://127.0.0.1:{port}/hooks/s3cr3t-path", data="{}",
                                        headers={"Content-Type": "application/json"}) as resp:
                    served = resp.status
    finally:
        proc.terminate()
        try:
            out, err = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate(timeout=5)
    banner = out.decode(errors="replace")
    callback_line = next((line for line in banner.splitlines() if line.startswith("Callback:")), "(no Callback line)")
    say("python run.py with CALLBACK_URL=http://127.0.0.1:PORT/hooks/s3cr3t-path: the banner on stdout",
        f"{'started' if ready else 'did NOT start'}; {len(banner.splitlines())} lines, contains \"s3cr3t\": "
        f"{'YES' if 's3cr3t' in banner else 'no'} ({callback_line}); stderr log contains it: "
        f"{'YES' if b's3cr3t' in err else 'no'}"
        + (f"; POST {{}} to the hidden path: {served} (it is served there)" if ready else ""))


# -- 10. back-off arithmetic ----------------------------------------------------------------------


def probe_backoff() -> None:
    section("10. The reconciler's back-off for absurd attempt counts (in-process)")
    sys.path.insert(0, str(ROOT))
    from gateway.config import Settings
    from gateway.payments import PaymentService
    from gateway.storage import Transaction

    service = PaymentService(store=None, daraja=None, settings=Settings())  # type: ignore[arg-type]
    tx = Transaction(checkout_request_id="ws_CO_PROBE_BACKOFF", merchant_request_id="probe", phone="254712345678",
                     amount=1, account_reference="Payment", description="Payment")
    now = time.time()
    for attempts in (1, 1025, 10**6):
        try:
            result = f"{service._backoff(tx, attempts, now)!r} s"
        except Exception as exc:  # noqa: BLE001 - the figure is whether it raises
            result = f"RAISED {type(exc).__name__}: {exc}"
        say(f"_backoff(pending tx created now, {attempts:,}, now)", result)


# -- the run --------------------------------------------------------------------------------------


def check_loopback_aliases() -> None:
    for address in (CUSTOMER, MANY_PHONES, CROSS_SITE, STREAMER, SLOWLORIS, JUNK, ONE_AT_A_TIME, ALL_AT_ONCE,
                    ABRUPT):
        with socket.socket() as sock:
            try:
                sock.bind((address, 0))
            except OSError:
                sys.exit(f"cannot send from {address}: this probe needs the 127.0.0.0/8 loopback addresses "
                         "(Linux has them; on macOS: sudo ifconfig lo0 alias 127.0.0.N for N = 2…10)")


async def run(slow: bool, servers: dict[str, Server], tmp: str) -> None:
    for server in servers.values():
        server.start()
    await asyncio.gather(*(s.wait_ready() for s in servers.values()))
    main, unlocked, short = servers["main"], servers["unlocked"], servers["short"]
    print(f"servers (python run.py, simulator mode, fresh SQLite each): main :{main.port} (default limits; "
          f"SIMULATOR_PROMPT_LIFETIME_SECONDS=600 so the real payment stays pending), "
          f":{unlocked.port} (SIMULATOR_LOCK_SUBSCRIBER=false), "
          f":{short.port} (DARAJA_TIMEOUT_SECONDS=0.5, SIMULATOR_LOCK_SUBSCRIBER=false)", flush=True)
    real = await probe_enumeration(main)
    await probe_prompt_bombing(unlocked, short)
    await probe_many_phones(main)
    await probe_cross_site(main)
    closed = await probe_streams(main, real)
    # Both of these only wait: the slow sockets are held while the stream slots are watched.
    held_sockets = asyncio.create_task(slow_sockets(main)) if slow else None
    say(*await stream_slot_freed(main, real, closed))
    say(*await abrupt_streams(main, real))
    section("6. Slow request headers, straight at the gateway (slowloris)")
    if held_sockets is None:
        say("200 sockets holding a partial request line for 30 s", "skipped (takes 30 s; run with --slow-sockets)")
    else:
        for line in await held_sockets:
            say(*line)
    await probe_absurd_input(main)
    await probe_junk(main)
    await probe_startup(tmp)
    probe_backoff()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slow-sockets", action="store_true",
                        help="also hold 200 sockets with a partial request line for 30 s (probe 6)")
    args = parser.parse_args()
    check_loopback_aliases()
    started = time.perf_counter()
    servers = {
        "main": Server("main", {"SIMULATOR_PROMPT_LIFETIME_SECONDS": "600"}),
        "unlocked": Server("unlocked", {"SIMULATOR_LOCK_SUBSCRIBER": "false"}),
        "short": Server("short-timeout", {"DARAJA_TIMEOUT_SECONDS": "0.5", "SIMULATOR_LOCK_SUBSCRIBER": "false"}),
    }
    try:
        with tempfile.TemporaryDirectory() as tmp:
            asyncio.run(asyncio.wait_for(run(args.slow_sockets, servers, tmp), RUN_DEADLINE_SECONDS))
    finally:
        for server in servers.values():
            server.stop()
    section("Summary")
    expected = sum(1 for what, status in FIVE_XX if what == "lost-answer push" and status == 504)
    unexpected = [(what, status) for what, status in FIVE_XX if not (what == "lost-answer push" and status == 504)]
    say("5xx answers received", f"{len(FIVE_XX)} ({expected} expected 504s of lost answers in probe 2"
        + (f"; UNEXPECTED: {dict(Counter(unexpected))}" if unexpected else "; no other") + ")")
    for server in servers.values():
        tracebacks, errors, distinct = server.log_findings()
        provoked = sum(EXPECTED_TRACEBACKS) if server is servers["main"] else 0
        say(f"{server.name} server's log", f"{tracebacks} tracebacks"
            + (f" ({provoked} provoked in probe 5)" if provoked else "") + f", {errors} ERROR lines"
            + (": " + " | ".join(distinct[:4]) if distinct else ""))
        server.tmp.cleanup()
    print(f"\ntotal {time.perf_counter() - started:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
