"""Status polls against a bare aiohttp handler, measured side by side with wrk.

    .venv/bin/python bench/status_vs_bare.py                 # 3 rounds, wrk -t1 -c32 -d5s
    .venv/bin/python bench/status_vs_bare.py --also /path/to/another/checkout   # its gateway too, same rounds

It starts, on 127.0.0.1:
- the gateway (`python run.py`, simulator mode, a fresh SQLite file, lookup limit off) with one
  payment pushed and settled, so every poll reads a completed payment;
- a bare aiohttp server whose handler parses the same JSON body and answers a body of the same
  size (the baseline: what aiohttp itself costs);
- with `--also DIR`: the gateway of another checkout (DIR/run.py with DIR/.venv/bin/python), to
  compare two versions in one run.
Then `wrk` POSTs `{"checkoutRequestId": …}` to each in turn, alternating, `--rounds` times, and
prints requests/s, p50 and p99 for each round, each server's CPU time per request (from /proc), the
medians, and the ratios to the baseline: by requests/s, and by CPU time per request (which hardly
moves when other work shares the machine, where requests/s does). wrk runs on the same two cores
as the servers (as in CI); the ratios are what is comparable. Needs wrk
(`apt-get install wrk`). Stops everything it started, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench._common import (  # noqa: E402
    ROOT,
    clean_env,
    cpu_seconds,
    free_port,
    post_script,
    python_of,
    start_process,
    stop,
    wait_up,
)
from bench._common import wrk as run_wrk  # noqa: E402

BARE = r'''
import sys
from aiohttp import web

size = int(sys.argv[2])


async def status(request):
    body = await request.json()
    cid = str(body.get("checkoutRequestId", ""))
    answer = {"success": True, "status": "completed", "checkoutRequestId": cid, "pad": ""}
    raw = web.json_response(answer).body
    answer["pad"] = "x" * max(0, size - len(raw))
    return web.json_response(answer)


app = web.Application()
app.router.add_post("/stkpush/status", status)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), print=None, access_log=None)
'''


@dataclass
class Target:
    name: str
    url: str
    body: str
    pid: int = 0  # the server's process (its CPU time is read from /proc)
    token: str = ""  # the payment's token, as its push answered it to the browser


def start_gateway(root: Path, work: Path, name: str, *, launcher: Sequence[str] = (),
                  start_timeout: float = 30, **settings: str) -> tuple[subprocess.Popen[bytes], Target]:
    """The gateway of checkout `root` (run with `launcher` before its command, e.g. valgrind; with
    `settings` added to its environment), with one payment pushed and settled."""
    port = free_port()
    env = clean_env(HOST="127.0.0.1", PORT=str(port), DATABASE_URL=f"sqlite:///{work}/{name}.sqlite3",
                    LOOKUP_LIMIT_PER_CLIENT="0", PUSH_LIMIT_PER_PHONE="0", PUSH_LIMIT_PER_CLIENT="0",
                    SIMULATOR_AUTO_ANSWER_SECONDS="600", SIMULATOR_CALLBACK_DELAY_SECONDS="0", **settings)
    proc = start_process([*launcher, python_of(root), str(root / "run.py")], work, env, work / f"{name}.log")
    base = f"http://127.0.0.1:{port}"
    wait_up(f"{base}/health", proc, timeout=start_timeout)
    pushed = requests.post(f"{base}/stkpush", json={"phone": "0712345678", "amount": 10}, timeout=60).json()
    cid = pushed["checkoutRequestId"]
    requests.post(f"{base}/simulator/api/prompts/{cid}/pin", json={"pin": "12345"}, timeout=60)
    for _ in range(100):
        answer = requests.post(f"{base}/stkpush/status", json={"checkoutRequestId": cid}, timeout=60).json()
        if answer.get("status") == "completed":
            break
        time.sleep(0.05)
    else:
        raise SystemExit(f"{name}: the payment did not complete")
    return proc, Target(name, f"{base}/stkpush/status", json.dumps({"checkoutRequestId": cid}), proc.pid,
                        pushed["paymentToken"])


def wrk(target: Target, seconds: int, connections: int, work: Path) -> tuple[float, float, float, float]:
    """(requests/s, p50 ms, p99 ms, the server's CPU µs per request)."""
    script = work / "post.lua"
    script.write_text(post_script([target.body]))
    before = cpu_seconds(target.pid)
    result = run_wrk(target.url, script, seconds, connections)
    return result.rate, result.p50, result.p99, (cpu_seconds(target.pid) - before) / max(result.requests, 1) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--also", type=Path, help="another checkout whose gateway is measured in the same rounds")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="status-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        proc, gateway = start_gateway(ROOT, work, "gateway")
        procs.append(proc)
        targets = [gateway]
        if args.also:
            proc, other = start_gateway(args.also.resolve(), work, f"gateway@{args.also.name}")
            procs.append(proc)
            targets.append(other)
        size = len(requests.post(gateway.url, data=gateway.body, headers={"Content-Type": "application/json"},
                                 timeout=10).content)
        port = free_port()
        bare = subprocess.Popen([sys.executable, "-c", BARE, str(port), str(size)], start_new_session=True,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(bare)
        base = Target("bare aiohttp", f"http://127.0.0.1:{port}/stkpush/status", gateway.body, bare.pid)
        wait_up(f"http://127.0.0.1:{port}/", bare)
        targets.insert(0, base)
        print(f"POST /stkpush/status for a completed payment ({size}-byte answer); wrk -t1 -c{args.connections} "
              f"-d{args.seconds}s; {args.rounds} rounds alternating; {os.cpu_count()} CPUs shared with wrk")
        results: dict[str, list[tuple[float, float, float, float]]] = {t.name: [] for t in targets}
        for n in range(1, args.rounds + 1):
            for target in targets:
                rate, p50, p99, cpu = wrk(target, args.seconds, args.connections, work)
                results[target.name].append((rate, p50, p99, cpu))
                print(f"round {n}  {target.name:<28} {rate:9,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  "
                      f"CPU {cpu:4.0f} µs/req", flush=True)
        print()
        baseline = statistics.median(r[0] for r in results[base.name])
        baseline_cpu = statistics.median(r[3] for r in results[base.name])
        for name, rows in results.items():
            rate = statistics.median(r[0] for r in rows)
            cpu = statistics.median(r[3] for r in rows)
            ratios = [r[0] / b[0] for r, b in zip(rows, results[base.name], strict=True)]
            print(f"median  {name:<28} {rate:9,.0f} req/s  p50 {statistics.median(r[1] for r in rows):6.2f} ms  "
                  f"p99 {statistics.median(r[2] for r in rows):6.2f} ms  CPU {cpu:4.0f} µs/req  "
                  f"ratio to bare {rate / baseline:.2f} (per round {', '.join(f'{x:.2f}' for x in ratios)}); "
                  f"by CPU time per request {baseline_cpu / cpu:.2f}")
    finally:
        stop(procs)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
