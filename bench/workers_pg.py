"""Push and status throughput of the gateway on PostgreSQL: 1 worker against 2 workers, in one run.

    .venv/bin/python bench/workers_pg.py [--pushes 1500] [--polls 6000] [--concurrency 48] [--rounds 3]
                                         [--database-url postgresql://user@127.0.0.1:5432/postgres]

Starts a throw-away PostgreSQL cluster (tests/pg_cluster.py; or uses --database-url, where it needs
the right to CREATE DATABASE), then for each configuration, in the order 1, 2, 1, 2 … workers
(`--rounds` pairs):
  - a fresh database (CREATE DATABASE, dropped afterwards) and a fresh standalone simulator
    (`python run.py simulator`): every configuration starts from the same empty state;
  - the gateway as `python run.py --workers N` (N = 1: one process, no gunicorn; N = 2: gunicorn's
    arbiter and 2 aiohttp workers on one port), per-client and per-phone limits off, the reconciler
    pushed out to 600 s;
  - a warm-up (64 pushes, 256 status polls, not counted), then the measured phases, each on new
    keep-alive connections opened once all workers are up:
      POST /stkpush         --pushes pushes, one distinct phone each (254711000000 + i)
      POST /stkpush/status  --polls polls over the ids those pushes returned.
Customers never answer: the numbers are not in the simulator's catalogue, so each push leaves an
open prompt that outlives the run (SIMULATOR_PROMPT_LIFETIME_SECONDS=900): no callback, no query
and no reconciliation adds load, and every status poll reads a pending payment.

Prints, per configuration and phase: requests/s, p50 and p99 latency, errors (anything but a 200
with the expected body), and the CPU seconds each party used (each gateway worker, the simulator,
PostgreSQL, this load generator, anything else on the machine); then the figures of each worker
count (median over rounds) and the ratio 2 workers / 1 worker (median of the per-round ratios).
The load generator is one Python process on the same cores as the server: the figures are what the
machine does with both, not the server alone. Loopback only (127.0.0.1); every process it starts is
stopped at the end, on error or Ctrl-C too; the whole run stops by itself (--time-limit, 300 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.pg_cluster import cluster  # noqa: E402  (the project root is on the path only now)

RUN = str(ROOT / "run.py")
HOST = "127.0.0.1"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")
FIRST_PHONE = 254711000000  # 2547110…: clear of the simulator's catalogue (2547000000xx)
WARM_PHONE = 254712000000
WARM_PUSHES, WARM_POLLS = 64, 256
PHASE_CAP_SECONDS = 90.0  # no phase runs longer, whatever the counts
REQUEST_TIMEOUT_SECONDS = 30.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


# -- processes and their CPU time -----------------------------------------------------------------

def _stat(pid: int) -> list[str] | None:
    """/proc/<pid>/stat's fields after the command name (field 3 onwards), or None if gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()


def children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            fields_ = _stat(int(entry.name))
            if fields_ is not None:
                tree.setdefault(int(fields_[1]), []).append(int(entry.name))
    return tree


