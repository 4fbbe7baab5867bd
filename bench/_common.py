"""What the benchmarks share: free ports, starting and stopping servers, wrk, and payment rows as
the store writes them (for databases seeded in bulk).

Not a benchmark: imported by bench/status_vs_bare.py, bench/status_at_scale.py and
bench/open_checkouts.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[1]
# What benchmarks install for themselves (never dependencies of the project), once per machine.
BENCH_CACHE = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mpesa-bench"
EAT = timezone(timedelta(hours=3))  # Daraja's clock (ids and TransactionDate are in Nairobi time)


def install_once(target: Path, requirement: str, commands: Sequence[Sequence[str]]) -> bool:
    """Install `requirement` into `target` (under BENCH_CACHE) with `commands`, unless an earlier run
    finished doing so; whether it is there. A run that failed half-way is started over."""
    marker = target / "installed"
    if marker.exists():
        return True
    print(f"installing {requirement} in {target} (once)", flush=True)
    shutil.rmtree(target, ignore_errors=True)
    if any(subprocess.run(list(argv), check=False).returncode != 0 for argv in commands):
        return False
    marker.write_text(requirement + "\n")
    return True


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_up(url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{url}: the server exited ({proc.returncode})")
        try:
            requests.get(url, timeout=1)
            return
        except requests.RequestException:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not answer in {timeout} s")


def python_of(root: Path) -> str:
    """The checkout's own interpreter (its .venv), else this one."""
    python = root / ".venv" / "bin" / "python"
    return str(python if python.exists() else sys.executable)


def clean_env(**settings: str) -> dict[str, str]:
    """This environment without any gateway, simulator or database setting, plus `settings`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MPESA_", "SIMULATOR_", "DATABASE_"))}
    env.update(settings)
    return env


def start_process(argv: Sequence[str], cwd: Path, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """A server in its own process group (stopped with `stop`), its output in `log`."""
    out = open(log, "wb")  # noqa: SIM115 - closed with the process
    return subprocess.Popen(list(argv), cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)


def stop(procs: Iterable[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process group still running, then SIGKILL any that has not ended within 10 s."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def migrate(root: Path, database_url: str, work: Path) -> None:
    """Create or upgrade the schema the way production does: `python run.py migrate`."""
    done = subprocess.run([python_of(root), str(root / "run.py"), "migrate"], cwd=work,
                          env=clean_env(DATABASE_URL=database_url), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise SystemExit(f"run.py migrate failed:\n{done.stdout}{done.stderr}")


# -- wrk ---------------------------------------------------------------------------------------------


def lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def post_script(bodies: Sequence[str]) -> str:
    """A wrk script POSTing JSON `bodies` in turn (one body: the same request every time)."""
    if len(bodies) == 1:
        return (f'wrk.method = "POST"\nwrk.body = {lua_string(bodies[0])}\n'
                'wrk.headers["Content-Type"] = "application/json"\n')
    items = ",\n".join(lua_string(b) for b in bodies)
    return ("local bodies = {\n" + items + "\n}\n"
            "local n = 0\n"
            'local headers = {["Content-Type"] = "application/json", ["Accept"] = "application/json"}\n'
            "request = function()\n"
            "  n = n % #bodies + 1\n"
            '  return wrk.format("POST", nil, headers, bodies[n])\n'
            "end\n")


def cpu_seconds(*pids: int) -> float:
    """User + system CPU time of these processes so far (Linux /proc; 0 elsewhere). Unlike requests/s,
    CPU time per request hardly moves when other work shares the machine."""
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return 0.0
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def memory_mb(pid: int) -> tuple[float, float]:
    """(resident, peak resident) memory of a process in MB (Linux /proc; zeros elsewhere)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0, 0.0
    kb = {line.split(":")[0]: int(line.split()[1]) for line in status.splitlines()
          if line.startswith(("VmRSS", "VmHWM"))}
    return kb.get("VmRSS", 0) / 1024, kb.get("VmHWM", 0) / 1024


@dataclass(frozen=True)
class WrkResult:
    rate: float  # requests per second
    p50: float  # ms
    p99: float  # ms
    requests: int
    errors: int  # socket errors (non-2xx answers raise)
    max: float  # ms


