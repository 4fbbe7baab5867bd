"""The gateway's memory under connection churn: short-lived checkouts, each on a new connection that
polls once, stays open half a second and closes.

    .venv/bin/python bench/connection_churn.py                     # 100 s, 600 connections at a time
    .venv/bin/python bench/connection_churn.py --also /path/to/another/checkout

What this measures is what the garbage collector's policy (run.py, `pace_collector`) costs in memory
where bench/open_checkouts.py measures what it buys in pauses. A closed connection leaves a few
objects in reference cycles (its transport, its socket and their callbacks), which only a
collection frees; the more connections come and go, the more of that the collector has to find.
Each connection is a checkout of its own (its own client address in X-Forwarded-For from a trusted
proxy, as bench/open_checkouts.py sends it) polling one pending payment, pushed through the
gateway's built-in simulator. It prints the gateway's resident memory every 10 s and at the end,
for this checkout and then for the one given with --also (the same load, one after the other).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench._common import ROOT, clean_env, free_port, memory_mb, python_of, start_process, stop, wait_up  # noqa: E402
from bench.open_checkouts import Checkout, push_all, read_response, request_bytes  # noqa: E402


async def churn(port: int, payment: tuple[str, str], seconds: float, at_once: int, pid: int) -> int:
    """`seconds` of connections, `at_once` open at a time; the number made."""
    host = f"127.0.0.1:{port}"
    made = 0

    async def one(index: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request_bytes(host, Checkout(index, *payment, live=False, polls=True)))
        status, body, _ = await read_response(reader)
        if status != 200:
            raise SystemExit(f"a poll was answered {status}: {body[:200]!r}")
        await asyncio.sleep(0.5)
        writer.close()

    running: set[asyncio.Task[None]] = set()
    started = time.monotonic()
    shown = started
    while (now := time.monotonic()) < started + seconds:
        while len(running) < at_once:
            task = asyncio.ensure_future(one(made))
            made += 1
            running.add(task)
            task.add_done_callback(running.discard)
        for task in [t for t in running if t.done() and t.exception()]:
            raise task.exception()  # type: ignore[misc]
        await asyncio.sleep(0.01)
        if now - shown >= 10:
            shown = now
            print(f"  {now - started:3.0f} s: {made:,} connections, gateway {memory_mb(pid)[0]:.1f} MB resident",
                  flush=True)
    await asyncio.gather(*running)
    return made


async def measure(root: Path, seconds: float, at_once: int) -> None:
    with tempfile.TemporaryDirectory(prefix="churn-") as work:
        port = free_port()
        env = clean_env(HOST="127.0.0.1", PORT=str(port), MPESA_ENV="simulator",
                        DATABASE_URL=f"sqlite:///{work}/gateway.sqlite3", TRUSTED_PROXIES="127.0.0.1/32",
                        SIMULATOR_AUTO_ANSWER_SECONDS="3600", SIMULATOR_PROMPT_LIFETIME_SECONDS="3600")
        gateway = start_process([python_of(root), str(root / "run.py")], Path(work), env, Path(work) / "gateway.log")
        try:
            wait_up(f"http://127.0.0.1:{port}/health", gateway)
            payment = (await push_all(f"http://127.0.0.1:{port}", 1, 1))[0]
            print(f"{root}: {memory_mb(gateway.pid)[0]:.1f} MB resident before", flush=True)
            made = await churn(port, payment, seconds, at_once, gateway.pid)
            await asyncio.sleep(2)  # every connection closed
            resident, peak = memory_mb(gateway.pid)
            print(f"{root}: {made:,} connections in {seconds:.0f} s ({made / seconds:,.0f}/s), each polling once; "
                  f"gateway {resident:.1f} MB resident at the end, {peak:.1f} MB at most", flush=True)
        finally:
            stop([gateway])


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--at-once", type=int, default=600, help="connections open at a time")
    parser.add_argument("--also", type=Path, help="another checkout, measured the same way after this one")
    args = parser.parse_args()
    for root in [ROOT] + ([args.also.resolve()] if args.also else []):
        await measure(root, args.seconds, args.at_once)


if __name__ == "__main__":
    asyncio.run(main())
