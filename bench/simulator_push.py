"""STK push throughput: the standalone simulator against daraja-mock, and the gateway's push end to end.

    .venv/bin/python bench/simulator_push.py                 # 3 rounds, wrk -t1 -c32 -d5s
    .venv/bin/python bench/simulator_push.py --rounds 5 --seconds 5

It starts, on 127.0.0.1:
- daraja-mock 1.0.5 (PyPI), the Flask test double, in a virtualenv of its own made once under
  ~/.cache/mpesa-bench (never a dependency of this project), run as its README says: its own
  command, `daraja-mock --port N`, which serves with Flask's (Werkzeug's) threaded server;
- the standalone simulator (`python run.py simulator`), set up as for a load test:
  SIMULATOR_LOCK_SUBSCRIBER=false (several prompts may be open on one phone) and
  SIMULATOR_PROMPT_LIFETIME_SECONDS=3600 (no prompt expires during the run, so the simulator sends
  no callback; the CallBackURL is a closed loopback port, refused at once should one be sent);
  its log goes to a file;
- the gateway (`python run.py`, simulator mode, a fresh SQLite file, push and lookup limits off),
  with its built-in simulator set up the same way. This is the headline comparison: one process
  and one event loop, like the standalone simulator, doing the whole push (the gateway's checks
  and database write, its Daraja call over HTTP, the simulator's work);
- a second gateway whose MPESA_BASE_URL is the standalone simulator (`--no-via-standalone` leaves
  it out): the gateway's own share, with the simulator's work in another process (two processes
  on two cores, so its ratio is not like for like; it is printed for information).
- the floor under the gateway's push (`--no-floor` leaves it out): bench/push_relay.py, a bare aiohttp
  handler that reads the shop's JSON, sends the simulator the STK push over HTTP with aiohttp's
  client and answers, and nothing else (no checks, no database, no limits, no logging), once with
  the simulator built into its process (as the gateway's) and once calling the standalone one. Its
  ratio to the simulator is the most any gateway making that HTTP round trip on this stack could
  reach; the gateway's ratio to it is what the gateway's own work (checks, the two durable writes
  that keep a push from being lost, logging) costs on top.
The gateways' reconciler is put off past the run (RECONCILE_AFTER_SECONDS=3600): no callback comes
during a run, so it would otherwise STK-query every push from 20 s on, work a real checkout does
only for a payment whose callback is late (`--with-reconciler` leaves it as in production). With
`--also DIR`, another checkout's standalone simulator and its gateway (calling this checkout's
standalone simulator) run in the same rounds.

It fetches an OAuth token from each Daraja, then `wrk` POSTs valid STK push bodies (Password =
base64(shortcode + passkey + Timestamp), every request a phone number not used before in the run)
to each in turn, alternating, `--rounds` times, and prints requests/s, p50 and p99 for each
round, the servers' CPU time per request (from /proc: unlike requests/s, it hardly moves when
other work shares the machine), the medians, and the ratios simulator/daraja-mock and
gateway/simulator, by requests/s and by CPU time per request. Every answer must
be a 2xx: wrk's count of other answers and of socket errors is printed for each round, and the
script exits 1 if there was any. wrk runs on the same two cores as the servers; the ratios are
what is comparable. Needs wrk (`apt-get install wrk`) and PyPI for the first run. Stops
everything it started, even on Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (  # noqa: E402
    BENCH_CACHE,
    clean_env,
    cpu_seconds,
    free_port,
    install_once,
    python_of,
    start_process,
    stop,
    wait_up,
)

ROOT = Path(__file__).resolve().parents[1]
DARAJA_MOCK = "daraja-mock==1.0.5"
CACHE = BENCH_CACHE / "daraja-mock-1.0.5"

SHORTCODE = "174379"  # Safaricom's sandbox paybill and passkey: both Darajas accept them
PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"
DEMO_KEY, DEMO_SECRET = "simulator-demo-consumer-key", "simulator-demo-consumer-secret"
TIMESTAMP = "20261201120000"
LOAD_SETTINGS = {"SIMULATOR_LOCK_SUBSCRIBER": "false", "SIMULATOR_PROMPT_LIFETIME_SECONDS": "3600"}
# No prompt ends during a run, so no callback comes: the gateway's reconciler would STK-query every
# push from 20 s on (then every 10-60 s, up to 50 queries a second), work a real checkout does only
# for a payment whose callback is late. Put off past the run: what is measured is the push.
# (--with-reconciler leaves it on.)
GATEWAY_LOAD_SETTINGS = {"RECONCILE_AFTER_SECONDS": "3600"}


def daraja_mock_python() -> Path:
    """The virtualenv with daraja-mock, made on first use (outside the repository)."""
    if not install_once(CACHE, DARAJA_MOCK, [[sys.executable, "-m", "venv", str(CACHE)],
                                             [str(CACHE / "bin" / "pip"), "install", "-q", DARAJA_MOCK]]):
        raise SystemExit(f"could not install {DARAJA_MOCK} in {CACHE}")
    return CACHE / "bin" / "daraja-mock"


# The floor under the gateway's push (bench/push_relay.py; the module's docstring says what it is).
FLOOR, FLOOR_VIA = "floor: relay (built-in sim)", "floor: relay -> standalone sim"
# The same relay plus the gateway's two durable writes per push (push_relay.py --durable).
FLOOR_DURABLE = "floor + writes -> standalone"


@dataclass
class Target:
    name: str
    url: str
    lua: str  # the wrk script
    check: dict[str, object]  # one request's body, sent once before the rounds
    pids: tuple[int, ...] = ()  # the server processes whose CPU time a request costs


def stk_body_template(callback_url: str) -> str:
    """An STK push body with `%s` for PhoneNumber and PartyA (Lua's string.format)."""
    password = base64.b64encode(f"{SHORTCODE}{PASSKEY}{TIMESTAMP}".encode()).decode()
    return ('{"BusinessShortCode":"' + SHORTCODE + '","Password":"' + password + '","Timestamp":"' + TIMESTAMP
            + '","TransactionType":"CustomerPayBillOnline","Amount":10,"PartyA":"%s","PartyB":"' + SHORTCODE
            + '","PhoneNumber":"%s","CallBackURL":"' + callback_url + '","AccountReference":"Order1",'
            '"TransactionDesc":"Payment"}')


def rotating_lua(template: str, prefix: str, placeholders: int, token: str | None) -> str:
    """A wrk script: POST `template` with a new phone (prefix + 7 digits) in every request; the
    first of the 7 digits is set per round (ROUND, replaced before each run)."""
    auth = f'wrk.headers["Authorization"] = "Bearer {token}"\n' if token else ""
    phones = ", ".join(["phone"] * placeholders)
    return (f'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n{auth}'
            f"local template = [[{template}]]\nlocal n = ROUND * 1000000\n"
            f'request = function()\n  n = n + 1\n  local phone = "{prefix}" .. string.format("%07d", n)\n'
            f"  return wrk.format(nil, nil, nil, string.format(template, {phones}))\nend\n")


def daraja_token(base: str, *, basic: bool) -> str:
    auth = (DEMO_KEY, DEMO_SECRET) if basic else None
    answer = requests.get(f"{base}/oauth/v1/generate", params={"grant_type": "client_credentials"}, auth=auth,
                          timeout=10)
    answer.raise_for_status()
    return str(answer.json()["access_token"])


def daraja_target(name: str, base: str, token: str, callback_url: str, prefix: str, pids: tuple[int, ...]) -> Target:
    template = stk_body_template(callback_url)
    check = requests.post(f"{base}/mpesa/stkpush/v1/processrequest", data=template.replace("%s", "254799999999"),
                          headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
                          timeout=10)
    if check.status_code != 200 or check.json().get("ResponseCode") != "0":
        raise SystemExit(f"{name}: a valid STK push was refused: {check.status_code} {check.text[:300]}")
    return Target(name, f"{base}/mpesa/stkpush/v1/processrequest",
                  rotating_lua(template, prefix, 2, token), check.json(), pids)


def gateway_target(name: str, base: str, prefix: str, pids: tuple[int, ...]) -> Target:
    check = requests.post(f"{base}/stkpush", json={"phone": "0799999998", "amount": 10}, timeout=10)
    if check.status_code != 200 or not check.json().get("success"):
        raise SystemExit(f"{name}: a push was refused: {check.status_code} {check.text[:300]}")
    return Target(name, f"{base}/stkpush", rotating_lua('{"phone":"%s","amount":10}', prefix, 1, None), check.json(),
                  pids)


def start_simulator(root: Path, log: Path, *, launcher: Sequence[str] = (),
                    start_timeout: float = 30) -> tuple[subprocess.Popen[bytes], str]:
    """`run.py simulator` of the checkout at `root` (run with `launcher` before it, e.g. valgrind),
    set up for load, and its base URL."""
    port = free_port()
    env = clean_env(HOST="127.0.0.1", **LOAD_SETTINGS)
    base = f"http://127.0.0.1:{port}"
    # run.py's folder comes first on sys.path, so the simulator package is that checkout's
    proc = start_process([*launcher, python_of(root), str(root / "run.py"), "simulator", "--port", str(port)],
                         log.parent, env, log)
    wait_up(f"{base}/simulator/api/clock", proc, timeout=start_timeout)
    return proc, base


def start_gateway(work: Path, name: str, extra: dict[str, str], root: Path = ROOT, *, launcher: Sequence[str] = (),
                  start_timeout: float = 30, reconciler: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """The gateway of checkout `root` (`python run.py`, a fresh SQLite file, run with `launcher`
    before it), set up for load (its reconciler put off unless `reconciler`), and its base URL."""
    port = free_port()
    env = clean_env(HOST="127.0.0.1", PORT=str(port), DATABASE_URL=f"sqlite:///{work}/{name}.sqlite3",
                    LOOKUP_LIMIT_PER_CLIENT="0", PUSH_LIMIT_PER_PHONE="0", PUSH_LIMIT_PER_CLIENT="0",
                    **{**LOAD_SETTINGS, **({} if reconciler else GATEWAY_LOAD_SETTINGS), **extra})
    proc = start_process([*launcher, python_of(root), str(root / "run.py")], work, env, work / f"{name}.log")
    base = f"http://127.0.0.1:{port}"
    wait_up(f"{base}/health", proc, timeout=start_timeout)
    return proc, base


def start_relay(work: Path, name: str, daraja: str | None, *,
                durable: bool = False) -> tuple[subprocess.Popen[bytes], str]:
    """bench/push_relay.py, the floor under the gateway's push: its simulator built in (`daraja`
    None, set up for load as the gateway's) or the standalone one at `daraja`, with the gateway's
    two durable writes per push if `durable` (a fresh SQLite file); its base URL."""
    port = free_port()
    argv = [python_of(ROOT), str(ROOT / "bench" / "push_relay.py"), "--port", str(port)]
    argv += ["--daraja", daraja] if daraja else []
    argv += ["--durable", str(work / f"{name}.sqlite3")] if durable else []
    proc = start_process(argv, work, clean_env(**LOAD_SETTINGS),
                         work / f"{name}.log")
    base = f"http://127.0.0.1:{port}"
    wait_up(f"{base}/health", proc)
    return proc, base


@dataclass
class Round:
    rate: float
    p50: float
    p99: float
    bad: int  # non-2xx answers
    socket_errors: int
    cpu_us: float  # the servers' CPU time per request (user + system), whatever else the machine runs


def wrk(target: Target, round_no: int, seconds: int, connections: int, work: Path) -> Round:
    script = work / "push.lua"
    script.write_text(target.lua.replace("ROUND", str(round_no)))
    cpu_before = cpu_seconds(*target.pids)
    out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          target.url], capture_output=True, text=True, timeout=seconds + 30).stdout
    cpu = cpu_seconds(*target.pids) - cpu_before
    done = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    return Round(rate, percentile("50"), percentile("99"), int(bad[1]) if bad else 0,
                 sum(int(x) for x in sock.groups()) if sock else 0, cpu / max(done, 1) * 1e6)


