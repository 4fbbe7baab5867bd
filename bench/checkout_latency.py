"""Latency and throughput of the gateway's hot paths, gateway and simulator over real loopback HTTP.

    .venv/bin/python bench/checkout_latency.py [--pushes 2000] [--concurrency 50]

Starts `python run.py` (simulator mode, a fresh SQLite file in a temporary folder) on a free port,
then measures, from a separate client process:
  - POST /stkpush      (validation, OAuth from cache, STK push to the simulator, SQLite insert)
  - POST /stkpush/status (one SQLite read)
and prints requests per second and p50/p95/p99 latencies. Bounded in requests and time; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parents[1]
DEADLINE_SECONDS = 120


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


async def timed_calls(session: aiohttp.ClientSession, url: str, bodies: list[dict], concurrency: int,
                      deadline: float) -> tuple[list[float], list[dict], float]:
    latencies: list[float] = []
    results: list[dict] = []
    queue: asyncio.Queue[dict] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)

    async def worker() -> None:
        while not queue.empty() and time.monotonic() < deadline:
            body = queue.get_nowait()
            started = time.perf_counter()
            async with session.post(url, json=body) as resp:
                data = await resp.json()
            latencies.append((time.perf_counter() - started) * 1000)
            results.append(data)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, results, time.perf_counter() - started


def report(name: str, latencies: list[float], elapsed: float) -> None:
    print(f"{name:<22} {len(latencies):>6} requests  {len(latencies) / elapsed:>8.0f} req/s  "
          f"p50 {statistics.median(latencies):6.1f} ms  p95 {percentile(latencies, 95):6.1f} ms  "
          f"p99 {percentile(latencies, 99):6.1f} ms")


async def run(base: str, pushes: int, concurrency: int) -> None:
    deadline = time.monotonic() + DEADLINE_SECONDS
    # Distinct interactive numbers: every push is a real open prompt on its own subscriber.
    phones = [f"07{20_000_000 + i:08d}" for i in range(pushes)]
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as session:
        warm = await session.post(f"{base}/stkpush", json={"phone": "0799999999", "amount": 1})
        assert (await warm.json())["success"], "warm-up push failed"
        lat, results, elapsed = await timed_calls(
            session, f"{base}/stkpush", [{"phone": p, "amount": 10} for p in phones], concurrency, deadline)
        failures = [r for r in results if not r.get("success")]
        report("POST /stkpush", lat, elapsed)
        ids = [r["checkoutRequestId"] for r in results if r.get("success")]
        lat, results, elapsed = await timed_calls(
            session, f"{base}/stkpush/status", [{"checkoutRequestId": i} for i in ids * 3], concurrency, deadline)
        report("POST /stkpush/status", lat, elapsed)
        print(f"push failures: {len(failures)}; status answers not pending: "
              f"{sum(1 for r in results if r.get('status') != 'pending')}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pushes", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--url", help="measure a server already running here (127.0.0.1 only) instead")
    args = parser.parse_args()
    if args.url:
        if not args.url.startswith(("http://127.0.0.1:", "http://localhost:")):
            parser.error("--url must be a loopback address")
        asyncio.run(run(args.url.rstrip("/"), args.pushes, args.concurrency))
        return 0
    port = free_port()
    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp}/bench.sqlite3",
               "SIMULATOR_PROMPT_LIFETIME_SECONDS": "600", "RECONCILE_AFTER_SECONDS": "600",
               "PUSH_LIMIT_PER_CLIENT": "0"}  # every push comes from this one client
        server = subprocess.Popen([sys.executable, "run.py"], cwd=ROOT, env=env,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            base = f"http://127.0.0.1:{port}"
            for _ in range(100):
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                        break
                except OSError:
                    time.sleep(0.1)
            print(f"gateway + simulator in one process (python run.py), {args.pushes} pushes, "
                  f"concurrency {args.concurrency}, {os.cpu_count()} CPUs")
            asyncio.run(run(base, args.pushes, args.concurrency))
        finally:
            server.terminate()
            server.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
