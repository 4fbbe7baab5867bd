"""Many open checkouts against one gateway process: each polls its payment's status every 3 s, and a
share of them also follow it on live updates (server-sent events), for a minute.

    .venv/bin/python bench/open_checkouts.py                       # 10,000 checkouts, 20 % live, 60 s
    .venv/bin/python bench/open_checkouts.py --checkouts 2000 --seconds 20 --live-share 0.5
    .venv/bin/python bench/open_checkouts.py --live-without-polls  # live checkouts do not poll
    .venv/bin/python bench/open_checkouts.py --profile             # py-spy samples the gateway meanwhile
    .venv/bin/python bench/open_checkouts.py --ramp 30             # opened over 30 s, then the minute
    .venv/bin/python bench/open_checkouts.py --direct              # browsers straight at the gateway, no proxy
    .venv/bin/python bench/open_checkouts.py --generator-loop asyncio  # the generators without uvloop
    .venv/bin/python bench/open_checkouts.py --ramp 30 --bare      # the same load on a bare aiohttp app

What a browser's open checkout sends (web/static/js/payment.js): after its push, the pay page opens
an EventSource on GET /stkpush/{checkoutRequestId}/events?paymentToken=… and, alongside it (not only
when the stream fails), POSTs {"checkoutRequestId", "paymentToken"} to /stkpush/status every
pollIntervalMs (3 s), each poll sent 3 s after the previous answer. Here every checkout has its own
keep-alive connection for its polls (and another for its stream), as 10,000 browsers would, and
its own client address (X-Forwarded-For from a trusted proxy, TRUSTED_PROXIES=127.0.0.1/32, as
behind nginx; with --direct, its sockets' own source address on the loopback network, 127.10.x.y,
and no proxy headers, as browsers talking to the gateway itself): every per-client limit stays at
its default.

Set-up, before the measured minute:
  - a standalone simulator (`run.py simulator`) whose customers never answer
    (SIMULATOR_AUTO_ANSWER_SECONDS and SIMULATOR_PROMPT_LIFETIME_SECONDS 3600; numbers outside the
    catalogue): no callback comes, so every payment stays pending;
  - the gateway (`run.py`, simulator mode, MPESA_BASE_URL pointing at that simulator, a fresh SQLite
    file) with its defaults but for STREAM_LIMIT_TOTAL (raised to the number of live checkouts plus
    10 %: the default 1,000 is sized for a smaller shop) and TRUSTED_PROXIES. The reconciler runs
    as in production: from 20 s after each push it sends STK queries (at most 50 a second), which
    the simulator answers "still being processed"; PAYMENT_TIMEOUT_SECONDS (300) is longer than the
    pushes plus the minute, so no payment is given up while measured;
  - the payments are created by real pushes (POST /stkpush, one distinct phone and client address
    each), or with --seed inserted directly into the database (the rows a push writes, their first
    STK query an hour away, so the reconciler leaves them alone).

The minute: the checkouts are split over --generators processes; checkout i polls at t0 + offset_i +
3k (offsets spread uniformly over 3 s). A poll due while the previous one is still unanswered is
sent when that answer comes, and its latency still counts from when it was due (response time minus
intended send time: no coordinated omission); polls still waiting to be sent when the minute is over
count as errors ("still due at the end"). Live checkouts open their stream at t0 + offset_i and
keep it to the end; every checkout keeps its connections open 7 s more (HOLD_AFTER), until each
poll due in the minute has been answered or has timed out, so that none is measured while the
gateway closes them all at once. With --ramp R, checkout i opens (first poll, stream) at
t0 - R + R*i/N instead: the checkouts arrive one after another over the R seconds before the
minute, as customers reach the pay page, not all within its first 3 s; the polls due during the
ramp are reported apart and the minute (every checkout open) is what the target is judged on.
(With a ramp of more than about 90 s, the streams opened first reach the end of the page's
window, 150 s, before the checkouts close: the gateway ends them, as the page would stop
listening, and they count as dropped.)
Prints polls sent against intended and the rate, p50/p99/max latency, errors
(non-2xx, connection errors, polls unanswered after 6 s, when the page gives up on them, wrong
bodies), each generator's own stalls (its event loop waking a 10-ms timer more than 20 ms late) by
10-s slice, streams opened/refused/dropped and the time to their first event, the CPU seconds of the
gateway, the simulator and the generators, the gateway's resident memory (and its peak) at the end of
the minute, and whether the target (0 errors, p99 under 100 ms) is
met; with --profile, where the gateway spends its time (py-spy, sampling the gateway process, top
functions by own and by total samples).
The generators share the machine's CPUs with the gateway (on two CPUs, 70-80 % of one), so the
cheaper they are, the less they take from it: they run on uvloop, installed once with pip under
~/.cache/mpesa-bench for this interpreter (only theirs: the gateway runs as `python run.py` always
does), which took about 30 % less of their CPU time than asyncio's own loop for the same polls
(--generator-loop asyncio: as before; also the fallback when uvloop cannot be installed).
With --bare, the same checkouts, the same minute and the same figures, but against
bench/bare_checkouts.py instead of the gateway: a bare aiohttp app, served as the gateway is
(keep-alive time, garbage collector), that answers every poll and opens every stream with the
gateway's bodies for a pending payment and does nothing else (no simulator, no pushes: the ids are
made up). It is the floor under the target on this machine: what aiohttp alone needs for that load,
measured the same way. Run it alternately with the gateway (the machine's minutes move the figures
more than anything else): the gateway's p99 and CPU against the bare app's is what the gateway's
own work costs at that load.
Loopback only; stops everything it started, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import multiprocessing
import os
import re
import resource
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from array import array
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench._common import (  # noqa: E402
    BENCH_CACHE,
    ROOT,
    clean_env,
    cpu_seconds,
    free_port,
    install_once,
    memory_mb,
    migrate,
    payments,
    python_of,
    seed_sqlite,
    start_process,
    stop,
    wait_up,
)

POLL_TIMEOUT = 6.0  # a poll unanswered this long is an error: the page aborts it then (2 × 3 s, at least 5 s)
# Every connection, poll or stream, stays open this long after the minute: by then each poll due in it
# has been answered or has timed out, so no measured poll waits behind the gateway closing 12,000
# connections at once (2,000 streams closed together held the last second's polls for ~0.6 s).
HOLD_AFTER = POLL_TIMEOUT + 1.0
LAG_TICK, LAG_REPORTED = 0.01, 0.02  # s: how often each generator checks its own loop, and what counts as late
STREAM_OPEN_TIMEOUT = 10.0  # a stream whose first event takes longer counts as failed
LEVELS = ("WARNING", "ERROR", "CRITICAL")
FIRST_PHONE = 254_711_000_000  # 2547110…: clear of the simulator's catalogue (2547000000xx)
UVLOOP = "uvloop==0.23.0"  # the load generators' event loop (--generator-loop), never the gateway's
USER_AGENT = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36"


def client_address(i: int) -> str:
    return f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}"


def loopback_address(i: int) -> str:
    """Checkout i's own address on the loopback network (127.0.0.0/8: every one of them is this
    machine's, no set-up needed), for --direct."""
    x, y = divmod(i, 250)
    return f"127.{10 + x // 250}.{x % 250 + 1}.{y + 1}"


