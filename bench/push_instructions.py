"""The STK push, the gateway's against the standalone simulator's, counted in CPU instructions
(valgrind's callgrind).

    .venv/bin/python bench/push_instructions.py                       # 12 s each
    .venv/bin/python bench/push_instructions.py --also /path/to/another/checkout

The same pushes as bench/simulator_push.py: wrk (-c8) POSTs valid STK pushes, a new phone number
every request, to
- the standalone simulator (`python run.py simulator`, set up for load as there), run under
  callgrind: Daraja's side of a push;
- the gateway's `POST /stkpush` (`python run.py`, a fresh SQLite file, push limits off) whose
  MPESA_BASE_URL is a second standalone simulator, not under callgrind: only the gateway's
  instructions are counted (its checks, both units of work on the database, its Daraja call over
  HTTP, its answer); with `--also DIR`, another checkout's gateway too, in the same run. Its
  reconciler is put off past the run, as in bench/simulator_push.py: no callback comes, and under
  callgrind (about 30 pushes a second) its STK queries of the pushes made 20 s before, up to 50 a
  second, would be counted against a tenth of the pushes they are in real time (measured: 3.5
  million instructions per push with them, 2.0 without).
Each process is warmed by 30 s of pushes first; counting is on only while wrk then drives it. It
prints each server's instructions per push, in its own process (the kernel's share is not counted,
nor the COMMIT's fsync), and the ratio simulator/gateway: the share of the simulator's push rate
the gateway could reach if instructions were all that counted.

Unlike requests/s or CPU time, an instruction count hardly moves between runs or with whatever
else the machine is doing, so it tells apart changes of a few per cent that a shared machine's
timings cannot (bench/simulator_push.py gives the rates). It is not a throughput ratio: the kernel
(sockets, the fsync), the thread hops and the cache misses are not in it. Needs valgrind and wrk
(`apt-get install valgrind wrk`); takes about a minute per server.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench._common import ROOT, free_port, stop  # noqa: E402
from bench.simulator_push import (  # noqa: E402
    Target,
    daraja_target,
    daraja_token,
    gateway_target,
    start_gateway,
    start_simulator,
)
from bench.status_instructions import callgrind, control, counted, tools_missing  # noqa: E402

WARM_UP_SECONDS = 30  # pushed before counting: first calls, caches, the OAuth token


def counted_simulator(work: Path) -> tuple[subprocess.Popen[bytes], Target]:
    """`run.py simulator` under callgrind, set up for load as in bench/simulator_push.py."""
    proc, base = start_simulator(ROOT, work / "simulator.log", launcher=callgrind("simulator", work),
                                 start_timeout=300)
    callback = f"http://127.0.0.1:{free_port()}/callback"  # a closed port: no prompt ends during the run anyway
    return proc, daraja_target("simulator", base, daraja_token(base, basic=True), callback, "25471", (proc.pid,))


def counted_gateway(root: Path, name: str, daraja: str, prefix: str, work: Path) -> tuple[subprocess.Popen[bytes],
                                                                                          Target]:
    """The gateway of checkout `root` under callgrind, its Daraja the standalone simulator `daraja`."""
    proc, base = start_gateway(work, name, {"MPESA_BASE_URL": daraja}, root, launcher=callgrind(name, work),
                               start_timeout=300)
    return proc, gateway_target(name, base, prefix, (proc.pid,))


def count(target: Target, name: str, work: Path, seconds: int) -> tuple[int, float]:
    """(pushes, instructions per push) of `seconds` of wrk -c8 against `target`."""
    script = work / f"{name}.lua"
    script.write_text(target.lua.replace("ROUND", "9"))  # warm-up phones are ROUND 8's: never the same
    (work / "warm.lua").write_text(target.lua.replace("ROUND", "8"))
    # Bounded by time: a slow process pushes fewer, no matter.
    subprocess.run(["wrk", "-t1", "-c4", f"-d{WARM_UP_SECONDS}s", "--timeout", "30s", "-s", str(work / "warm.lua"),
                    target.url], capture_output=True, timeout=WARM_UP_SECONDS + 90)
    control(target.pids[0], "--instr=on")
    out = subprocess.run(["wrk", "-t1", "-c8", f"-d{seconds}s", "--timeout", "30s", "-s", str(script), target.url],
                         capture_output=True, text=True, timeout=seconds + 60).stdout
    control(target.pids[0], "--instr=off")
    control(target.pids[0], "--dump")
    done = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    if re.search(r"Non-2xx or 3xx responses|Socket errors", out):
        raise SystemExit(f"{name}: answers that were not 2xx, or socket errors:\n{out}")
    if not done:
        raise SystemExit(f"{name}: no push was answered")
    return done, counted(work, name) / done


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=int, default=12)
    parser.add_argument("--also", type=Path, help="another checkout whose gateway is counted too")
    parser.add_argument("--keep", action="store_true", help="keep callgrind's dumps and the logs (path printed)")
    args = parser.parse_args()
    if tools_missing():
        return 2
    work = Path(tempfile.mkdtemp(prefix="push-instructions-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        results: dict[str, tuple[int, float]] = {}
        proc, target = counted_simulator(work)
        procs.append(proc)
        results["simulator"] = count(target, "simulator", work, args.seconds)
        stop([proc])
        proc, daraja = start_simulator(ROOT, work / "daraja.log")  # the gateways' Daraja, not counted
        procs.append(proc)
        gateways = [("gateway", ROOT)] + ([(f"gateway@{args.also.name}", args.also.resolve())] if args.also else [])
        for i, (name, root) in enumerate(gateways):
            label = name.replace("@", "-")
            proc, target = counted_gateway(root, label, daraja, f"07{5 + i}", work)
            try:
                results[name] = count(target, label, work, args.seconds)
            finally:
                stop([proc])
        simulator = results["simulator"][1]
        print(f"STK push, a new phone every request; wrk -t1 -c8 -d{args.seconds}s under callgrind "
              "(the gateways' Daraja is a standalone simulator, not counted)")
        for name, (done, per) in results.items():
            ratio = "" if name == "simulator" else f"  simulator/gateway {simulator / per:.2f}"
            print(f"{name:<28} {done:6,} pushes  {per / 1000:8.1f} thousand instructions per push{ratio}")
    finally:
        stop(procs)
        if args.keep:
            print(f"callgrind's dumps and the logs: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
