"""Status polls against a bare aiohttp handler, counted in CPU instructions (valgrind's callgrind).

    .venv/bin/python bench/status_instructions.py                       # gateway vs bare, 12 s each
    .venv/bin/python bench/status_instructions.py --also /path/to/another/checkout
    .venv/bin/python bench/status_instructions.py --as-browser   # the pay page's poll, behind a proxy

The same servers and request as bench/status_vs_bare.py (a completed payment polled with
`POST /stkpush/status`, against a bare aiohttp handler that parses the same body and answers a
body of the same size), each run under callgrind with counting switched on only while wrk polls it
(-c8, --seconds). With --as-browser, the poll is the pay page's, as bench/open_checkouts.py sends
it: the payment's token in the body, a browser's headers (Origin, Referer, User-Agent, Accept-*)
and X-Forwarded-For/-Proto from a trusted proxy (TRUSTED_PROXIES=127.0.0.1/32); the bare handler
gets the same request. The lookup limit is off in both modes, as in bench/status_vs_bare.py. It
prints the instructions each server executed per request, in its own process (the kernel's share,
the same system calls for both, is not counted), and the ratio to bare.

Unlike requests/s or CPU time, an instruction count hardly moves between runs or with whatever
else the machine is doing (within 1-2 %: how many requests share a pass of the event loop varies a
little), so it can tell apart changes of a few per cent that a shared machine's timing cannot. It
is not a throughput ratio: the gateway's extra instructions are mostly the interpreter running
Python, which runs fewer instructions per second than aiohttp's C parts and the kernel, so the
ratio of CPU time per request (bench/status_vs_bare.py) is lower than this one. Needs valgrind and
wrk (`apt-get install valgrind wrk`); takes about a minute per server.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench._common import ROOT, free_port, lua_string, start_process, stop, wait_up  # noqa: E402
from bench.open_checkouts import USER_AGENT  # noqa: E402
from bench.status_vs_bare import BARE, Target, start_gateway  # noqa: E402

HOST = "127.0.0.1"  # callgrind_control finds the process by a path that holds the HOST variable


def callgrind(name: str, work: Path) -> list[str]:
    return ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={work}/{name}.out"]


def control(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], capture_output=True, check=True,
                   env=dict(os.environ, HOST=HOST), timeout=120)


def browser_poll(target: Target, host: str) -> tuple[str, dict[str, str]]:
    """The pay page's poll of `target`'s payment behind a proxy: (body, headers)."""
    body = json.dumps({"checkoutRequestId": json.loads(target.body)["checkoutRequestId"], "paymentToken": target.token})
    return body, {"Content-Type": "application/json", "Accept": "application/json", "Origin": f"https://{host}",
                  "Referer": f"https://{host}/pay.html", "User-Agent": USER_AGENT,
                  "Accept-Encoding": "gzip, deflate, br", "Accept-Language": "en-GB,en;q=0.9",
                  "Cache-Control": "no-cache", "Pragma": "no-cache", "X-Forwarded-For": "203.0.113.7",
                  "X-Forwarded-Proto": "https"}


def count(target: Target, name: str, work: Path, seconds: int, as_browser: bool) -> tuple[int, float]:
    """(requests, instructions per request) of `seconds` of wrk -c8 against `target`."""
    script = work / "post.lua"
    body, headers = target.body, {"Content-Type": "application/json"}
    if as_browser:
        body, headers = browser_poll(target, target.url.split("/")[2])
    script.write_text(f'wrk.method = "POST"\nwrk.body = {lua_string(body)}\n'
                      + "".join(f"wrk.headers[{lua_string(k)}] = {lua_string(v)}\n" for k, v in headers.items()))
    for _ in range(100):  # warm: first calls, caches
        requests.post(target.url, data=body, headers=headers, timeout=60)
    control(target.pid, "--instr=on")
    out = subprocess.run(["wrk", "-t1", "-c8", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), target.url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    control(target.pid, "--instr=off")
    control(target.pid, "--dump")
    done = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    if re.search(r"Non-2xx or 3xx responses", out):
        raise SystemExit(f"{name}: answers that were not 2xx:\n{out}")
    return done, counted(work, name) / done


def counted(work: Path, name: str) -> int:
    """The instructions callgrind counted in `name`'s dumps (it exits if there were none)."""
    total = 0
    for dump in work.glob(f"{name}.out*"):
        for line in dump.read_text(errors="replace").splitlines():
            if line.startswith(("summary:", "totals:")):
                total = max(total, int(line.split()[1]))
    if not total:
        raise SystemExit(f"{name}: callgrind counted nothing")
    return total


def tools_missing() -> bool:
    """Whether valgrind, callgrind_control or wrk is missing (said on standard error)."""
    for tool in ("valgrind", "callgrind_control", "wrk"):
        if not shutil.which(tool):
            print(f"{tool} is needed: apt-get install valgrind wrk", file=sys.stderr)
            return True
    return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--also", type=Path, help="another checkout whose gateway is counted too")
    parser.add_argument("--as-browser", action="store_true", help="the pay page's poll, through a trusted proxy")
    args = parser.parse_args()
    if tools_missing():
        return 2
    work = Path(tempfile.mkdtemp(prefix="status-instructions-"))
    try:
        roots = [("gateway", ROOT)] + ([(f"gateway@{args.also.name}", args.also.resolve())] if args.also else [])
        results: dict[str, tuple[int, float]] = {}
        body = token = ""
        for name, root in roots:
            proxied = {"TRUSTED_PROXIES": "127.0.0.1/32"} if args.as_browser else {}
            proc, target = start_gateway(root, work, name.replace("@", "-"), launcher=callgrind(name, work),
                                         start_timeout=300, **proxied)
            try:
                body, token = target.body, target.token
                results[name] = count(target, name, work, args.seconds, args.as_browser)
            finally:
                stop([proc])
        port = free_port()
        bare = start_process([*callgrind("bare", work), sys.executable, "-c", BARE, str(port), "197"], work,
                             dict(os.environ, HOST=HOST), work / "bare.log")
        try:
            wait_up(f"http://127.0.0.1:{port}/", bare, timeout=300)
            results["bare aiohttp"] = count(Target("bare aiohttp", f"http://127.0.0.1:{port}/stkpush/status", body,
                                                   bare.pid, token), "bare", work, args.seconds, args.as_browser)
        finally:
            stop([bare])
        baseline = results["bare aiohttp"][1]
        print(f"POST /stkpush/status for a completed payment, {json.loads(body)['checkoutRequestId']}; "
              f"{'as the pay page sends it behind a proxy, ' if args.as_browser else ''}"
              f"wrk -t1 -c8 -d{args.seconds}s under callgrind")
        for name in ["bare aiohttp", *(n for n, _ in roots)]:
            done, per = results[name]
            print(f"{name:<28} {done:6,} requests  {per / 1000:7.1f} thousand instructions per request  "
                  f"ratio to bare {baseline / per:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