@dataclass(frozen=True)
class Checkout:
    index: int
    checkout_request_id: str
    token: str
    live: bool
    polls: bool
    direct: bool = False  # its own loopback address and no proxy (--direct), else behind the trusted proxy

    def connect(self, port: int) -> Any:
        return asyncio.open_connection("127.0.0.1", port,
                                       local_addr=(loopback_address(self.index), 0) if self.direct else None)

    def page_headers(self, host: str) -> str:
        """What the browser's page adds (its origin), and the proxy's headers unless --direct."""
        if self.direct:
            return f"Referer: http://{host}/pay.html\r\n"
        return (f"Referer: https://{host}/pay.html\r\nX-Forwarded-For: {client_address(self.index)}\r\n"
                "X-Forwarded-Proto: https\r\n")


@dataclass
class Tally:
    """What one generator process saw."""

    latencies: array[float] = field(default_factory=lambda: array("d"))  # ms, polls answered 200
    due_at: array[float] = field(default_factory=lambda: array("d"))  # s after t0 each of those was due
    intended: int = 0  # polls due within the minute
    sent: int = 0
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    connects: int = 0
    streams_opened: int = 0
    streams_refused: collections.Counter[str] = field(default_factory=collections.Counter)
    streams_dropped: int = 0
    first_event_ms: array[float] = field(default_factory=lambda: array("d"))
    stream_events: int = 0
    cpu_seconds: float = 0.0
    # With --ramp: the polls due while the checkouts were still opening, before the minute.
    ramp_latencies: array[float] = field(default_factory=lambda: array("d"))
    ramp_intended: int = 0
    ramp_errors: collections.Counter[str] = field(default_factory=collections.Counter)
    # The generator's own event loop: (s after t0, ms late) of each wake-up of a LAG_TICK timer that
    # came more than LAG_REPORTED late. A poll due while its generator was stalled is counted late
    # too (latency runs from the intended send time), so a stall here is not the server's.
    lags: list[tuple[float, float]] = field(default_factory=list)

    def answered(self, due: float, latency_ms: float) -> None:
        """A poll due `due` s after the minute's start answered 200 pending (before it: the ramp's)."""
        if due >= 0:
            self.latencies.append(latency_ms)
            self.due_at.append(due)
        else:
            self.ramp_latencies.append(latency_ms)