def wrk(url: str, script: Path, seconds: int, connections: int, threads: int = 1) -> WrkResult:
    """Run wrk against `url` with a Lua `script`; raise if any answer is not 2xx."""
    out = subprocess.run(["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(script),
                          url], capture_output=True, text=True, timeout=seconds + 30).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out)[1])  # type: ignore[index]
    total = int(re.search(r"(\d+) requests in", out)[1])  # type: ignore[index]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if non2xx:
        raise SystemExit(f"{url}: {non2xx[1]} answers were not 2xx:\n{out}")
    socket_errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = sum(int(x) for x in socket_errors.groups()) if socket_errors else 0

    def percentile(p: str) -> float:
        value, unit = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
        return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]

    value, unit = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", out).groups()  # type: ignore[union-attr]
    longest = float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]
    return WrkResult(rate, percentile("50"), percentile("99"), total, errors, longest)


# -- payment rows as the store writes them ------------------------------------------------------------


def token_of(n: int, salt: str = "bench") -> str:
    """The browser's payment token of seeded payment `n` (as secrets.token_urlsafe(32) looks)."""
    return base64.urlsafe_b64encode(hashlib.sha256(f"{salt}:{n}".encode()).digest()).decode().rstrip("=")


def _base36(n: int, width: int) -> str:
    digits = ""
    while n or len(digits) < width:
        n, d = divmod(n, 36)
        digits = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"[d] + digits
    return digits


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# Failures as the simulator's callbacks word them (code, description).
FAILURES = [("1032", "Request cancelled by user"), ("1037", "DS timeout user cannot be reached"),
            ("1", "The balance is insufficient for the transaction"),
            ("2001", "The initiator information is invalid.")]


@dataclass(frozen=True)
class SeededPayment:
    checkout_request_id: str
    token: str
    phone: str


@dataclass
class Rows:
    transactions: list[tuple[object, ...]]
    attempts: list[tuple[object, ...]]
    callbacks: list[tuple[object, ...]]


TX_COLUMNS = ("checkout_request_id, merchant_request_id, phone, amount, account_reference, description, status, "
              "result_code, result_desc, receipt, transaction_date, settled_by, late, callback_count, raw_callback, "
              "query_attempts, next_query_at, created_at, updated_at, settled_at, token_hash, order_id")
ATTEMPT_COLUMNS = "phone, amount, account_reference, description, state, checkout_request_id, created_at, " \
                  "created_epoch, order_id, sender"
CALLBACK_COLUMNS = "checkout_request_id, received_at, outcome, body, note"


