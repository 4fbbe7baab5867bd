"""Entry point.

    python run.py                      the gateway, the pages and (in simulator mode) the simulator
    python run.py --workers N          the same, N processes on one port (PostgreSQL; see README)
    python run.py simulator --port N   the Daraja simulator alone, Daraja's paths at its root
    python run.py sim COMMAND …        drive a running simulator (prompts, pin, cancel, faults, clock …)
    python run.py payments COMMAND …   the operator's view from the database (list, show, unmatched, lost,
                                       late, webhooks, resend, export …; see `run.py payments --help`)
    python run.py migrate              apply the database's migrations (DATABASE_URL) and exit
    python run.py doctor               check the configuration (settings, database, Daraja's OAuth,
                                       the callback URL) without serving; exit 0 if all is well
"""

from __future__ import annotations

import argparse
import asyncio
import atexit
import functools
import gc
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING

from dotenv import load_dotenv

from gateway import doctor
from gateway.config import ConfigError, Settings, is_postgresql, load_settings
from gateway.logs import configure_logging
from simulator.settings import SimulatorConfigError, SimulatorSettings, load_simulator_settings

if TYPE_CHECKING:  # imported where a server is started: the commands (payments, migrate, doctor, sim) start faster
    from aiohttp import web

KEEPALIVE_SECONDS = 15.0
# The garbage collector's thresholds (CPython's: 700, 10, 10). With thousands of keep-alive
# connections open, each holds its last request's objects for seconds: the default young
# generation promoted all of it, and full collections walked every connection's objects about
# once a second, pausing the loop for up to 0.6 s each (bench/open_checkouts.py: p99 over 1 s at
# 5,000 open checkouts). Collected less often, those objects are mostly freed by reference
# counting first; young collections take a few milliseconds, full ones become rare.
GC_THRESHOLDS = (20_000, 50, 100)


def loopback_if_any(host: str) -> str:
    """The host a client on this machine uses to reach a server bound to `host`."""
    return "127.0.0.1" if host in ("", "0.0.0.0", "::") else host


def masked_url(url: str) -> str:
    """The scheme and host only: the callback's path is its secret, so it is never printed."""
    return doctor.masked_url(url)


def database_shown(url: str) -> str:
    """DATABASE_URL without its password (a PostgreSQL URL may carry one)."""
    return doctor.hide_password(url)


def load(env: Mapping[str, str]) -> tuple[Settings, SimulatorSettings | None]:
    """The gateway's settings and, in simulator mode, the simulator's, read from the same
    environment: the simulator accepts the credentials, shortcode and passkey the gateway sends."""
    settings = load_settings(env)
    return settings, load_simulator_settings(env) if settings.simulator_mounted else None


def banner(settings: Settings, simulator: SimulatorSettings | None) -> str:
    lines = [
        f"{settings.business_name} M-Pesa Server Running",
        f"Server: {settings.server_url}",
        f"Frontend: {settings.frontend_url}",
        f"M-Pesa Business Code: {settings.shortcode}",
        f"Mode: {settings.mpesa_env} ({settings.app_env})",
        f"Daraja: {settings.base_url}",
        f"Callback: {masked_url(settings.callback_url)}",
        f"Database: {database_shown(settings.database_url)}",
    ]
    lines.append(f"Pay page: {settings.server_url}/pay.html")
    if simulator is not None:
        lines.append(f"Simulator: {settings.server_url}/simulator (virtual phone: /simulator/phone, "
                     f"PIN {simulator.pin})")
    return "\n".join(lines)


def build_app(settings: Settings, simulator: SimulatorSettings | None = None, *,
              with_simulator: bool = True) -> web.Application:
    """The three parts, composed: the gateway, its pages, and in simulator mode the simulator
    (Daraja's paths under /daraja, its pages and control API under /simulator), configured by
    `simulator` (from `load`). `with_simulator=False`: the simulator runs as its own process
    (MPESA_BASE_URL points at it), as several workers need."""
    from gateway.app import add_callback_route, create_app
    from web.admin import setup_admin
    from web.routes import setup_web

    mounted = simulator if settings.simulator_mounted and with_simulator else None
    if mounted is None and settings.simulator_mounted and with_simulator:
        raise ValueError("simulator mode needs the simulator's settings: build_app(*load(env))")
    app = create_app(settings)
    setup_web(app, simulator_pin=mounted.pin if mounted else None)
    setup_admin(app)  # the operator's pages under /admin, only when ADMIN_TOKEN is set
    if mounted is not None:
        from simulator.app import mount_simulator
        mount_simulator(app, mounted)
    add_callback_route(app)  # last: it must not collide with any route above
    return app


MAX_WORKERS = 64