# -- the load generator (one process: a share of the checkouts) ---------------------------------


def request_bytes(host: str, checkout: Checkout) -> bytes:
    body = json.dumps({"checkoutRequestId": checkout.checkout_request_id, "paymentToken": checkout.token},
                      separators=(",", ":")).encode()
    scheme = "http" if checkout.direct else "https"
    head = (f"POST /stkpush/status HTTP/1.1\r\nHost: {host}\r\nConnection: keep-alive\r\n"
            f"Content-Length: {len(body)}\r\nUser-Agent: {USER_AGENT}\r\nContent-Type: application/json\r\n"
            f"Accept: application/json\r\nOrigin: {scheme}://{host}\r\n{checkout.page_headers(host)}"
            f"Accept-Encoding: gzip, deflate, br\r\nAccept-Language: en-GB,en;q=0.9\r\n"
            f"Cache-Control: no-cache\r\nPragma: no-cache\r\n\r\n")
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> tuple[int, bytes, bool]:
    """(status, body, whether the server keeps the connection open)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, body, headers.get("connection", "").lower() != "close"


async def poller(checkout: Checkout, host: str, port: int, t0: float, end: float, offset: float,
                 interval: float, tally: Tally) -> None:
    loop = asyncio.get_running_loop()
    request = request_bytes(host, checkout)
    expected = f'"{checkout.checkout_request_id}"'.encode()
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    k = 0
    try:
        while (intended := t0 + offset + k * interval) < end:
            k += 1
            measured = intended >= t0  # else due during the ramp, before the minute
            errors = tally.errors if measured else tally.ramp_errors
            tally.intended += measured
            tally.ramp_intended += not measured
            delay = intended - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif loop.time() >= end:  # a backlog left when the minute is over: due, never answered
                errors["still due at the end"] += 1
                continue
            tally.sent += measured
            try:
                async with asyncio.timeout(POLL_TIMEOUT):
                    if writer is None or reader is None:
                        reader, writer = await checkout.connect(port)
                        tally.connects += 1
                    writer.write(request)
                    status, body, keep = await read_response(reader)
            except TimeoutError:
                errors["time-out"] += 1
                status, body, keep = 0, b"", False
            except (OSError, asyncio.IncompleteReadError, ValueError, IndexError) as exc:
                errors[f"connection: {type(exc).__name__}"] += 1
                status, body, keep = 0, b"", False
            if status == 200 and b'"pending"' in body and expected in body:
                tally.answered(intended - t0, (loop.time() - intended) * 1000)
            elif status:
                errors[f"HTTP {status}" if status != 200 else "unexpected body"] += 1
            if not keep and writer is not None:
                writer.close()
                reader = writer = None
        await asyncio.sleep(max(0.0, end + HOLD_AFTER - loop.time()))  # the checkout stays open
    finally:
        if writer is not None:
            writer.close()


def complete_event(seen: bytes) -> bool:
    """Whether `seen` holds a whole `status` event (its data line and the blank line after it)."""
    _, found, rest = seen.partition(b"event: status")
    return bool(found) and b"data:" in rest and (b"\r\n\r\n" in rest or b"\n\n" in rest)


async def follower(checkout: Checkout, host: str, port: int, t0: float, end: float, offset: float,
                   tally: Tally) -> None:
    """An EventSource: open at t0 + offset, read events until `end` + HOLD_AFTER; a stream that ends
    before is dropped."""
    loop = asyncio.get_running_loop()
    await asyncio.sleep(max(0.0, t0 + offset - loop.time()))
    opened_at = loop.time()
    path = f"/stkpush/{checkout.checkout_request_id}/events?paymentToken={checkout.token}"
    request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n"
               f"User-Agent: {USER_AGENT}\r\n{checkout.page_headers(host)}Accept-Language: en-GB,en;q=0.9\r\n"
               "\r\n").encode()
    writer: asyncio.StreamWriter | None = None
    try:
        async with asyncio.timeout(STREAM_OPEN_TIMEOUT):
            reader, writer = await checkout.connect(port)
            writer.write(request)
            head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
            status = int(head.split(" ", 2)[1])
            if status != 200 or "text/event-stream" not in head.lower():
                tally.streams_refused[f"HTTP {status}"] += 1
                return
            tally.streams_opened += 1
            seen = b""
            while not complete_event(seen):
                chunk = await reader.read(65536)
                if not chunk:
                    raise asyncio.IncompleteReadError(seen, None)
                seen += chunk
            tally.first_event_ms.append((loop.time() - opened_at) * 1000)
            tally.stream_events += 1
    except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError,
            IndexError) as exc:
        tally.streams_refused[type(exc).__name__] += 1
        if writer is not None:
            writer.close()
        return
    try:
        async with asyncio.timeout(max(0.0, end + HOLD_AFTER - loop.time())):
            while True:
                chunk = await reader.read(65536)  # chunked SSE frames: events and pings
                if not chunk:
                    tally.streams_dropped += 1
                    return
                tally.stream_events += chunk.count(b"event: status")
    except TimeoutError:
        pass  # held to the end
    except OSError:
        tally.streams_dropped += 1
    finally:
        writer.close()


async def generate(checkouts: list[Checkout], port: int, t0_wall: float, seconds: float,
                   interval: float, offsets: list[float]) -> Tally:
    loop = asyncio.get_running_loop()
    t0 = loop.time() + (t0_wall - time.time())
    end = t0 + seconds
    tally = Tally()
    host = f"127.0.0.1:{port}"
    tasks = []
    for checkout, offset in zip(checkouts, offsets, strict=True):
        if checkout.polls:
            tasks.append(poller(checkout, host, port, t0, end, offset, interval, tally))
        if checkout.live:
            tasks.append(follower(checkout, host, port, t0, end, offset, tally))
    watch = asyncio.ensure_future(watch_own_loop(t0, tally))
    try:
        await asyncio.gather(*tasks)
    finally:
        watch.cancel()
    return tally


async def watch_own_loop(t0: float, tally: Tally) -> None:
    """Note each time this generator's own loop wakes a LAG_TICK timer more than LAG_REPORTED late."""
    loop = asyncio.get_running_loop()
    while True:
        before = loop.time()
        await asyncio.sleep(LAG_TICK)
        late = loop.time() - before - LAG_TICK
        if late > LAG_REPORTED:
            tally.lags.append((before - t0, late * 1000))