def payment(n: int, created: float, status: str, salt: str = "bench",
            reconcile_after: float = 20.0) -> tuple[SeededPayment, tuple[object, ...], tuple[object, ...],
                                                     tuple[object, ...] | None]:
    """Payment `n`, pushed at `created`, as the gateway leaves it: its `transactions` row (pending,
    or settled by its callback: completed 10 ms later, or failed with one of FAILURES), its
    `push_attempts` row (accepted) and, if settled, its `callback_log` row (applied)."""
    phone = f"2547{n % 100_000_000:08d}"
    local = datetime.fromtimestamp(created, EAT)
    cid = f"ws_CO_{local:%d%m%Y%H%M%S}{local.microsecond // 1000:03d}{phone[3:]}"
    digest = hashlib.sha256(f"{salt}:{n}:mrid".encode()).hexdigest()
    merchant = f"{digest[:4]}-{digest[4:8]}-{digest[8:12]}-{digest[12:24]}{n % 1_000_000:06d}"
    amount = 10 + n % 4990
    token = token_of(n, salt)
    token_hash = hashlib.sha256(token.encode()).hexdigest()
    seeded = SeededPayment(cid, token, phone)
    attempt = (phone, amount, "Payment", "Payment", "accepted", cid, _iso(created - 0.02), created - 0.02, None, None)
    tx: tuple[object, ...]
    if status == "pending":
        tx = (cid, merchant, phone, amount, "Payment", "Payment", "pending", None, None, None, None, None, 0, 0, None,
              0, created + reconcile_after, _iso(created), _iso(created), None, token_hash, None)
        return seeded, tx, attempt, None
    settled = created + 0.01
    if status == "completed":
        receipt = "U" + hashlib.sha256(f"{salt}:{n}:receipt".encode()).hexdigest()[0].upper() + _base36(n, 8)
        date = int(f"{datetime.fromtimestamp(settled, EAT):%Y%m%d%H%M%S}")
        code, desc = "0", "The service request is processed successfully."
        metadata = {"Item": [{"Name": "Amount", "Value": float(amount)},
                             {"Name": "MpesaReceiptNumber", "Value": receipt}, {"Name": "Balance"},
                             {"Name": "TransactionDate", "Value": date},
                             {"Name": "PhoneNumber", "Value": int(phone)}]}
        body = {"Body": {"stkCallback": {"MerchantRequestID": merchant, "CheckoutRequestID": cid, "ResultCode": 0,
                                         "ResultDesc": desc, "CallbackMetadata": metadata}}}
        transaction_date: str | None = str(date)
    else:
        code, desc = FAILURES[n % len(FAILURES)]
        receipt, transaction_date = None, None
        body = {"Body": {"stkCallback": {"MerchantRequestID": merchant, "CheckoutRequestID": cid,
                                         "ResultCode": int(code), "ResultDesc": desc}}}
    raw = json.dumps(body, separators=(",", ":"))
    tx = (cid, merchant, phone, amount, "Payment", "Payment", status, code, desc, receipt, transaction_date,
          "callback", 0, 0, raw, 0, None, _iso(created), _iso(settled), _iso(settled), token_hash, None)
    return seeded, tx, attempt, (cid, _iso(settled), "applied", raw, None)


def payments(count: int, *, first: int = 0, start: float, step: float, status: str | None = None,
             salt: str = "bench", reconcile_after: float = 20.0) -> Iterator[tuple[list[SeededPayment], Rows]]:
    """`count` payments pushed `step` seconds apart from `start`, in batches of up to 10,000.
    `status` None: the mix of a shop's history (85 % completed, 15 % failed); else all `status`."""
    batch_size = 10_000
    for lo in range(first, first + count, batch_size):
        rows = Rows([], [], [])
        seeded = []
        for n in range(lo, min(lo + batch_size, first + count)):
            kind = status or ("failed" if n % 20 in (3, 11, 17) else "completed")
            s, tx, attempt, callback = payment(n, start + (n - first) * step, kind, salt, reconcile_after)
            seeded.append(s)
            rows.transactions.append(tx)
            rows.attempts.append(attempt)
            if callback is not None:
                rows.callbacks.append(callback)
        yield seeded, rows


def insert_sqlite(db: sqlite3.Connection, rows: Rows) -> None:
    db.executemany(f"INSERT INTO transactions ({TX_COLUMNS}) VALUES ({', '.join('?' * 22)})", rows.transactions)
    db.executemany(f"INSERT INTO push_attempts ({ATTEMPT_COLUMNS}) VALUES ({', '.join('?' * 10)})", rows.attempts)
    db.executemany(f"INSERT INTO callback_log ({CALLBACK_COLUMNS}) VALUES (?, ?, ?, ?, ?)", rows.callbacks)


def seed_sqlite(path: Path, batches: Iterable[tuple[list[SeededPayment], Rows]],
                keep_every: int = 1) -> list[SeededPayment]:
    """Insert the payments into an SQLite file already migrated, in one transaction; returns every
    `keep_every`-th of them."""
    db = sqlite3.connect(path, isolation_level=None)
    try:
        db.execute("PRAGMA cache_size=-1000000")  # 1 GB while building: the indexes stay in memory
        db.execute("BEGIN IMMEDIATE")
        kept: list[SeededPayment] = []
        seen = 0
        for seeded, rows in batches:
            kept.extend(s for i, s in enumerate(seeded, seen) if i % keep_every == 0)
            seen += len(seeded)
            insert_sqlite(db, rows)
        db.execute("COMMIT")
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return kept
    finally:
        db.close()