def worker_count(option: int | None, env: Mapping[str, str], settings: Settings) -> int:
    """How many processes serve: --workers, else WORKERS, else 1. More than one needs a database they
    can share (PostgreSQL) and the simulator running as its own process (its prompts live in one)."""
    raw = str(option) if option is not None else env.get("WORKERS", "").strip() or "1"
    if not raw.isdigit() or not 1 <= int(raw) <= MAX_WORKERS:
        raise ConfigError(f"WORKERS (--workers) must be a whole number from 1 to {MAX_WORKERS}")
    workers = int(raw)
    if workers > 1 and not is_postgresql(settings.database_url):
        raise ConfigError(f"{workers} workers need a database they can share: set DATABASE_URL=postgresql://… "
                          "(an SQLite file is one process's database)")
    if workers > 1 and settings.simulator_mounted and not env.get("MPESA_BASE_URL", "").strip():
        raise ConfigError(f"{workers} workers cannot share the built-in simulator (its prompts live in one process): "
                          "run it alone (python run.py simulator --port 3002) and set "
                          "MPESA_BASE_URL=http://127.0.0.1:3002")
    return workers


def shared_metrics_directory() -> None:
    """With several workers, each counts in files of PROMETHEUS_MULTIPROC_DIR (a new empty directory
    unless one is given) and /metrics on any of them answers the sums (prometheus-client's
    multiprocess mode, chosen when it is imported: this runs first)."""
    if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        directory = tempfile.mkdtemp(prefix="mpesa-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        atexit.register(shutil.rmtree, directory, True)


def tune_gc() -> None:
    """Before serving. What start-up made (modules, routes, templates, settings) lives as long as the
    process: kept out of the garbage collector's full passes, which otherwise walk it all again each
    time (their pauses are the slowest answers under load; bench/simulator_push.py); `pace_collector`
    freezes what lives for seconds too, and unfreezes it all for its full collections. Then the
    thresholds (GC_THRESHOLDS)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def prepare_to_serve(app: web.Application) -> web.Application:
    """What every serving process does with its app (one process, or each worker after the fork)."""
    tune_gc()
    app.cleanup_ctx.append(pace_collector)
    return app


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# What a stop at once leaves, said on its line: the gateway's payments are in its database.
LEFT_FOR_THE_NEXT_START = "; what was in flight is picked up at the next start, as after a crash"


async def stop_at_once_on_a_second_signal(app: web.Application, *, left: str = "") -> None:
    """The first Ctrl-C (or SIGTERM) stops the server gracefully: it stops listening, lets the
    requests in flight finish (a push waits for Daraja's answer, up to DARAJA_TIMEOUT_SECONDS) and
    closes the database. A second one, while that is under way, stops the process at once, with one
    line and no traceback (aiohttp would raise its exit again in the middle of its own clean-up).
    A push cut short that way is no more at risk than after a crash: its attempt was written before
    Daraja was called, and the next start's recovery matches it (test_crash_recovery.py kills the
    process mid-push). An on_shutdown hook, the first: shutting down begins with the first signal.
    `left`: what the stop line adds (LEFT_FOR_THE_NEXT_START for the gateway)."""
    loop = asyncio.get_running_loop()
    for number in STOP_SIGNALS:
        loop.add_signal_handler(number, _stop_now, number, left)


def _stop_now(number: int, left: str) -> None:
    print(f"{signal.Signals(number).name} again: stopping at once{left}.", file=sys.stderr, flush=True)
    os._exit(128 + number)


# Pacing of the garbage collector (`pace_collector`): the loop is behind when a timer of PACE_PERIOD
# fires more than BEHIND late, caught up when less than CAUGHT_UP; off for LONGEST_OFF at most, then
# on for LEAST_ON at least. The young generation is quiet when QUIET_PERIOD went by without a young
# collection and with its count (allocations less releases) grown by less than QUIET_GROWTH. Frozen
# objects wait for a full collection until the process's peak resident memory has grown HEAP_GROWTH
# times since the last one, and by HEAP_HEADROOM bytes at least.
PACE_PERIOD, BEHIND, CAUGHT_UP, LONGEST_OFF, LEAST_ON = 0.05, 0.05, 0.01, 5.0, 1.0
QUIET_PERIOD, QUIET_GROWTH, HEAP_GROWTH, HEAP_HEADROOM = 1.0, GC_THRESHOLDS[0] // 10, 2.0, 512 * 2**20


def peak_memory() -> float:
    """The process's peak resident memory in bytes; 0 where it cannot be read (then nothing is
    frozen after start-up: the collector works as CPython's)."""
    try:
        import resource
    except ImportError:  # (not on Windows)
        return 0.0
    unit = 1 if sys.platform == "darwin" else 1024  # (macOS counts bytes, Linux and the BSDs KiB)
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * unit


async def pace_collector(app: web.Application) -> AsyncIterator[None]:
    """Keep the garbage collector's passes from walking, again and again, objects that live for
    seconds, and keep its automatic passes away from an event loop that is behind.

    A young collection walks every object made since the last one that is still alive, and CPython
    credits every release of an older object against young allocations. With thousands of idle
    keep-alive connections, each holding its last request's objects until its next request (about
    50 per connection: bench/keepalive_objects.py), the count stays under the threshold while the
    young generation grows to all of them; the collection that finally comes walks them all and frees
    none (bench/open_checkouts.py --gc-log: 277-306 ms for 560,000-610,000 objects at 10,000 open
    checkouts, once a minute), and a middle one walks them again (566 ms). So:

    - Quiet: when QUIET_PERIOD goes by with no young collection and the young count grown by less
      than QUIET_GROWTH, what the generations hold is frozen (gc.freeze() moves lists: nothing is
      walked). Those objects are still freed by reference counting when their connection's next
      request comes; no collection walks them. Load that makes garbage (pushes: tasks, futures,
      answers in cycles) grows the count and is collected young as usual, so this leaves it as it
      was; the garbage a freeze does take along (what the count let pass) waits for the full
      collection below.
    - Behind: while the loop is behind, automatic collection is off (walking the waiting requests'
      objects for nothing, again and again, while the backlog grew: 10,000 checkouts opening at once
      spent 1.6-1.8 s of every 10 s collecting and never caught up). It is on again once the loop has
      caught up, or after LONGEST_OFF whatever happens, and then stays on for LEAST_ON; what piled up
      meanwhile is frozen, for the same reason.
    - Bounded: cyclic garbage that was frozen is freed only by a full collection of everything, the
      frozen objects included. One is made when the process's peak resident memory has grown
      HEAP_GROWTH times since the last (a heap-growth rule, like Go's collector's GOGC), so memory
      stays bounded whatever the load, and a process whose memory does not grow pays for none. What
      survives it is frozen again, out of the way of CPython's own full collections. The growth must
      also be HEAP_HEADROOM at least: from a just-started process's 60-70 MB, a warm-up to thousands
      of open checkouts doubles the memory with live connections, not garbage, and the full
      collection that followed walked them all to free next to nothing (bench/open_checkouts.py
      --gc-log: 486 ms and 571 objects freed at 5,000 checkouts, the only slow answers of that
      minute; 870 ms and 321 objects at 10,000, 331 MB). Frozen garbage is that small under such
      load (what makes garbage keeps the young generation busy, so it is not frozen), and the
      headroom bounds it all the same."""
    task = asyncio.ensure_future(_pace(PACE_PERIOD, BEHIND, CAUGHT_UP, LONGEST_OFF, LEAST_ON, QUIET_PERIOD,
                                       QUIET_GROWTH, HEAP_GROWTH, peak_memory, headroom=HEAP_HEADROOM))
    try:
        yield
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        gc.enable()


def young_generation() -> tuple[int, int]:
    """(young collections so far, the young count now: allocations less releases since the last one)."""
    return gc.get_stats()[0]["collections"], gc.get_count()[0]


async def _pace(period: float, behind: float, caught_up: float, longest_off: float, least_on: float,
                quiet: float, quiet_growth: int, growth: float, memory: Callable[[], float],
                observe: Callable[[], tuple[int, int]] = young_generation, headroom: float = 0.0) -> None:
    loop = asyncio.get_running_loop()
    off_at, on_at = loop.time(), float("-inf")  # (LEAST_ON counts from a re-enabling, not from the start)
    checked_at, seen = loop.time(), observe()
    collected_at = memory()  # (start-up was frozen by tune_gc, its memory counted here)

    def freeze() -> None:
        nonlocal collected_at
        if not collected_at:  # (memory unknown: nothing is frozen, nothing could bound it)
            return
        if memory() >= max(collected_at * growth, collected_at + headroom):
            gc.unfreeze()
            gc.collect()
            collected_at = memory()
        gc.freeze()

    while True:
        before = loop.time()
        await asyncio.sleep(period)
        now = loop.time()
        late = now - before - period
        if gc.isenabled():
            if late > behind and now - on_at >= least_on:
                gc.disable()
                off_at = now
            elif now - checked_at >= quiet:
                collections, count = observe()
                if collections == seen[0] and count - seen[1] < quiet_growth:
                    freeze()
                checked_at, seen = now, observe()
        elif late < caught_up or now - off_at >= longest_off:
            freeze()
            gc.enable()
            on_at = now
            checked_at, seen = now, observe()


def serve_workers(make_app: Callable[[], web.Application], host: str, port: int, workers: int) -> None:
    """`workers` processes serving one port: gunicorn's arbiter (it binds the socket, forks the workers,
    starts a new one when one dies, and stops them gracefully on SIGTERM or SIGINT), each worker
    running aiohttp's event loop (aiohttp.GunicornWebWorker) on an app of its own."""
    from gunicorn.app.base import BaseApplication

    bind = f"[{host}]:{port}" if ":" in host else f"{host or '0.0.0.0'}:{port}"
    options = {
        "bind": bind,
        "workers": workers,
        "worker_class": "aiohttp.GunicornWebWorker",
        "keepalive": int(KEEPALIVE_SECONDS),
        "graceful_timeout": 10,
        "timeout": 30,
        "accesslog": None,
        "errorlog": "-",
        "loglevel": "info",
        "proc_name": "mpesa-gateway",
        "control_socket_disable": True,  # no gunicornc socket: two instances on one machine would share its path
    }
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        # A dead worker's gauges are dropped; its counters stay in the sums.
        options["child_exit"] = lambda _server, worker: multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]

    class Server(BaseApplication):  # type: ignore[misc]
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> web.Application:
            # In each worker, after the fork: its own store pool, session, reconciler, collector pacing.
            return prepare_to_serve(make_app())

    Server().run()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["sim"]:
        load_dotenv()
        from simulator.cli import main as sim_main
        return sim_main(argv[1:])
    if argv[:1] == ["payments"]:
        load_dotenv()  # DATABASE_URL, as the server reads it
        from gateway.payments_cli import main as payments_main
        return payments_main(argv[1:])
    if argv[:1] == ["migrate"]:
        load_dotenv()  # DATABASE_URL, as the server reads it
        return doctor.migrate_main(argv[1:])
    if argv[:1] == ["doctor"]:
        load_dotenv()  # the configuration exactly as the server reads it (real environment variables win)
        return doctor.doctor_main(argv[1:])
    parser = argparse.ArgumentParser(prog="run.py", description="M-Pesa payment server and Daraja simulator")
    parser.add_argument("command", nargs="?", default="serve",
                        choices=("serve", "simulator", "sim", "payments", "migrate", "doctor"),
                        help="serve (default), simulator (standalone), sim … (see `run.py sim --help`), "
                             "payments … (see `run.py payments --help`), migrate (the database's "
                             "migrations, then exit) or doctor (check the configuration)")
    parser.add_argument("--port", type=int, help="override PORT")
    parser.add_argument("--host", help="override HOST")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="serve with N processes on one port (override WORKERS; more than 1 needs PostgreSQL)")
    args = parser.parse_args(argv)

    load_dotenv()  # real environment variables win over .env
    configure_logging("text")
    try:
        env = dict(os.environ)  # command-line options win over the environment and .env
        if args.port is not None:
            env["PORT"] = str(args.port)
        if args.host is not None:
            env["HOST"] = args.host
        if args.command == "simulator":
            from simulator.app import create_standalone_app
            simulator = load_simulator_settings(env)  # the shop's settings play no part
            app = create_standalone_app(simulator)
            host, port = simulator.host, simulator.port
            print(f"Daraja simulator running at http://{loopback_if_any(host)}:{port} "
                  f"(consumer key {simulator.consumer_key}, shortcode {simulator.shortcode})", flush=True)
        else:
            settings, simulator_settings = load(env)
            configure_logging(settings.log_format)
            workers = worker_count(args.workers, env, settings)
            host, port = settings.host, settings.port
            if workers > 1:
                if settings.metrics_enabled:
                    shared_metrics_directory()  # before prometheus-client is imported (by build_app)
                # In simulator mode the simulator is the process MPESA_BASE_URL names: none is mounted.
                build_app(settings, with_simulator=False)  # refuses a bad composition before any worker starts
                print(banner(settings, None) + f"\nWorkers: {workers}", flush=True)
                serve_workers(lambda: build_app(settings, with_simulator=False), host, port, workers)
                return 0
            app = build_app(settings, simulator_settings)
            print(banner(settings, simulator_settings), flush=True)
    except (ConfigError, SimulatorConfigError) as exc:
        print(f"Configuration error: {exc}", file=sys.stderr)
        return 2
    # A connection that has not finished a request within KEEPALIVE_SECONDS is closed (aiohttp
    # starts this timer when a connection opens: slow headers are cut too). A body that never
    # finishes is not: the reverse proxy in deploy/ cuts those.
    from aiohttp import web

    left = "" if args.command == "simulator" else LEFT_FOR_THE_NEXT_START  # (--workers: gunicorn's arbiter's own)
    app.on_shutdown.insert(0, functools.partial(stop_at_once_on_a_second_signal, left=left))
    try:
        web.run_app(prepare_to_serve(app), host=host, port=port, print=None, access_log=None,
                    keepalive_timeout=KEEPALIVE_SECONDS)
    except KeyboardInterrupt:  # a second Ctrl-C after the clean-up, as the loop closes: nothing is left to do
        return 128 + signal.SIGINT
    return 0


if __name__ == "__main__":
    sys.exit(main())