def generator_main(checkouts: list[Checkout], offsets: list[float], port: int, t0_wall: float, seconds: float,
                   interval: float, loop: str, out: Any) -> None:
    raise_fd_limit()
    started = time.process_time()
    minute = generate(checkouts, port, t0_wall, seconds, interval, offsets)
    if loop == "uvloop":
        # From the benchmark's own cache (uvloop_path), put on sys.path before the fork.
        import uvloop  # type: ignore[import-not-found]  # noqa: PLC0415
        tally = uvloop.run(minute)
    else:
        tally = asyncio.run(minute)
    tally.cpu_seconds = time.process_time() - started
    out.put(tally)


def uvloop_path() -> Path | None:
    """A directory holding uvloop for this interpreter, installed there once with pip (it is only the
    load generators' event loop, never a dependency of the project); None if pip cannot install it."""
    target = BENCH_CACHE / f"{UVLOOP.replace('==', '-')}-py{sys.version_info.major}{sys.version_info.minor}"
    installed = install_once(target, UVLOOP, [[sys.executable, "-m", "pip", "install", "-q", "--target",
                                               str(target), UVLOOP]])
    return target if installed else None


def generator_loop(wanted: str) -> str:
    """The generators' event loop: uvloop put on sys.path (the generators are forked) if wanted and to be had."""
    if wanted == "uvloop":
        if (found := uvloop_path()) is not None:
            sys.path.insert(0, str(found))
            return "uvloop"
        print(f"could not install {UVLOOP}: the generators run on asyncio's own loop", file=sys.stderr)
    return "asyncio"


def raise_fd_limit() -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- set-up ---------------------------------------------------------------------------------------


async def push_all(base: str, count: int, concurrency: int) -> list[tuple[str, str]]:
    """Real pushes: one distinct phone and client address each. Returns (checkoutRequestId, paymentToken)."""
    import aiohttp

    found: list[tuple[str, str] | None] = [None] * count
    queue = iter(range(count))
    problems: collections.Counter[str] = collections.Counter()

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in queue:
            phone = str(FIRST_PHONE + i)
            async with session.post(f"{base}/stkpush", json={"phone": phone, "amount": 10 + i % 990},
                                    headers={"X-Forwarded-For": client_address(i)}) as answer:
                data = await answer.json()
                if answer.status == 200 and data.get("success"):
                    found[i] = (data["checkoutRequestId"], data["paymentToken"])
                else:
                    problems[f"{answer.status} {data.get('message')}"] += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    if problems:
        raise SystemExit(f"pushes refused: {dict(problems)}")
    return [f for f in found if f is not None]


def pending_count(database: Path) -> dict[str, int]:
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        return dict(db.execute("SELECT status, COUNT(*) FROM transactions GROUP BY status").fetchall())
    finally:
        db.close()


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    return values[min(len(values) - 1, int(len(values) * p / 100))]