def start_targets(args: argparse.Namespace, mock_command: Path, work: Path,
                  procs: list[subprocess.Popen[bytes]]) -> list[Target]:
    """Start every server the rounds drive (each added to `procs` as it starts), checked with one push."""
    nowhere = f"http://127.0.0.1:{free_port()}/callback"  # nothing listens there
    mock_port = free_port()
    procs.append(start_process([str(mock_command), "--port", str(mock_port)], work, clean_env(),
                               work / "daraja-mock.log"))
    mock, mock_pid = f"http://127.0.0.1:{mock_port}", procs[-1].pid
    wait_up(f"{mock}/health", procs[-1])

    proc, sim = start_simulator(ROOT, work / "simulator.log")
    procs.append(proc)
    sim_pid = proc.pid

    reconciler = args.with_reconciler
    proc, gateway = start_gateway(work, "gateway", {}, reconciler=reconciler)
    procs.append(proc)
    targets = [
        daraja_target("daraja-mock 1.0.5", mock, daraja_token(mock, basic=False), nowhere, "25471", (mock_pid,)),
        daraja_target("simulator (standalone)", sim, daraja_token(sim, basic=True), nowhere, "25472", (sim_pid,)),
        gateway_target("gateway (built-in simulator)", gateway, "073", (proc.pid,)),
    ]
    if not args.no_floor:
        proc, relay = start_relay(work, "relay", None)
        procs.append(proc)
        targets.append(gateway_target(FLOOR, relay, "071", (proc.pid,)))
    if args.also:
        proc, other = start_simulator(args.also.resolve(), work / "simulator-also.log")
        procs.append(proc)
        targets.insert(2, daraja_target(f"simulator @{args.also.name}", other, daraja_token(other, basic=True),
                                        nowhere, "25475", (proc.pid,)))
    if not args.no_via_standalone:
        proc, via = start_gateway(work, "gateway-via", {"MPESA_BASE_URL": sim}, reconciler=reconciler)
        procs.append(proc)
        targets.append(gateway_target("gateway -> standalone sim", via, "074", (proc.pid, sim_pid)))
        if args.also:
            proc, via_also = start_gateway(work, "gateway-via-also", {"MPESA_BASE_URL": sim}, args.also.resolve(),
                                           reconciler=reconciler)
            procs.append(proc)
            targets.append(gateway_target(f"gateway @{args.also.name} -> sim", via_also, "076", (proc.pid, sim_pid)))
        if not args.no_floor:
            proc, relay = start_relay(work, "relay-via", sim)
            procs.append(proc)
            targets.append(gateway_target(FLOOR_VIA, relay, "078", (proc.pid, sim_pid)))
            proc, relay = start_relay(work, "relay-durable", sim, durable=True)
            procs.append(proc)
            targets.append(gateway_target(FLOOR_DURABLE, relay, "079", (proc.pid, sim_pid)))
    return targets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-via-standalone", action="store_true",
                        help="leave out the gateway whose MPESA_BASE_URL is the standalone simulator")
    parser.add_argument("--keep", action="store_true", help="keep the servers' logs and databases (path printed)")
    parser.add_argument("--also", type=Path, metavar="DIR",
                        help="also the standalone simulator of another checkout (e.g. `git worktree add /tmp/old "
                             "main`) and its gateway calling this checkout's standalone simulator, same settings, "
                             "same rounds")
    parser.add_argument("--no-floor", action="store_true",
                        help="leave out the floors under the gateway's push (bench/push_relay.py: a bare aiohttp "
                             "handler that only relays the push to the simulator over HTTP and answers; and, "
                             "calling the standalone simulator, the same plus the gateway's two durable writes)")
    parser.add_argument("--with-reconciler", action="store_true",
                        help="leave the gateways' reconciler as in production (STK queries from 20 s after each "
                             "push, whose callback never comes here)")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        print("wrk is needed: apt-get install wrk", file=sys.stderr)
        return 2
    mock_command = daraja_mock_python()
    work = Path(tempfile.mkdtemp(prefix="push-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        targets = start_targets(args, mock_command, work, procs)
        print(f"STK push, a new phone every request; wrk -t1 -c{args.connections} -d{args.seconds}s; "
              f"{args.rounds} rounds alternating; {os.cpu_count()} CPUs shared with wrk")
        results: dict[str, list[Round]] = {t.name: [] for t in targets}
        for n in range(1, args.rounds + 1):
            for target in targets:
                r = wrk(target, n, args.seconds, args.connections, work)
                results[target.name].append(r)
                print(f"round {n}  {target.name:<30} {r.rate:9,.0f} req/s  p50 {r.p50:6.2f} ms  "
                      f"p99 {r.p99:6.2f} ms  CPU {r.cpu_us:4.0f} µs/req  non-2xx {r.bad}  socket errors "
                      f"{r.socket_errors}", flush=True)
        print()
        medians = {}
        for name, rows in results.items():
            medians[name] = (statistics.median(r.rate for r in rows), statistics.median(r.p50 for r in rows),
                             statistics.median(r.p99 for r in rows))
            rate, p50, p99 = medians[name]
            cpu = statistics.median(r.cpu_us for r in rows)
            print(f"median  {name:<30} {rate:9,.0f} req/s  p50 {p50:6.2f} ms  p99 {p99:6.2f} ms  CPU {cpu:4.0f} µs/req")
        print()

        def ratio(top: str, bottom: str, target: float | None) -> None:
            per_round = [a.rate / b.rate for a, b in zip(results[top], results[bottom], strict=True)]
            value = statistics.median(per_round)
            cpu = statistics.median(b.cpu_us / a.cpu_us for a, b in zip(results[top], results[bottom], strict=True)
                                    if a.cpu_us)
            wanted = f"target >= {target}; " if target is not None else ""
            print(f"{top} / {bottom}: {value:.2f} ({wanted}per round "
                  f"{', '.join(f'{x:.2f}' for x in per_round)}); by CPU time per request {cpu:.2f}")

        ratio("simulator (standalone)", "daraja-mock 1.0.5", 3)
        sim_p99, mock_p99 = medians["simulator (standalone)"][2], medians["daraja-mock 1.0.5"][2]
        print(f"  p99 {sim_p99:.2f} ms vs {mock_p99:.2f} ms: {'no worse' if sim_p99 <= mock_p99 else 'WORSE'}")
        ratio("gateway (built-in simulator)", "simulator (standalone)", 0.5)
        if not args.no_floor:
            ratio(FLOOR, "simulator (standalone)", 0.5)
            ratio("gateway (built-in simulator)", FLOOR, None)
        if not args.no_via_standalone:
            ratio("gateway -> standalone sim", "simulator (standalone)", 0.5)
            if args.also:
                ratio(f"gateway @{args.also.name} -> sim", "simulator (standalone)", 0.5)
            if not args.no_floor:
                ratio(FLOOR_VIA, "simulator (standalone)", 0.5)
                ratio(FLOOR_DURABLE, "simulator (standalone)", 0.5)
                ratio("gateway -> standalone sim", FLOOR_VIA, None)
                ratio("gateway -> standalone sim", FLOOR_DURABLE, None)
        failures = sum(r.bad + r.socket_errors for rows in results.values() for r in rows)
        if failures:
            print(f"\n{failures} answers were not 2xx or failed: these figures are not valid", file=sys.stderr)
            return 1
    finally:
        stop(procs)
        if args.keep:
            print(f"logs and databases kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
