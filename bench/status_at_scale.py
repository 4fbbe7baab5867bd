"""Status polls with few and with many stored payments: does p99 grow with the table?

    .venv/bin/python bench/status_at_scale.py            # 1,000 vs 1,000,000 payments, 3 rounds, wrk -c32 -d15s
    .venv/bin/python bench/status_at_scale.py --large 200000 --rounds 5

Builds two SQLite databases with the production schema (`python run.py migrate`), then inserts, in
one transaction each, payments as the gateway leaves them once settled by their callback (85 %
completed, 15 % failed, pushed over the last year): the `transactions` row (token hash, raw callback,
receipt), its `push_attempts` row (accepted) and its `callback_log` row (applied), so every index is
as large as it would be. The large database is built once and kept in --cache-dir (outside the
repository; rebuilt when the schema or the row shape changes) and copied for each run, so that the
gateway's own writes never change the cached copy.

Then it starts one gateway (`python run.py`, simulator mode, lookup limit off) on each database and
polls POST /stkpush/status with wrk, as the pay page does ({"checkoutRequestId", "paymentToken"}),
rotating over --sample payments spread evenly over the table (not one hot row), in alternating
rounds. With --postgresql, the same two sizes on a throw-away PostgreSQL cluster too
(tests/pg_cluster.py, seeded with COPY and analysed, built each run: minutes for 1,000,000). Prints
requests/s, p50 and p99 per database and round, the medians, and the ratio p99(large) / p99(small)
(the target: under 2). wrk runs on the same cores as the gateways. Each round lasts 15 s by default,
so that every round spans one of the gateway's recovery passes (every 15 s), whose reads are timed
at the end on each database. Stops everything it started, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench._common import (  # noqa: E402
    ATTEMPT_COLUMNS,
    CALLBACK_COLUMNS,
    ROOT,
    TX_COLUMNS,
    WrkResult,
    clean_env,
    free_port,
    migrate,
    payments,
    post_script,
    python_of,
    seed_sqlite,
    start_process,
    stop,
    token_of,
    wait_up,
    wrk,
)

YEAR = 365 * 24 * 3600.0
ROW_SHAPE = "2"  # bump when bench/_common.py's rows change: the cached database is rebuilt


def cache_key(count: int) -> str:
    sources = (ROOT / "gateway" / "migrations.py").read_bytes() + ROW_SHAPE.encode()
    return f"payments-{count}-{hashlib.sha256(sources).hexdigest()[:12]}.sqlite3"


def build(path: Path, count: int, work: Path) -> float:
    """A migrated SQLite file at `path` with `count` settled payments; returns seconds taken."""
    started = time.monotonic()
    partial = path.with_suffix(".building")
    for leftover in (partial, Path(f"{partial}-wal"), Path(f"{partial}-shm")):
        leftover.unlink(missing_ok=True)
    migrate(ROOT, f"sqlite:///{partial}", work)
    start = time.time() - YEAR
    seed_sqlite(partial, payments(count, start=start, step=YEAR / count), keep_every=count)
    partial.rename(path)
    return time.monotonic() - started


async def sample(database_url: str, count: int, size: int) -> list[str]:
    """Status bodies for `size` payments spread evenly over the table (rowid: insertion order, on both)."""
    from gateway.storage_pg import open_store

    store = open_store(database_url)
    await store.open()
    try:
        rows = await store.fetch_all("SELECT rowid, checkout_request_id FROM transactions WHERE (rowid - 1) % ? = 0 "
                                     "ORDER BY rowid LIMIT ?", (max(1, count // size), size))
    finally:
        await store.close()
    return [json.dumps({"checkoutRequestId": row[1], "paymentToken": token_of(int(row[0]) - 1)}) for row in rows]


async def build_postgresql(admin_url: str, count: int, work: Path) -> tuple[str, float]:
    """A database on the cluster with `count` settled payments (COPY, one transaction, then ANALYZE)."""
    import asyncpg

    started = time.monotonic()
    name = f"payments_{count}"
    admin = await asyncpg.connect(admin_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    migrate(ROOT, url, work)
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            for _, rows in payments(count, start=time.time() - YEAR, step=YEAR / count):
                await conn.copy_records_to_table("transactions", records=rows.transactions,
                                                 columns=TX_COLUMNS.split(", "))
                await conn.copy_records_to_table("push_attempts", records=rows.attempts,
                                                 columns=ATTEMPT_COLUMNS.split(", "))
                await conn.copy_records_to_table("callback_log", records=rows.callbacks,
                                                 columns=CALLBACK_COLUMNS.split(", "))
        await conn.execute("ANALYZE")
    finally:
        await conn.close()
    return url, time.monotonic() - started


async def periodic_reads(database_url: str) -> dict[str, float]:
    """How long the reads the gateway makes on its own, between polls, take on `database` (ms): the
    recovery pass's (every 15 s; the check of every attempt ever made at start-up and hourly only)
    and the reconciler's (every second). On SQLite they run on the aiosqlite reader's thread; a
    status poll reads on a connection of its own."""
    from gateway.storage_pg import open_store

    store = open_store(database_url)
    await store.open()
    now = time.time()
    newest = await store.last_attempt_id()
    reads: dict[str, Callable[[], Awaitable[object]]] = {
             "recovery: stale_attempts": lambda: store.stale_attempts(now - 60),
             "recovery (start-up, hourly): accepted_attempts_without_payment, every attempt":
                 store.accepted_attempts_without_payment,
             "recovery (every 15 s): accepted_attempts_without_payment, since the previous pass":
                 lambda: store.accepted_attempts_without_payment(newest - 100),
             "recovery: open_callbacks": lambda: store.open_callbacks("9999"),
             "reconciler: due_candidates": lambda: store.due_candidates(now)}
    took = {}
    try:
        for name, read in reads.items():
            await read()  # the pages it needs in the cache, as in the running gateway
            started = time.perf_counter()
            await read()
            took[name] = (time.perf_counter() - started) * 1000
    finally:
        await store.close()
    return took


def start_gateway(database_url: str, work: Path, name: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = clean_env(HOST="127.0.0.1", PORT=str(port), DATABASE_URL=database_url,
                    LOOKUP_LIMIT_PER_CLIENT="0")
    proc = start_process([python_of(ROOT), str(ROOT / "run.py")], work, env, work / f"{name}.log")
    wait_up(f"http://127.0.0.1:{port}/health", proc, timeout=60)
    return proc, f"http://127.0.0.1:{port}/stkpush/status"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", type=int, default=1_000)
    parser.add_argument("--large", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=1_000, help="payments polled in turn (spread over the table)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=15,
                        help="per round; 15 or more: each round then includes a recovery pass (every 15 s)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--postgresql", action="store_true",
                        help="also on a throw-away PostgreSQL cluster (tests/pg_cluster.py), built each run")
    parser.add_argument("--cache-dir", type=Path,
                        default=Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mpesa-gateway-bench")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    args.cache_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="status-scale-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        with contextlib.ExitStack() as stack:
            databases = sqlite_databases(args, work)
            if args.postgresql:
                from tests.pg_cluster import running_cluster

                # fsync off: the build is quicker (210 s for 1,000,000 with it on), the polls only read
                server = stack.enter_context(running_cluster(durable=False))
                for count in (args.small, args.large):
                    url, took = asyncio.run(build_postgresql(server.url, count, work))
                    print(f"{count:>9,} payments: PostgreSQL database built in {took:.1f} s", flush=True)
                    databases.append((f"PostgreSQL {count:,}", count, url))
            measure(args, databases, work, procs)
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)
    return 0


def sqlite_databases(args: argparse.Namespace, work: Path) -> list[tuple[str, int, str]]:
    """(name, payments, DATABASE_URL) of a copy of each cached SQLite database, built if missing."""
    databases = []
    for count in (args.small, args.large):
        cached = args.cache_dir / cache_key(count)
        if cached.exists():
            print(f"{count:>9,} payments: cached database {cached} ({cached.stat().st_size / 2**20:,.0f} MiB)")
        else:
            took = build(cached, count, work)
            print(f"{count:>9,} payments: built {cached} in {took:.1f} s "
                  f"({cached.stat().st_size / 2**20:,.0f} MiB)", flush=True)
        copy = work / f"{count}.sqlite3"
        started = time.monotonic()
        shutil.copyfile(cached, copy)
        print(f"{'':>9}  copied for this run in {time.monotonic() - started:.1f} s", flush=True)
        databases.append((f"SQLite {count:,}", count, f"sqlite:///{copy}"))
    return databases


def measure(args: argparse.Namespace, databases: list[tuple[str, int, str]], work: Path,
            procs: list[subprocess.Popen[bytes]]) -> None:
    """Alternating wrk rounds on a gateway per database; the figures and ratios large / small."""
    targets: dict[str, str] = {}
    scripts: dict[str, Path] = {}
    for name, count, database_url in databases:
        proc, url = start_gateway(database_url, work, f"gateway-{len(procs)}")
        procs.append(proc)
        targets[name] = url
        bodies = asyncio.run(sample(database_url, count, args.sample))
        first = requests.post(url, data=bodies[0], headers={"Content-Type": "application/json"}, timeout=10)
        if first.status_code != 200 or first.json().get("amount") is None:
            raise SystemExit(f"{name}: the sample payment was not found with its details: {first.text}")
        scripts[name] = work / f"post-{len(procs)}.lua"
        scripts[name].write_text(post_script(bodies))
        wrk(url, scripts[name], 1, args.connections)  # warm-up: page cache, connections
    print(f"POST /stkpush/status with paymentToken over {args.sample:,} payments spread over each table; "
          f"wrk -t1 -c{args.connections} -d{args.seconds}s; {args.rounds} rounds alternating; "
          f"{os.cpu_count()} CPUs shared with wrk", flush=True)
    results: dict[str, list[WrkResult]] = {name: [] for name in targets}
    for n in range(1, args.rounds + 1):
        for name, url in targets.items():
            result = wrk(url, scripts[name], args.seconds, args.connections)
            results[name].append(result)
            print(f"round {n}  {name:<20} {result.rate:9,.0f} req/s  p50 {result.p50:6.2f} ms  "
                  f"p99 {result.p99:6.2f} ms  max {result.max:7.1f} ms  socket errors {result.errors}", flush=True)
    print()
    medians = {}
    for name, rows in results.items():
        medians[name] = statistics.median(r.p99 for r in rows)
        print(f"median  {name:<20} {statistics.median(r.rate for r in rows):9,.0f} req/s  "
              f"p50 {statistics.median(r.p50 for r in rows):6.2f} ms  p99 {medians[name]:6.2f} ms")
    for name, _, database_url in databases:
        reads = asyncio.run(periodic_reads(database_url))
        print(f"{name}: the gateway's own periodic reads: "
              + ", ".join(f"{k} {v:.1f} ms" for k, v in reads.items()))
    for small, large in zip(list(targets)[::2], list(targets)[1::2], strict=True):
        ratio = medians[large] / medians[small]
        per_round = [b.p99 / a.p99 for a, b in zip(results[small], results[large], strict=True)]
        print(f"p99 ratio {large} / {small}: {ratio:.2f} (per round {', '.join(f'{x:.2f}' for x in per_round)}); "
              f"target under 2: {'met' if ratio < 2 else 'NOT met'}")

if __name__ == "__main__":
    sys.exit(main())