def profile_summary(raw: Path, top: int = 18) -> str:
    """py-spy's collapsed stacks (--format raw) as the functions with the most own and total samples."""
    own: collections.Counter[str] = collections.Counter()
    total: collections.Counter[str] = collections.Counter()
    samples = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        samples += n
        frames = [re.sub(r":\d+\)$", ")", f.strip()) for f in stack.split(";") if f.strip()]  # per function
        frames = [f for f in frames if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            total[frame] += n
    if not samples:
        return "no samples"
    lines = [f"{samples:,} samples of the gateway process on a CPU (any of its threads; idle time not sampled)",
             "  own samples (where the CPU is):"]
    lines += [f"    {n / samples:6.1%}  {name}" for name, n in own.most_common(top)]
    lines.append("  total samples (the function or anything it calls):")
    lines += [f"    {n / samples:6.1%}  {name}" for name, n in total.most_common(top + 12)]
    return "\n".join(lines)


def report(tallies: list[Tally], args: argparse.Namespace, n_live: int, cpu: dict[str, float],
           states: dict[str, int]) -> bool:
    """Print the minute's figures; whether the target was met."""
    latencies = sorted(x for t in tallies for x in t.latencies)
    errors: collections.Counter[str] = collections.Counter()
    refused: collections.Counter[str] = collections.Counter()
    for t in tallies:
        errors.update(t.errors)
        refused.update(t.streams_refused)
    intended = sum(t.intended for t in tallies)
    sent = sum(t.sent for t in tallies)
    first_events = sorted(x for t in tallies for x in t.first_event_ms)
    p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
    n_errors = sum(errors.values())
    if args.ramp:
        ramp = sorted(x for t in tallies for x in t.ramp_latencies)
        ramp_errors: collections.Counter[str] = collections.Counter()
        for t in tallies:
            ramp_errors.update(t.ramp_errors)
        print(f"the ramp ({args.ramp:g} s before the minute, {args.checkouts / args.ramp:,.0f} checkouts opening a "
              f"second): {sum(t.ramp_intended for t in tallies):,} polls due, {len(ramp):,} answered 200 pending, "
              f"p50 {percentile(ramp, 50):.1f} ms p99 {percentile(ramp, 99):.1f} ms, errors "
              f"{sum(ramp_errors.values()):,}" + (f" ({dict(ramp_errors)})" if ramp_errors else "")
              + " (not counted below)")
    print(f"polls: {intended:,} due, {sent:,} sent, {len(latencies):,} answered 200 pending "
          f"({len(latencies) / args.seconds:,.0f}/s achieved vs {intended / args.seconds:,.0f}/s intended)")
    print(f"latency from the intended send time: p50 {p50:.1f} ms  p99 {p99:.1f} ms  "
          f"p99.9 {percentile(latencies, 99.9):.1f} ms  max {latencies[-1] if latencies else float('nan'):.1f} ms")
    slices: dict[int, list[float]] = collections.defaultdict(list)
    for t in tallies:
        for due, latency in zip(t.due_at, t.latencies, strict=True):
            slices[int(due // 10)].append(latency)
    print("p99 by 10-s slice of the minute (when the polls were due): " + ", ".join(
        f"{slice_label(k, args.seconds)} {percentile(sorted(v), 99):.0f} ms" for k, v in sorted(slices.items())))
    stalls: dict[int, list[float]] = collections.defaultdict(list)
    for t in tallies:
        for at, late_ms in t.lags:
            if at < args.seconds:
                stalls[int(at // 10) if at >= 0 else -1].append(late_ms)
    print("the generators' own loops, by 10-s slice (wake-ups over "
          f"{LAG_REPORTED * 1000:.0f} ms late: count, longest ms): " + ", ".join(
              ("the ramp " if k < 0 else f"{slice_label(k, args.seconds)} ")
              + (f"{len(stalls[k])}, {max(stalls[k]):.0f}" if stalls[k] else "none")
              for k in range(-1 if args.ramp else 0, math.ceil(args.seconds / 10))))
    print(f"errors: {n_errors:,}" + (f" ({dict(errors)})" if errors else "")
          + f"; connections opened for polls: {sum(t.connects for t in tallies):,}")
    print(f"streams: {sum(t.streams_opened for t in tallies):,} opened of {n_live:,}, refused/failed "
          f"{sum(refused.values()):,}" + (f" ({dict(refused)})" if refused else "")
          + f", dropped before the end {sum(t.streams_dropped for t in tallies):,}; first event p50 "
          f"{percentile(first_events, 50):.1f} ms p99 {percentile(first_events, 99):.1f} ms; "
          f"status events {sum(t.stream_events for t in tallies):,}")
    print(f"CPU seconds during the {args.seconds:g} s: gateway {cpu['gateway']:.1f} "
          f"({cpu['gateway'] / args.seconds:.0%} of a core), simulator {cpu['simulator']:.1f}, generators "
          f"{sum(t.cpu_seconds for t in tallies):.1f} ({', '.join(f'{t.cpu_seconds:.1f}' for t in tallies)})")
    print(f"payments after the run: {states}")
    met = n_errors == 0 and p99 < 100 and sum(refused.values()) == 0 \
        and sum(t.streams_dropped for t in tallies) == 0 and len(latencies) >= 0.99 * intended
    print(f"target (0 errors, p99 under 100 ms): {'met' if met else 'NOT met'}")
    return met


# Loaded by the gateway's interpreter only (PYTHONPATH), with --gc-log: one line per collection.
GC_LOGGER = """
import gc, time
_log = open(LOG_PATH, "a", buffering=1)
_started = [0.0, -1]
def _timed(phase, info):
    if phase == "start":
        # The objects the collection walks (young and middle ones; a full one: not counted, too many).
        g = info["generation"]
        _started[1] = sum(len(gc.get_objects(i)) for i in range(g + 1)) if g < 2 else -1
        _started[0] = time.time()
    else:
        _log.write(f"{_started[0]:.4f} {time.time() - _started[0]:.6f} {info['generation']} {info['collected']} "
                   f"{_started[1]}\\n")
gc.callbacks.append(_timed)
"""


def log_collections(work: Path, env: dict[str, str]) -> Path:
    """Have the gateway's interpreter (started with `env`) log its collections; the log's path."""
    (work / "gc").mkdir()
    (work / "gc" / "sitecustomize.py").write_text(GC_LOGGER.replace("LOG_PATH", repr(str(work / "gc.log"))))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(work / "gc"), env.get("PYTHONPATH", "")]))
    return work / "gc.log"


def slice_label(index: int, seconds: float) -> str:
    """The 10-s slice `index` of a measured time of `seconds`, as "20-30 s" (the last one may be
    shorter: "30-35 s")."""
    return f"{index * 10}-{min(index * 10 + 10, seconds):g} s"


def gc_summary(log: Path | None, t0_wall: float, seconds: float) -> str:
    """The gateway's collections during the measured time, by 10-s slice: how many, their total and
    longest pause, by generation ("" without --gc-log)."""
    if log is None:
        return ""
    slices: dict[int, dict[int, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    lines = log.read_text().splitlines() if log.exists() else []
    for line in lines:
        started, took, generation = line.split()[:3]
        at = float(started) - t0_wall
        if 0 <= at < seconds:
            slices[int(at // 10)][int(generation)].append(float(took) * 1000)
    rows = ["garbage collections in the gateway by 10-s slice (generation: count, total ms, longest ms):"]
    for index in range(int((seconds + 9) // 10)):
        parts = [f"g{g} {len(t)} {sum(t):.0f} {max(t):.0f}" for g, t in sorted(slices[index].items())]
        rows.append(f"  {slice_label(index, seconds)}: {'; '.join(parts) or 'none'}")
    longest = sorted((line.split() for line in lines if 0 <= float(line.split()[0]) - t0_wall < seconds),
                     key=lambda f: -float(f[1]))[:3]
    if longest:
        rows.append("  longest: " + "; ".join(
            f"at {float(at) - t0_wall:.1f} s g{g} {float(took) * 1000:.0f} ms, {int(walked):,} objects walked, "
            f"{int(freed):,} freed" for at, took, g, freed, walked in longest))
    return "\n".join(rows) + "\n"


# (the server, the simulator if any, the server's port, its collections' log, (id, token) of each
# payment, the seconds they took to make)
Started = tuple[subprocess.Popen[bytes], subprocess.Popen[bytes] | None, int, Path | None, list[tuple[str, str]], float]


def start_gateway(args: argparse.Namespace, work: Path, database: Path, procs: list[subprocess.Popen[bytes]],
                  n_live: int) -> Started:
    """The standalone simulator and the gateway (each added to `procs`), and the pending payments:
    (gateway, simulator, the gateway's port, its collections' log, (id, token) of each payment, the
    seconds the payments took to make)."""
    sim_port, port = free_port(), free_port()
    simulator = start_process(
        [python_of(ROOT), str(ROOT / "run.py"), "simulator", "--port", str(sim_port)], work,
        clean_env(HOST="127.0.0.1", MPESA_ENV="simulator", SIMULATOR_AUTO_ANSWER_SECONDS="3600",
                  SIMULATOR_PROMPT_LIFETIME_SECONDS="3600"), work / "simulator.log")
    procs.append(simulator)
    wait_up(f"http://127.0.0.1:{sim_port}/simulator/api/clock", simulator)
    database_url = f"sqlite:///{database}"
    created = time.monotonic()
    seeded: list[tuple[str, str]] = []
    if args.seed:
        migrate(ROOT, database_url, work)
        kept = seed_sqlite(database, payments(args.checkouts, start=time.time() - 30, step=0.002,
                                              status="pending", salt=f"open-{os.getpid()}",
                                              reconcile_after=3600))
        seeded = [(s.checkout_request_id, s.token) for s in kept]
    # Behind the trusted proxy each checkout's address comes in X-Forwarded-For; with --direct from its
    # own socket, and the set-up's pushes (all from 127.0.0.1, not measured) pass no per-client limit.
    how_connected = {"PUSH_LIMIT_PER_CLIENT": "0"} if args.direct else {"TRUSTED_PROXIES": "127.0.0.1/32"}
    env = clean_env(HOST="127.0.0.1", PORT=str(port), MPESA_ENV="simulator",
                    MPESA_BASE_URL=f"http://127.0.0.1:{sim_port}", DATABASE_URL=database_url,
                    STREAM_LIMIT_TOTAL=str(max(1000, n_live + n_live // 10)), **how_connected)
    env.update(setting.split("=", 1) for setting in args.set)
    gc_log = log_collections(work, env) if args.gc_log else None
    gateway = start_process([python_of(ROOT), str(ROOT / "run.py")], work, env, work / "gateway.log")
    procs.append(gateway)
    base = f"http://127.0.0.1:{port}"
    wait_up(f"{base}/health", gateway)
    if not args.seed:
        seeded = asyncio.run(push_all(base, args.checkouts, args.push_concurrency))
    return gateway, simulator, port, gc_log, seeded, time.monotonic() - created


def start_bare(args: argparse.Namespace, work: Path, database: Path, procs: list[subprocess.Popen[bytes]],
               n_live: int) -> Started:
    """bench/bare_checkouts.py in the gateway's place (added to `procs`), and made-up payments, as
    start_gateway's; no simulator."""
    port = free_port()
    env = clean_env(HOST="127.0.0.1")
    gc_log = log_collections(work, env) if args.gc_log else None
    bare = start_process([python_of(ROOT), str(ROOT / "bench" / "bare_checkouts.py"), "--port", str(port)], work,
                         env, work / "gateway.log")
    procs.append(bare)
    wait_up(f"http://127.0.0.1:{port}/health", bare)
    # The gateway's shapes: ws_CO_, 17 digits of time, 12 of phone; a 43-character token.
    seeded = [(f"ws_CO_04122026000000000{FIRST_PHONE + i}", f"{i:043d}") for i in range(args.checkouts)]
    return bare, None, port, gc_log, seeded, 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkouts", type=int, default=10_000)
    parser.add_argument("--live-share", type=float, default=0.2, help="share of checkouts on live updates (SSE)")
    parser.add_argument("--live-without-polls", action="store_true",
                        help="live checkouts only stream (the page polls alongside its stream: default)")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between a checkout's polls")
    parser.add_argument("--direct", action="store_true",
                        help="each checkout connects from its own loopback address, with no proxy in between "
                             "(default: through a trusted proxy, its address in X-Forwarded-For)")
    parser.add_argument("--ramp", type=float, default=0.0,
                        help="open the checkouts one after another over this many seconds before the measured "
                             "minute (0: all within the first poll interval of the minute)")
    parser.add_argument("--generators", type=int, default=3, help="load generator processes")
    parser.add_argument("--generator-loop", choices=("uvloop", "asyncio"), default="uvloop",
                        help="the generators' event loop: uvloop (installed once under ~/.cache/mpesa-bench; "
                             "asyncio if it cannot be) leaves more of the machine to the gateway")
    parser.add_argument("--seed", action="store_true", help="insert the pending payments instead of pushing them")
    parser.add_argument("--push-concurrency", type=int, default=64)
    parser.add_argument("--profile", action="store_true", help="sample the gateway with py-spy during the minute")
    parser.add_argument("--gc-log", action="store_true",
                        help="time the gateway's garbage collections (gc.callbacks) and summarise them by 10-s slice")
    parser.add_argument("--py-spy", default=shutil.which("py-spy") or "/tmp/benchtools/bin/py-spy")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="a setting for the gateway, over the script's (repeatable), e.g. "
                             "RECONCILE_AFTER_SECONDS=3600 to see what the reconciler's STK queries cost")
    parser.add_argument("--bare", action="store_true",
                        help="the same load against bench/bare_checkouts.py, a bare aiohttp app, instead of the "
                             "gateway: the floor under the target on this machine")
    args = parser.parse_args()
    if any("=" not in setting for setting in args.set):
        parser.error("--set takes NAME=VALUE")
    args.generator_loop = generator_loop(args.generator_loop)
    limit = raise_fd_limit()
    n_live = round(args.checkouts * args.live_share)
    sockets = args.checkouts + n_live
    if limit < sockets + 1000:
        print(f"the open-file limit ({limit}) is below the {sockets:,} sockets each side needs", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="open-checkouts-"))
    database = work / "gateway.sqlite3"
    procs: list[subprocess.Popen[bytes]] = []
    profiler: subprocess.Popen[bytes] | None = None
    try:
        start = start_bare if args.bare else start_gateway
        gateway, simulator, port, gc_log, seeded, took = start(args, work, database, procs, n_live)
        how = "made up (--bare)" if args.bare else "inserted" if args.seed else "pushed"
        print(f"{len(seeded):,} pending payments {how} in {took:.1f} s", flush=True)
        live_every = round(1 / args.live_share) if args.live_share > 0 else 0  # every 5th: 20 %
        checkouts = []
        for i, (cid, token) in enumerate(seeded):
            live = bool(live_every) and i % live_every == 0
            checkouts.append(Checkout(i, cid, token, live, polls=not (live and args.live_without_polls),
                                      direct=args.direct))
        n_live = sum(c.live for c in checkouts)
        n_poll = sum(c.polls for c in checkouts)
        # Checkout i opens (first poll, stream) at t0 + offsets[i]: spread over the first poll interval
        # of the minute, or with --ramp over the seconds before it (negative offsets).
        offsets = [args.ramp * (i / len(checkouts) - 1) if args.ramp else args.interval * i / len(checkouts)
                   for i in range(len(checkouts))]
        server = "bare aiohttp" if args.bare else "gateway"
        print(f"{len(checkouts):,} open checkouts for {args.seconds:g} s against one {server} process: {n_poll:,} "
              f"polling every {args.interval:g} s ({n_poll / args.interval:,.0f} polls/s intended), {n_live:,} on "
              f"live updates{' (not polling)' if args.live_without_polls else ' (polling too, as the page does)'}; "
              f"{args.generators} generator processes on {args.generator_loop}; {os.cpu_count()} CPUs shared by all"
              + (f"; opened over {args.ramp:g} s before the minute" if args.ramp else "")
              + ("; each from its own loopback address, no proxy" if args.direct else "; behind a trusted proxy"),
              flush=True)
        # The minute starts at t0_wall; the generators' set-up and any ramp come before it.
        t0_wall = time.time() + 2.0 + 0.0001 * len(checkouts) + args.ramp
        out: Any = multiprocessing.get_context("fork").Queue()
        generators = []
        for g in range(args.generators):
            mine = list(range(g, len(checkouts), args.generators))
            generators.append(multiprocessing.get_context("fork").Process(
                target=generator_main, args=([checkouts[i] for i in mine], [offsets[i] for i in mine], port,
                                             t0_wall, args.seconds, args.interval, args.generator_loop, out),
                daemon=True))
        for p in generators:
            p.start()
        time.sleep(max(0.0, t0_wall - time.time()))
        load_before = os.getloadavg()[0]
        servers = {"gateway": gateway, **({"simulator": simulator} if simulator else {})}
        cpu_before = {name: cpu_seconds(p.pid) for name, p in servers.items()}
        raw_profile = work / "profile.txt"
        if args.profile:
            profiler = subprocess.Popen([args.py_spy, "record", "--pid", str(gateway.pid), "--duration",
                                         str(int(args.seconds)), "--rate", "50", "--format", "raw",
                                         # without it py-spy stops the gateway for every sample
                                         "--nonblocking",
                                         "--output", str(raw_profile)],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        tallies = [out.get(timeout=args.seconds + args.ramp + 60) for _ in generators]
        cpu = {"simulator": 0.0, **{name: cpu_seconds(p.pid) - cpu_before[name] for name, p in servers.items()}}
        resident, peak = memory_mb(gateway.pid)
        for p in generators:
            p.join(10)
        states = {} if args.bare else pending_count(database)
        report(tallies, args, n_live, cpu, states)
        print(f"gateway memory at the end of the minute: {resident:,.0f} MB resident, {peak:,.0f} MB at most")
        levels = collections.Counter(line.split()[2] for line in (work / "gateway.log").read_text(errors="replace")
                                     .splitlines() if len(line.split()) > 2 and line.split()[2] in LEVELS)
        samples = collections.Counter(re.sub(r"ws_CO_\d+|\d+(\.\d+)?", "#", line.split(": ", 1)[-1])
                                      for line in (work / "gateway.log").read_text(errors="replace").splitlines()
                                      if len(line.split()) > 2 and line.split()[2] in LEVELS)
        print(f"gateway log: {dict(levels) or 'no warnings or errors'}"
              + "".join(f"\n  {n:,} x {text[:160]}" for text, n in samples.most_common(3)))
        print(f"load average (1 min) on this machine, all users: {os.getloadavg()[0]:.1f} at the end, "
              f"{load_before:.1f} at the start")
        print(gc_summary(gc_log, t0_wall, args.seconds), end="")
        if profiler is not None:
            profiler.wait(30)
            if raw_profile.exists():
                print(profile_summary(raw_profile))
            else:
                print("py-spy wrote no profile (is ptrace allowed?)")
    finally:
        if profiler is not None and profiler.poll() is None:
            profiler.kill()
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