def descendants(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    tree = children_of() if tree is None else tree
    found, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        found.append(child)
        todo.extend(tree.get(child, []))
    return found


def cpu_seconds(pid: int, with_reaped: bool = True) -> float:
    """User + system time of `pid` (and of its children it has reaped, if `with_reaped`)."""
    fields_ = _stat(pid)
    if fields_ is None or fields_[0] == "Z":
        return 0.0
    own = int(fields_[11]) + int(fields_[12])  # utime, stime
    reaped = int(fields_[13]) + int(fields_[14]) if with_reaped else 0  # cutime, cstime
    return (own + reaped) / CLOCK_TICK


def tree_cpu(pid: int, tree: dict[int, list[int]]) -> float:
    """CPU seconds of a process and of all its descendants, living or reaped."""
    return cpu_seconds(pid) + sum(cpu_seconds(p) for p in descendants(pid, tree))


def machine_seconds() -> tuple[float, float]:
    """(CPU seconds all cores spent on anything but idle and I/O wait, of which in interrupts: the
    kernel's loopback TCP, mostly, counted to no process) since boot."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values[:8]) - idle) / CLOCK_TICK, (values[5] + values[6]) / CLOCK_TICK


def postmaster_pid(port: int) -> int | None:
    """The PostgreSQL server listening on `port` (its command line names the port), if it is ours to see."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if argv and argv[0].endswith(b"/postgres") and b"-p" in argv:
            i = argv.index(b"-p")
            if i + 1 < len(argv) and argv[i + 1] == str(port).encode():
                return int(entry.name)
    return None


def still_ours(pid: int) -> bool:
    """`pid` is alive (not a zombie) and still runs run.py (a recycled pid would not)."""
    fields_ = _stat(pid)
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return fields_ is not None and fields_[0] != "Z" and RUN.encode() in cmdline


STARTED: list[Server] = []
POSTMASTERS: list[int] = []  # the throw-away cluster's server, checked at the end


class Server:
    """`python run.py …` in a session of its own, its output in a log file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_path: Path) -> None:
        self.name, self.log_path = name, log_path
        with open(log_path, "wb") as out:
            self.proc = subprocess.Popen([sys.executable, RUN, *args], cwd=log_path.parent, env=env,
                                         stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.seen: set[int] = {self.proc.pid}  # every process of its tree ever seen, checked at the end
        STARTED.append(self)

    def pids(self) -> list[int]:
        found = [self.proc.pid, *descendants(self.proc.pid)] if self.proc.poll() is None else []
        self.seen.update(found)
        return found

    async def wait_ready(self, url: str, processes: int, timeout: float = 40.0) -> None:
        """Until `url` answers 200 and the tree counts `processes` processes (arbiter + workers)."""
        deadline = time.monotonic() + timeout
        async with aiohttp.ClientSession() as session:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.name} exited ({self.proc.returncode}):\n{self.tail(40)}")
                with contextlib.suppress(TimeoutError, aiohttp.ClientError):
                    async with session.get(url, timeout=aiohttp.ClientTimeout(total=2)) as resp:
                        if resp.status == 200 and len(self.pids()) >= processes:
                            return
                await asyncio.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready at {url} within {timeout:.0f} s:\n{self.tail(40)}")

    def stop(self) -> list[int]:
        """SIGTERM (gunicorn's arbiter stops its workers gracefully), SIGKILL after 20 s; then
        SIGKILL any process of its tree still there. Returns the pids that had to be killed so."""
        self.pids()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        leftovers = []
        for pid in sorted(self.seen - {self.proc.pid}):
            if still_ours(pid):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
                    leftovers.append(pid)
        return leftovers

    def tail(self, lines: int) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def problems(self, limit: int = 15) -> list[str]:
        """Log lines that report trouble (errors, tracebacks, warnings), the first `limit`."""
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        marks = ("ERROR", "CRITICAL", "Traceback", "WARNING", "Exception", "Error:")
        return [line for line in text.splitlines() if any(m in line for m in marks)][:limit]


# -- the load ---------------------------------------------------------------------------------------

@dataclass
class CpuSnapshot:
    workers: dict[int, float]
    gateway: float
    simulator: float
    postgres: float
    generator: float
    machine: float
    interrupts: float


@dataclass
class Phase:
    name: str
    planned: int
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)
    samples: dict[str, str] = field(default_factory=dict)  # one body per kind of error
    elapsed: float = 0.0
    cut_short: bool = False
    answers: list[dict[str, Any]] = field(default_factory=list)
    cpu: dict[str, float] = field(default_factory=dict)
    worker_cpu: list[float] = field(default_factory=list)

    @property
    def ok(self) -> int:
        return len(self.latencies_ms)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0


Check = Callable[[dict[str, Any]], bool]


async def load(url: str, bodies: list[dict[str, Any]], concurrency: int, deadline: float, check: Check,
               phase: Phase, *, new_connection_each: bool = False) -> Phase:
    """POST every body, `concurrency` at a time, on a session of its own; stop taking new ones at `deadline`."""
    queue = iter(bodies)
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=new_connection_each)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_SECONDS)

    def failed(kind: str, detail: str) -> None:
        phase.errors[kind] += 1
        phase.samples.setdefault(kind, detail[:300])

    async def one(session: aiohttp.ClientSession, body: dict[str, Any]) -> None:
        started = time.perf_counter()
        try:
            async with session.post(url, json=body) as resp:
                text = await resp.text()
                status = resp.status
        except (TimeoutError, aiohttp.ClientError) as exc:
            failed(type(exc).__name__, repr(exc))
            return
        took = (time.perf_counter() - started) * 1000
        if status != 200:
            failed(f"HTTP {status}", text)
            return
        try:
            answer = json.loads(text)
        except ValueError:
            failed("200, not JSON", text)
            return
        if not isinstance(answer, dict) or not check(answer):
            failed("200, unexpected body", text)
            return
        phase.latencies_ms.append(took)
        phase.answers.append(answer)

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in queue:
            if time.monotonic() >= deadline:
                phase.cut_short = True
                return
            await one(session, body)

    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        started = time.perf_counter()
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
        phase.elapsed = time.perf_counter() - started
    return phase


def pushed(answer: dict[str, Any]) -> bool:
    return answer.get("success") is True and bool(answer.get("checkoutRequestId"))


def pending(answer: dict[str, Any]) -> bool:
    return answer.get("status") == "pending"


def push_bodies(first: int, count: int) -> list[dict[str, Any]]:
    return [{"phone": str(first + i), "amount": 10} for i in range(count)]


def poll_bodies(ids: list[str], count: int) -> list[dict[str, Any]]:
    return [{"checkoutRequestId": ids[i % len(ids)]} for i in range(count)] if ids else []


# -- one configuration --------------------------------------------------------------------------------

@dataclass
class Config:
    workers: int
    round: int
    phases: list[Phase] = field(default_factory=list)
    log_problems: list[str] = field(default_factory=list)
    leftovers: list[int] = field(default_factory=list)
    skipped: str = ""


def base_env(**settings: str) -> dict[str, str]:
    """A minimal environment: nothing of the developer's shell reaches the servers' settings."""
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")}
    env.update({"PYTHONUNBUFFERED": "1", **settings})
    return env


def with_database(url: str, name: str) -> str:
    return urlsplit(url)._replace(path=f"/{name}").geturl()


async def admin_sql(url: str, sql: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


class Party:
    """The processes of one configuration whose CPU time is counted."""

    def __init__(self, gateway: Server, simulator: Server, pg_port: int | None) -> None:
        self.gateway, self.simulator = gateway, simulator
        self.postmaster = postmaster_pid(pg_port) if pg_port else None

    def snapshot(self) -> CpuSnapshot:
        machine = machine_seconds()
        tree = children_of()
        arbiter = self.gateway.proc.pid
        workers = {pid: cpu_seconds(pid) for pid in tree.get(arbiter, [])}
        return CpuSnapshot(workers=workers, gateway=tree_cpu(arbiter, tree),
                           simulator=tree_cpu(self.simulator.proc.pid, tree),
                           postgres=tree_cpu(self.postmaster, tree) if self.postmaster else float("nan"),
                           generator=time.process_time(), machine=machine[0], interrupts=machine[1])


def cpu_between(before: CpuSnapshot, after: CpuSnapshot, phase: Phase) -> None:
    names = ("gateway", "simulator", "postgres", "generator", "interrupts", "machine")
    phase.cpu = {n: getattr(after, n) - getattr(before, n) for n in names}
    counted = sum(phase.cpu[n] for n in names[:5] if phase.cpu[n] == phase.cpu[n])  # (NaN: postgres not seen)
    phase.cpu["other"] = phase.cpu["machine"] - counted  # other processes on the machine: other work, noise
    phase.worker_cpu = [after.workers[p] - before.workers.get(p, 0.0) for p in sorted(after.workers)]


async def measure(config: Config, base: str, party: Party, args: argparse.Namespace, deadline: float) -> None:
    warm = Phase("warm-up", WARM_PUSHES)
    await load(f"{base}/stkpush", push_bodies(WARM_PHONE, WARM_PUSHES), 16, deadline, pushed, warm,
               new_connection_each=True)
    warm_ids = [a["checkoutRequestId"] for a in warm.answers]
    await load(f"{base}/stkpush/status", poll_bodies(warm_ids, WARM_POLLS), 16, deadline, pending, warm,
               new_connection_each=True)
    if warm.errors:
        config.phases.append(warm)  # shown, not counted in the figures

    push = Phase("POST /stkpush", args.pushes)
    before = party.snapshot()
    await load(f"{base}/stkpush", push_bodies(FIRST_PHONE, args.pushes), args.concurrency,
               min(deadline, time.monotonic() + PHASE_CAP_SECONDS), pushed, push)
    cpu_between(before, party.snapshot(), push)
    config.phases.append(push)

    ids = [a["checkoutRequestId"] for a in push.answers]
    status = Phase("POST /stkpush/status", args.polls)
    before = party.snapshot()
    await load(f"{base}/stkpush/status", poll_bodies(ids, args.polls), args.concurrency,
               min(deadline, time.monotonic() + PHASE_CAP_SECONDS), pending, status)
    cpu_between(before, party.snapshot(), status)
    config.phases.append(status)


def run_config(config: Config, pg_url: str, pg_port: int | None, workdir: Path, args: argparse.Namespace,
               deadline: float) -> None:
    tag = f"{config.workers}w-r{config.round}"
    db_name = f"bench_workers_{os.getpid()}_{config.workers}w_r{config.round}"
    asyncio.run(admin_sql(pg_url, f'CREATE DATABASE "{db_name}"'))
    servers: list[Server] = []
    try:
        sim_port, gw_port = free_port(), free_port()
        simulator = Server("simulator", ["simulator", "--port", str(sim_port)],
                           base_env(HOST=HOST, MPESA_ENV="simulator", SIMULATOR_PROMPT_LIFETIME_SECONDS="900"),
                           workdir / f"simulator-{tag}.log")
        servers.append(simulator)
        asyncio.run(simulator.wait_ready(f"http://{HOST}:{sim_port}/simulator/api/clock", 1))
        env = base_env(HOST=HOST, PORT=str(gw_port), MPESA_ENV="simulator", MPESA_BASE_URL=f"http://{HOST}:{sim_port}",
                       DATABASE_URL=with_database(pg_url, db_name), PUSH_LIMIT_PER_PHONE="0",
                       PUSH_LIMIT_PER_CLIENT="0", LOOKUP_LIMIT_PER_CLIENT="0", RECONCILE_AFTER_SECONDS="600")
        gateway = Server("gateway", ["--workers", str(config.workers)], env, workdir / f"gateway-{tag}.log")
        servers.append(gateway)
        base = f"http://{HOST}:{gw_port}"
        # 1 worker: one process; N workers: the arbiter and N workers.
        asyncio.run(gateway.wait_ready(f"{base}/health", 1 if config.workers == 1 else config.workers + 1))
        if config.workers > 1:
            time.sleep(1.0)  # the last worker to fork may still be opening its pool
        asyncio.run(measure(config, base, Party(gateway, simulator, pg_port), args, deadline))
        config.log_problems = gateway.problems()
    finally:
        with teardown():
            for server in reversed(servers):
                config.leftovers += server.stop()
            with contextlib.suppress(Exception):
                asyncio.run(admin_sql(pg_url, f'DROP DATABASE IF EXISTS "{db_name}"'))


# -- reporting ------------------------------------------------------------------------------------------

def phase_line(config: Config, phase: Phase) -> str:
    errors = sum(phase.errors.values())
    line = (f"{config.workers} worker{'s' if config.workers > 1 else ' '} round {config.round}  {phase.name:<21}"
            f"{phase.ok:>6} ok {errors:>5} errors  {phase.rate:>7.0f} req/s  "
            f"p50 {statistics.median(phase.latencies_ms) if phase.latencies_ms else float('nan'):6.1f} ms  "
            f"p99 {percentile(phase.latencies_ms, 99):6.1f} ms")
    if phase.cut_short:
        line += f"  (stopped by the time limit after {phase.ok + errors} of {phase.planned})"
    if phase.cpu:
        c = phase.cpu
        split = " + ".join(f"{w:.1f}" for w in phase.worker_cpu)
        workers = f" [workers {split}]" if len(phase.worker_cpu) > 1 else ""
        busy = 100 * c["machine"] / phase.elapsed / (os.cpu_count() or 1)
        line += (f"\n      CPU s over {phase.elapsed:.1f} s: gateway {c['gateway']:.1f}{workers}, "
                 f"simulator {c['simulator']:.1f}, postgres {c['postgres']:.1f}, load generator {c['generator']:.1f}, "
                 f"interrupts {c['interrupts']:.1f}, other processes {c['other']:.1f}; machine busy {busy:.0f}%")
    for kind, count in phase.errors.most_common():
        line += f"\n      error {kind} x{count}: {phase.samples[kind]}"
    return line


def summary(configs: list[Config]) -> list[str]:
    lines = [f"{'':<22}{'1 worker':>22}{'2 workers':>22}{'ratio 2w/1w':>14}  per round"]
    for name in ("POST /stkpush", "POST /stkpush/status"):
        def phases(workers: int, name: str = name) -> dict[int, Phase]:
            return {c.round: p for c in configs if c.workers == workers and not c.skipped
                    for p in c.phases if p.name == name}
        one, two = phases(1), phases(2)
        pairs = [(one[r], two[r]) for r in sorted(one) if r in two and one[r].rate > 0]
        ratios = [b.rate / a.rate for a, b in pairs]

        def figure(ps: dict[int, Phase]) -> str:
            if not ps:
                return "-"
            rate = statistics.median(p.rate for p in ps.values())
            p99 = statistics.median(percentile(p.latencies_ms, 99) for p in ps.values())
            return f"{rate:.0f} req/s p99 {p99:.0f} ms"
        ratio = f"{statistics.median(ratios):.2f}" if ratios else "-"
        lines.append(f"{name:<22}{figure(one):>22}{figure(two):>22}{ratio:>14}  "
                     + ", ".join(f"{r:.2f}" for r in ratios))
    measured = [p for c in configs for p in c.phases if p.cpu]
    capacity = sum(p.elapsed for p in measured) * (os.cpu_count() or 1)
    if capacity:
        busy = sum(p.cpu["machine"] for p in measured) / capacity
        other = sum(p.cpu["other"] for p in measured) / capacity
        lines.append(f"during the measured phases the machine was {100 * busy:.0f}% busy; processes not of this "
                     f"benchmark took {100 * other:.0f}% of it" + (" (figures disturbed by other work)"
                                                                   if other > 0.1 else ""))
    return lines


# -- the run ----------------------------------------------------------------------------------------------

@contextlib.contextmanager
def database(url: str | None) -> Iterator[str]:
    if url:
        yield url
        return
    stack = contextlib.ExitStack()
    started = stack.enter_context(cluster())
    try:
        yield started
    finally:
        with teardown():
            stack.close()  # pg_ctl stop, then the data directory goes


def left_behind() -> list[int]:
    """Processes this run started (servers, gunicorn workers) or that descend from it, still running."""
    pids = {pid for server in STARTED for pid in server.seen if still_ours(pid)}
    pids |= {pid for pid in POSTMASTERS if (_stat(pid) or ["Z"])[0] != "Z"}
    return sorted(pids | set(descendants(os.getpid())))


_signals = {"tearing_down": False, "pending": False}


def _interrupted(signum: int, frame: FrameType | None) -> None:
    """Ctrl-C or SIGTERM: stop through every `finally`; during a teardown, once it is over."""
    if _signals["tearing_down"]:
        _signals["pending"] = True
        return
    raise KeyboardInterrupt


@contextlib.contextmanager
def teardown() -> Iterator[None]:
    """A block that stops processes: an interrupt waits until it is over (else one Ctrl-C at the
    wrong moment would leave a simulator or a gateway running)."""
    outer = _signals["tearing_down"]
    _signals["tearing_down"] = True
    try:
        yield
    finally:
        _signals["tearing_down"] = outer
        if not outer and _signals["pending"]:
            _signals["pending"] = False
            raise KeyboardInterrupt


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--pushes", type=int, default=1500, help="measured pushes per configuration")
    parser.add_argument("--polls", type=int, default=6000, help="measured status polls per configuration")
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3, help="pairs of configurations (1 then 2 workers)")
    parser.add_argument("--time-limit", type=float, default=300.0, help="seconds for the whole run")
    parser.add_argument("--database-url", help="a PostgreSQL server on 127.0.0.1 (its postgres database) "
                                               "instead of a throw-away cluster")
    args = parser.parse_args()
    if not (1 <= args.pushes <= 20_000 and 1 <= args.polls <= 100_000 and 1 <= args.concurrency <= 256
            and 1 <= args.rounds <= 5 and 10 <= args.time_limit <= 900):
        parser.error("pushes 1-20000, polls 1-100000, concurrency 1-256, rounds 1-5, time limit 10-900 s")
    if args.database_url and urlsplit(args.database_url).hostname not in ("127.0.0.1", "localhost"):
        parser.error("--database-url must be on 127.0.0.1")
    signal.signal(signal.SIGTERM, _interrupted)
    signal.signal(signal.SIGINT, _interrupted)  # even if started with SIGINT ignored (`cmd &`)
    started = time.monotonic()
    deadline = started + args.time_limit
    print(f"gateway on PostgreSQL, 1 vs 2 workers (python run.py --workers N); {os.cpu_count()} CPUs; "
          f"{args.pushes} pushes then {args.polls} status polls per configuration, concurrency {args.concurrency}; "
          f"order {', '.join(['1, 2'] * args.rounds)} workers")
    print("customers never answer (open prompts, no callbacks); limits off; reconciler at 600 s; "
          "fresh database and simulator per configuration")
    print(f"NOTE: the load generator (this process, one core at most) shares the {os.cpu_count()} CPUs "
          "with the gateway, the simulator and PostgreSQL", flush=True)
    configs = [Config(w, r) for r in range(1, args.rounds + 1) for w in (1, 2)]
    try:
        run_all(configs, args, deadline)
    except KeyboardInterrupt:
        with teardown():
            for server in STARTED:  # all were stopped on the way out; this is a second net
                server.stop()
        print(f"interrupted; processes left behind: {left_behind() or 'none'}")
        return 130
    print()
    print("\n".join(summary(configs)))
    print(f"processes left behind: {left_behind() or 'none'}; took {time.monotonic() - started:.0f} s")
    return 0


def run_all(configs: list[Config], args: argparse.Namespace, deadline: float) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-workers-") as tmp, database(args.database_url) as pg_url:
        pg_port = urlsplit(pg_url).port
        if not args.database_url and pg_port and (postmaster := postmaster_pid(pg_port)):
            POSTMASTERS.append(postmaster)
        for config in configs:
            if deadline - time.monotonic() < 30:
                config.skipped = "not enough time left"
                print(f"{config.workers} worker(s) round {config.round}: skipped ({config.skipped})", flush=True)
                continue
            try:
                run_config(config, pg_url, pg_port, Path(tmp), args, deadline)
            except RuntimeError as exc:
                config.skipped = str(exc)
                print(f"{config.workers} worker(s) round {config.round}: FAILED: {exc}", flush=True)
                continue
            for phase in config.phases:
                print(phase_line(config, phase), flush=True)
            if config.log_problems:
                print("      gateway log (trouble):\n" + "\n".join(f"        {x}" for x in config.log_problems))
            if config.leftovers:
                print(f"      had to SIGKILL leftover processes: {config.leftovers}")


if __name__ == "__main__":
    sys.exit(main())
