"""Durable payments: an SQLite file by default.

Every change is made inside `async with store.transaction() as tx:`, one isolated unit of work:
the writer connection is held by one unit at a time (an asyncio lock), so no other coroutine's
statements can join it, commit it or roll it back. Reads that decide a write are made through
`tx`, inside the same unit. Reads that only answer a question go to read-only connections that
see committed data only (WAL): a payment by id (a status poll) on the loop's thread, anything
else through aiosqlite, in its own thread.

The writer's statements run on the event loop's thread, synchronously: each takes microseconds,
while a hop to a worker thread per statement, made while holding the write lock, lets every other
task run in between and stretches each unit many times over (bench/checkout_latency.py measured
about half the push throughput that way). The COMMIT is the exception: its fsync takes far
longer than any statement, so it runs off the loop, and the units that queued meanwhile are
committed together by the next one (group commit: each unit is a savepoint; its block ends only
once it is durable). One process writes a SQLite file; several workers need PostgreSQL.

Every callback body that arrives is kept in `callback_log` (capped in size), including
duplicates, forgeries and callbacks for ids we do not know: that log is the last line of defence
for money taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import sqlite3
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from .migrations import CREATE_VERSION_TABLE, MIGRATIONS, VERSION_TABLE

log = logging.getLogger("gateway.storage")

# A genuine Daraja callback is well under 1 KiB; anything bigger is kept as a sample, not whole.
CALLBACK_BODY_CAP = 8 * 1024

# Callback outcomes that still need work (after a crash, the recovery pass finishes them).
OPEN_CALLBACK_OUTCOMES = ("received", "verifying")

# A pending payment still waiting for its STK query this long after the query was due means the
# reconciler is behind (more due than RECONCILE_QUERIES_PER_SECOND lets through, or no process is
# reconciling): warned of in the log (gateway/payments.py), listed on the operator's "Needs
# attention" page (gateway/reports.py).
CHECK_OVERDUE_AFTER = 60.0


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True)
class Transaction:
    checkout_request_id: str
    merchant_request_id: str  # "" when not known (a payment repaired from its push attempt)
    phone: str
    amount: int
    account_reference: str
    description: str
    status: str = "pending"
    result_code: str | None = None
    result_desc: str | None = None
    receipt: str | None = None
    transaction_date: str | None = None
    settled_by: str | None = None
    late: bool = False
    callback_count: int = 0
    raw_callback: str | None = None
    query_attempts: int = 0
    next_query_at: float | None = None
    created_at: str = dataclasses.field(default_factory=utc_now)
    updated_at: str = dataclasses.field(default_factory=utc_now)
    settled_at: str | None = None
    token_hash: str | None = dataclasses.field(default=None, repr=False)
    order_id: str | None = None  # the shop's order this payment is for, if any


@dataclass(frozen=True)
class PushAttempt:
    id: int
    phone: str
    amount: int
    account_reference: str
    description: str
    state: str
    checkout_request_id: str | None
    created_at: str
    created_epoch: float
    order_id: str | None = None
    sender: str | None = None  # the process that sent it (several processes on one database)


@dataclass(frozen=True)
class LoggedCallback:
    id: int
    checkout_request_id: str | None
    received_at: str
    outcome: str
    body: str
    note: str | None


_COLUMNS = [f.name for f in dataclasses.fields(Transaction)]
_INSERT_TX = (f"INSERT INTO transactions ({', '.join(_COLUMNS)}) "
              f"VALUES ({', '.join('?' for _ in _COLUMNS)})")
_INSERT_NEW_TX = _INSERT_TX + " ON CONFLICT (checkout_request_id) DO NOTHING"


class Row(Protocol):
    """A result row, as both stores give it (sqlite3.Row, asyncpg.Record): by name or position,
    and `dict(row)`."""

    def __getitem__(self, key: Any, /) -> Any: ...

    def keys(self) -> Any: ...

    def __len__(self) -> int: ...


def _row_to_tx(row: Row) -> Transaction:
    # Only the dataclass's columns: PostgreSQL's table also has its explicit `rowid`.
    values = {name: row[name] for name in _COLUMNS}
    values["late"] = bool(values["late"])
    return Transaction(**values)


MISSING_BATCH = 500  # accepted attempts without their payment, repaired per recovery pass at most
WRITE_WAIT_SECONDS = 2.0  # how long a unit of work waits for another writer of the SQLite file
KNOWN_PAYMENTS = 20_000  # payments kept in memory until a commit changes them (status polls; see `get`)

# One payment by id, its columns in the dataclass's order (`_tuple_to_tx`): the status poll's read.
_GET_TX = f"SELECT {', '.join(_COLUMNS)} FROM transactions WHERE checkout_request_id = ?"
_LATE = _COLUMNS.index("late")


def _tuple_to_tx(row: tuple[Any, ...]) -> Transaction:
    values = list(row)
    values[_LATE] = bool(values[_LATE])
    return Transaction(*values)


def capped_body(body: Any) -> str:
    text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"), allow_nan=False)
    return text if len(text) <= CALLBACK_BODY_CAP else text[:CALLBACK_BODY_CAP]


class _Reads:
    """Queries shared by the store (committed data) and a transaction (its own connection). SQL is
    written once, with `?` placeholders, in SQL both SQLite and PostgreSQL accept."""

    async def fetch_one(self, sql: str, args: Iterable[Any] = ()) -> Row | None:
        raise NotImplementedError

    async def fetch_all(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        raise NotImplementedError

    async def get(self, checkout_request_id: str) -> Transaction | None:
        row = await self.fetch_one("SELECT * FROM transactions WHERE checkout_request_id = ?", (checkout_request_id,))
        return _row_to_tx(row) if row else None

    async def receipt_owner(self, receipt: str) -> str | None:
        """The payment that already carries this M-Pesa receipt, if any."""
        row = await self.fetch_one("SELECT checkout_request_id FROM transactions WHERE receipt = ?", (receipt,))
        return row[0] if row else None

    async def attempt(self, attempt_id: int) -> PushAttempt | None:
        row = await self.fetch_one("SELECT * FROM push_attempts WHERE id = ?", (attempt_id,))
        return PushAttempt(**dict(row)) if row else None

    async def open_attempts(self, phone: str, amount: float | None, since: float) -> list[PushAttempt]:
        """Pushes to `phone` since `since` whose answer never came (sending, or lost), newest first."""
        sql = ("SELECT * FROM push_attempts WHERE phone = ? AND state IN ('sending', 'unknown') "
               "AND created_epoch >= ?")
        args: list[Any] = [phone, since]
        if amount is not None:
            if amount != int(amount):  # amounts are whole shillings: a fraction matches none
                return []
            sql, args = sql + " AND amount = ?", [*args, int(amount)]
        rows = await self.fetch_all(sql + " ORDER BY created_epoch DESC LIMIT 20", args)
        return [PushAttempt(**dict(r)) for r in rows]

    async def callbacks(self, checkout_request_id: str | None = None, *,
                        outcomes: Iterable[str] | None = None) -> list[LoggedCallback]:
        sql, args = "SELECT * FROM callback_log WHERE 1 = 1", []
        if checkout_request_id is not None:
            sql, args = sql + " AND checkout_request_id = ?", [checkout_request_id]
        if outcomes is not None:
            wanted = list(outcomes)
            sql, args = sql + f" AND outcome IN ({', '.join('?' for _ in wanted)})", [*args, *wanted]
        return [LoggedCallback(**dict(r)) for r in await self.fetch_all(sql + " ORDER BY id", args)]


# What reacts to a change inside the very transaction that makes it: (transaction, the row as it
# is now, the status it had before). The orders mark themselves paid; the webhook outbox writes its
# events. Being in the same transaction, the reaction commits with the change or not at all.
Listener = Callable[["StoreTransaction", Any, "str | None"], Awaitable[None]]


class StoreTransaction(_Reads):
    """One unit of work on one connection, whichever the database. Valid only inside its `async with`.
    A store implements `execute`, `fetch_one` and `fetch_all`; everything else is shared."""

    def __init__(self, listeners: dict[str, list[Listener]] | None = None) -> None:
        self._listeners = listeners or {}

    async def notify(self, kind: str, row: Any, previous_status: str | None) -> None:
        """Tell the listeners of `kind` ("payment", "order") that a row's status changed."""
        for listener in self._listeners.get(kind, ()):
            await listener(self, row, previous_status)

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> tuple[int, int | None]:
        """A write inside this transaction: (rows changed, last inserted row id where the database
        tells it: SQLite only; use `INSERT … RETURNING id` to have it on both)."""
        raise NotImplementedError

    def _writing(self, checkout_request_id: str) -> None:
        """The next write to the payments is to this payment only (a store may keep track)."""

    async def insert(self, tx: Transaction) -> None:
        self._writing(tx.checkout_request_id)
        await self.execute(_INSERT_TX, [getattr(tx, c) for c in _COLUMNS])

    async def insert_new(self, tx: Transaction) -> bool:
        """Insert `tx` unless a payment with its id is stored already (then nothing changes):
        whether it was inserted. One statement where a read and an insert were two."""
        self._writing(tx.checkout_request_id)
        inserted, _ = await self.execute(_INSERT_NEW_TX, [getattr(tx, c) for c in _COLUMNS])
        return inserted == 1

    async def update(self, checkout_request_id: str, expected: dict[str, Any], changes: dict[str, Any]) -> bool:
        """Apply `changes` only if every column in `expected` still has that value. A change of
        status is told to the "payment" listeners, inside this transaction."""
        before = await self.get(checkout_request_id) if "status" in changes else None
        changes = {**changes, "updated_at": utc_now()}
        sets = ", ".join(f"{name} = ?" for name in changes)
        conds = "".join(f" AND {name} IS NOT DISTINCT FROM ?" for name in expected)
        self._writing(checkout_request_id)
        changed, _ = await self.execute(f"UPDATE transactions SET {sets} WHERE checkout_request_id = ?{conds}",
                                        [*changes.values(), checkout_request_id, *expected.values()])
        if changed != 1:
            return False
        if before is not None and before.status != changes["status"]:
            await self.notify("payment", await self.get(checkout_request_id), before.status)
        return True

    async def _insert_returning_id(self, sql: str, args: Iterable[Any]) -> int:
        row = await self.fetch_one(sql + " RETURNING id", args)
        assert row is not None
        return int(row[0])

    async def insert_attempt(self, phone: str, amount: int, account_reference: str, description: str,
                             now: float, order_id: str | None = None, sender: str | None = None) -> int:
        return await self._insert_returning_id(
            "INSERT INTO push_attempts (phone, amount, account_reference, description, state, created_at, "
            "created_epoch, order_id, sender) VALUES (?, ?, ?, ?, 'sending', ?, ?, ?, ?)",
            (phone, amount, account_reference, description, utc_now(), now, order_id, sender))

    async def set_attempt(self, attempt_id: int, state: str, checkout_request_id: str | None = None, *,
                          only_from: tuple[str, ...] = ("sending", "unknown")) -> bool:
        """Move an attempt on, only from one of `only_from` (so an adopted one stays adopted)."""
        marks = ", ".join("?" for _ in only_from)
        changed, _ = await self.execute(
            f"UPDATE push_attempts SET state = ?, checkout_request_id = COALESCE(?, checkout_request_id) "
            f"WHERE id = ? AND state IN ({marks})", (state, checkout_request_id, attempt_id, *only_from))
        return changed == 1

    async def log_callback(self, checkout_request_id: str | None, outcome: str, body: Any,
                           note: str | None = None) -> int:
        return await self._insert_returning_id(
            "INSERT INTO callback_log (checkout_request_id, received_at, outcome, body, note) VALUES (?, ?, ?, ?, ?)",
            (checkout_request_id, utc_now(), outcome, capped_body(body), note))

    async def set_callback_outcome(self, log_id: int, outcome: str, note: str | None = None) -> None:
        await self.execute("UPDATE callback_log SET outcome = ?, note = COALESCE(?, note) WHERE id = ?",
                           (outcome, note, log_id))


# The longest-due pending payments and the longest-due ones given up locally, `limit` (the 2nd and
# 4th argument) of each, in one round trip.
_DUE_FOR_QUERY = (
    "SELECT * FROM (SELECT * FROM transactions WHERE next_query_at IS NOT NULL AND next_query_at <= ? "
    "AND status = 'pending' ORDER BY next_query_at LIMIT ?) AS pending UNION ALL "
    "SELECT * FROM (SELECT * FROM transactions WHERE next_query_at IS NOT NULL AND next_query_at <= ? "
    "AND status = 'failed' AND settled_by = 'timeout' ORDER BY next_query_at LIMIT ?) AS late")


def _next_query(tx: Transaction) -> float:
    return tx.next_query_at if tx.next_query_at is not None else 0.0


def pick_due(due: list[Transaction], limit: int, late_at_least: int = 0) -> list[Transaction]:
    """At most `limit` of `due`, the longest due first: pending ones (a customer is waiting) before
    ones given up locally (a late success is looked for), but for `late_at_least` places kept for
    the latter when that many are due, so neither kind can crowd the other out for good."""
    pending = sorted((tx for tx in due if tx.status == "pending"), key=_next_query)
    late = sorted((tx for tx in due if tx.status != "pending"), key=_next_query)
    n_late = min(len(late), max(limit - len(pending), late_at_least))
    return [*pending[:limit - n_late], *late[:n_late]]


@functools.lru_cache(maxsize=512)
def _may_write_payments(sql: str) -> bool:
    """Whether a statement may change rows of `transactions`: any statement naming the table that
    is not a plain SELECT (an UPDATE, an INSERT, a DELETE, a WITH … UPDATE)."""
    return "transactions" in sql.lower() and sql.lstrip()[:6].upper() != "SELECT"


class SqliteTransaction(StoreTransaction):
    """A unit of work on the SQLite writer connection, run on the event loop's thread."""

    def __init__(self, db: sqlite3.Connection, listeners: dict[str, list[Listener]] | None = None) -> None:
        super().__init__(listeners)
        self._conn: sqlite3.Connection | None = db
        # The payments this unit wrote (their kept copies are dropped once it commits); None: it
        # wrote to the payments in a way that does not name one (raw SQL): drop them all.
        self.payments_written: set[str] | None = set()
        self._next_write: str | None = None

    def _writing(self, checkout_request_id: str) -> None:
        self._next_write = checkout_request_id

    def _run(self, sql: str, args: Iterable[Any] = ()) -> sqlite3.Cursor:
        if self._conn is None:
            raise RuntimeError("this transaction is over")  # a leaked handle cannot write later
        if _may_write_payments(sql):
            payment, self._next_write = self._next_write, None
            if payment is None:
                self.payments_written = None
            elif self.payments_written is not None:
                self.payments_written.add(payment)
        return self._conn.execute(sql, tuple(args))

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> tuple[int, int | None]:
        cur = self._run(sql, args)
        return cur.rowcount, cur.lastrowid

    async def fetch_one(self, sql: str, args: Iterable[Any] = ()) -> Row | None:
        row: sqlite3.Row | None = self._run(sql, args).fetchone()
        return row

    async def fetch_all(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return list(self._run(sql, args).fetchall())


class TransactionStore(_Reads):
    """What the gateway needs of a store, whichever the database: units of work
    (`async with store.transaction() as t:`), reads of committed data, listeners."""

    dialect = ""  # "sqlite" or "postgresql"
    shared = False  # whether other processes may use the same database at once (PostgreSQL)

    def __init__(self) -> None:
        self._listeners: dict[str, list[Listener]] = {}

    def listen(self, kind: str, listener: Listener) -> None:
        """Run `listener` inside every transaction that changes the status of a `kind` row."""
        self._listeners.setdefault(kind, []).append(listener)

    async def open(self) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        raise NotImplementedError

    async def announce(self, checkout_request_id: str) -> None:
        """Tell the other processes on this database that a payment changed (after its commit)."""

    async def watch_changes(self, heard: Callable[[str | None], None]) -> None:
        """Call `heard(checkout_request_id)` whenever another process announces a change, and
        `heard(None)` when changes may have been missed (the feed reconnected). Until `close()`."""

    def transaction(self) -> contextlib.AbstractAsyncContextManager[StoreTransaction]:
        """One isolated unit of work: committed when the block ends, rolled back if it raises (or
        is cancelled while it awaits something else)."""
        raise NotImplementedError

    async def schema_version(self) -> int:
        row = await self.fetch_one(f"SELECT MAX(version) FROM {VERSION_TABLE}")
        return int(row[0]) if row and row[0] is not None else -1

    # -- reads (committed data only) -------------------------------------------------------------

    async def ping(self) -> bool:
        return await self.fetch_one("SELECT 1") is not None

    async def due_candidates(self, now: float, limit: int = 50) -> list[Transaction]:
        """The `limit` longest-due payments of each kind whose next STK query is due (pending; given
        up locally), in one round trip: what a reconciliation pass chooses from (`pick_due`)."""
        return [_row_to_tx(r) for r in await self.fetch_all(_DUE_FOR_QUERY, (now, limit, now, limit))]

    async def stale_attempts(self, older_than: float) -> list[PushAttempt]:
        """Attempts still `sending` long after any answer could have come."""
        rows = await self.fetch_all("SELECT * FROM push_attempts WHERE state = 'sending' AND created_epoch < ? "
                               "ORDER BY id LIMIT 500", (older_than,))
        return [PushAttempt(**dict(r)) for r in rows]

    async def accepted_attempts_without_payment(self, after_id: int = 0) -> list[PushAttempt]:
        """Attempts Daraja accepted (they have an id) whose payment row is missing, of those after
        attempt `after_id` (a range of the primary key: the recovery pass's later runs look only at
        attempts made since its previous run, not at every push ever made)."""
        rows = await self.fetch_all(
            "SELECT a.* FROM push_attempts a LEFT JOIN transactions t ON t.checkout_request_id = a.checkout_request_id "
            "WHERE a.id > ? AND a.state IN ('accepted', 'adopted') AND a.checkout_request_id IS NOT NULL "
            f"AND t.checkout_request_id IS NULL ORDER BY a.id LIMIT {MISSING_BATCH}", (after_id,))
        return [PushAttempt(**dict(r)) for r in rows]

    async def last_attempt_id(self) -> int:
        row = await self.fetch_one("SELECT MAX(id) FROM push_attempts")
        return int(row[0]) if row and row[0] is not None else 0

    async def open_callbacks(self, received_before: str) -> list[LoggedCallback]:
        rows = await self.fetch_all(
            "SELECT * FROM callback_log WHERE outcome IN ('received', 'verifying') AND received_at < ? "
            "ORDER BY id LIMIT 500", (received_before,))
        return [LoggedCallback(**dict(r)) for r in rows]

    async def attempt_counts(self) -> dict[str, int]:
        rows = await self.fetch_all("SELECT state, COUNT(*) FROM push_attempts GROUP BY state")
        return {r[0]: int(r[1]) for r in rows}

    async def callback_log(self, checkout_request_id: str | None = None) -> list[dict[str, Any]]:
        return [dataclasses.asdict(c) for c in await self.callbacks(checkout_request_id)]

    async def count(self) -> int:
        row = await self.fetch_one("SELECT COUNT(*) FROM transactions")
        return int(row[0]) if row else 0


class SqliteTransactionStore(TransactionStore):
    dialect = "sqlite"

    def __init__(self, path: Path | str) -> None:
        super().__init__()
        self.path = Path(path)
        self._writer: sqlite3.Connection | None = None
        self._reader: aiosqlite.Connection | None = None
        self._quick: sqlite3.Connection | None = None
        self._known: OrderedDict[str, Transaction] = OrderedDict()  # read, and unchanged by any commit since
        self._known_version: int | None = None
        self._version_checked = False  # data_version read during this pass of the event loop
        self._committing = False  # the writer's COMMIT is running in a worker thread
        self._write_lock = asyncio.Lock()
        self._batch: _Batch | None = None  # units of work done but not yet committed

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; every one is opened and closed here.
        writer = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        writer.row_factory = sqlite3.Row
        writer.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed payment survives a power cut too, not just a crash of this process.
        writer.execute("PRAGMA synchronous=FULL")
        writer.execute(f"PRAGMA busy_timeout={WRITE_WAIT_SECONDS * 1000:.0f}")
        _migrate(writer)
        # From now on a busy file is waited for in `_begin`, off the loop: a batch of this store
        # may be open while its next units are on their way, and another store (or process) on
        # the file waiting synchronously on the loop's thread would keep them from arriving.
        writer.execute("PRAGMA busy_timeout=0")
        self._writer = writer
        self._reader = await aiosqlite.connect(self.path, isolation_level=None)
        self._reader.row_factory = sqlite3.Row
        await self._reader.execute("PRAGMA busy_timeout=5000")
        await self._reader.execute("PRAGMA query_only=ON")
        # Point reads by primary key (a status poll): run on the loop's thread, like the writer's
        # statements. One such read takes a few microseconds, less than the hop to the reader's
        # thread and back. Never waits for a lock (busy_timeout 0): a busy file sends the read
        # to the reader's thread instead.
        quick = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        quick.execute("PRAGMA query_only=ON")
        quick.execute("PRAGMA busy_timeout=0")
        self._quick = quick

    async def close(self) -> None:
        async with self._write_lock:  # let a transaction under way finish first
            batch, self._batch = self._batch, None
            if batch is not None and self._writer is not None:  # units done, their commit not yet made
                try:
                    self._writer.execute("COMMIT")
                except sqlite3.Error as exc:
                    _rollback(self._writer)
                    batch.done.set_exception(exc)
                else:
                    self._forget_written(batch)
                    batch.done.set_result(None)
            if self._reader is not None:
                await self._reader.close()
            if self._quick is not None:
                self._quick.close()
            if self._writer is not None:
                self._writer.close()
            self._reader = self._writer = self._quick = None

    async def get(self, checkout_request_id: str) -> Transaction | None:
        """A payment as last committed. In autocommit mode each statement reads the newest
        committed snapshot (WAL), never the writer's transaction under way.

        Payments read are kept (`_known`) until a commit changes them:
        - this process's own units: when their COMMIT is over, before anyone hears of it, the kept
          copies of the payments they wrote are dropped (all of them, if a unit wrote to the
          payments other than by id);
        - anyone else's (another process, another connection): SQLite's data_version, as this
          store's writer sees it, moves only for commits it did not make; when it has moved,
          everything kept is dropped. It is read at most once per pass of the event loop (the
          polls that arrive together share it; the look expires at the next pass), and not while
          the writer's own COMMIT runs in its thread: from its BEGIN to the end of its COMMIT the
          writer holds the file's write lock, so no one else can commit meanwhile, and the writer
          looks once more just before that COMMIT.
        So a read sees every commit of this process that any caller has been told of, and every
        other commit made before the previous pass of the loop began (or, while this process's
        COMMIT ends, before its BEGIN). A poll of an unchanged payment costs a dictionary lookup."""
        quick = self._quick
        if quick is None:
            raise RuntimeError("store is not open")
        try:
            if not self._version_checked and not self._committing:
                self._look_for_other_commits()
            if (known := self._known.get(checkout_request_id)) is not None:
                return known
            rows = quick.execute(_GET_TX, (checkout_request_id,)).fetchall()  # to the end: no snapshot held
        except sqlite3.OperationalError:  # the file is busy (a checkpoint, a recovery): wait off the loop
            return await super().get(checkout_request_id)
        if not rows:
            return None
        tx = _tuple_to_tx(rows[0])
        # The row is as new as the last look or newer (nothing awaited since, so this process's
        # writer has not committed): kept until a change drops it.
        if len(self._known) >= KNOWN_PAYMENTS:
            self._known.popitem(last=False)  # the oldest kept
        self._known[checkout_request_id] = tx
        return tx

    def _look_for_other_commits(self) -> None:
        """Drop every payment kept if someone other than this store's writer has committed since
        the last look. On the loop's thread, never while the writer's COMMIT runs in its thread."""
        writer = self._writer
        if writer is None:
            raise RuntimeError("store is not open")
        version = writer.execute("PRAGMA data_version").fetchall()[0][0]
        self._version_checked = True
        asyncio.get_running_loop().call_soon(self._version_expired)  # at the next pass
        if version != self._known_version:
            self._known.clear()
            self._known_version = version

    def _forget_written(self, batch: _Batch) -> None:
        """A batch is committed: its payments' kept copies go, before any caller hears of it."""
        if batch.payments_written is None:
            self._known.clear()
        else:
            for checkout_request_id in batch.payments_written:
                self._known.pop(checkout_request_id, None)

    def _version_expired(self) -> None:
        self._version_checked = False

    def _read(self) -> aiosqlite.Connection:
        if self._reader is None:
            raise RuntimeError("store is not open")
        return self._reader

    async def fetch_one(self, sql: str, args: Iterable[Any] = ()) -> Row | None:
        rows = await self.fetch_all(sql, args)
        return rows[0] if rows else None

    async def fetch_all(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        # Executed and read to the end in one hop: a statement left open between hops would hold
        # its read snapshot, and another coroutine's query on this connection would see that old
        # snapshot instead of what was committed since.
        return list(await self._read().execute_fetchall(sql, tuple(args)))

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        """One isolated unit of work: durable when the block ends, rolled back if it raises (or is
        cancelled while it awaits something else). Units run one at a time.

        Group commit: a unit is a savepoint inside the writer's open SQLite transaction, and the
        units that queued for the writer while one ran are committed with it, by one COMMIT (one
        fsync, made off the event loop's thread). Each block ends only once its unit is committed,
        so nothing is answered or acted on before it is durable; a unit that fails rolls back to
        its savepoint and takes no other unit with it; a COMMIT that fails fails every unit of
        its batch."""
        await self._write_lock.acquire()
        batch: _Batch | None = None
        failed = True
        try:
            db = self._writer
            if db is None:
                raise RuntimeError("store is not open")
            if self._batch is None:
                await _begin(db)
                self._batch = _Batch(asyncio.get_running_loop())
            batch = self._batch
            tx = SqliteTransaction(db, self._listeners)
            db.execute("SAVEPOINT unit")
            try:
                yield tx
            except BaseException:
                self._undo_unit(db, batch)
                raise
            finally:
                tx._conn = None
            if not db.in_transaction:  # SQLite rolled back the whole batch (an I/O error, a full disk)
                lost = _batch_lost()
                self._abandon(batch, lost)
                raise lost
            # Noted first: whatever becomes of the unit, its payments' kept copies go at the COMMIT
            # (dropping a copy is never wrong). A RELEASE that fails undoes the unit like an error.
            batch.note(tx.payments_written)
            try:
                db.execute("RELEASE unit")
            except BaseException:
                self._undo_unit(db, batch)
                raise
            failed = False
        finally:
            self._write_lock.release()
            if batch is not None:
                await self._committed(batch, failed)

    def _undo_unit(self, db: sqlite3.Connection, batch: _Batch) -> None:
        """Roll back one unit's savepoint, leaving the batch's other units as they are; if SQLite
        has already rolled back the whole transaction, or the savepoint cannot be undone, the
        batch is lost: every unit in it fails (none may be reported durable)."""
        if db.in_transaction:
            try:
                db.execute("ROLLBACK TO unit")
                db.execute("RELEASE unit")
                return
            except sqlite3.Error:
                _rollback(db)
        self._abandon(batch, _batch_lost())

    def _abandon(self, batch: _Batch, exc: BaseException) -> None:
        """The batch's work is gone: its units fail, and the next unit starts a new batch."""
        if self._batch is batch:
            self._batch = None
        if not batch.done.done():
            batch.done.set_exception(exc)

    async def _committed(self, batch: _Batch, failed: bool) -> None:
        """Wait until `batch` is committed (or has failed). The batch's first unit to end starts
        the one task that commits it; the others wait for that task (one task per unit took the
        writer twice per unit, each extra time only to find the batch committed already).
        Runs to the end even if the caller is cancelled: the unit is in the batch either way."""
        finishing = batch.committer
        if finishing is None:
            finishing = batch.committer = asyncio.ensure_future(self._commit(batch))
        try:
            await asyncio.shield(finishing)
        except asyncio.CancelledError:
            await asyncio.wait([finishing])
            raise
        if failed:  # the unit's own error is what its caller sees
            with contextlib.suppress(BaseException):
                await batch.done
            return
        await batch.done

    async def _commit(self, batch: _Batch) -> None:
        """Take the writer after the units queued for it (they joined `batch`) and commit them all,
        unless one of them has already."""
        if batch.done.done():
            return
        async with self._write_lock:
            if self._batch is not batch:
                return
            self._batch = None
            db = self._writer
            if db is None:
                batch.done.set_exception(RuntimeError("store is not open"))
                return
            try:
                await self._commit_batch(db, batch)
            finally:
                in_flight, self._committing = self._committing, False
                if not batch.done.done():  # an error no one foresaw: no unit of the batch may wait forever
                    if db.in_transaction and not in_flight:  # the COMMIT never ran: nothing is durable
                        _rollback(db)
                    self._known.clear()
                    batch.done.set_exception(RuntimeError("the batch's COMMIT did not complete"))

    async def _commit_batch(self, db: sqlite3.Connection, batch: _Batch) -> None:
        """`_commit`'s work, with the writer held: the last look at others' commits, then the COMMIT."""
        # Off the loop's thread: the fsync takes far longer than any statement, and the units
        # that queue meanwhile form the next batch. The writer is held until the COMMIT is over,
        # even if this task is cancelled (the connection must not be used while it runs).
        if not self._version_checked:  # the last look at others' commits until this one ends
            try:
                self._look_for_other_commits()
            except Exception:  # noqa: BLE001 - no look, no trust: the batch is committed all the same
                self._known.clear()
        committing = asyncio.ensure_future(asyncio.to_thread(db.execute, "COMMIT"))
        self._committing = True  # (its thread starts at the loop's next pass, not before)
        cancelled = False
        while not committing.done():
            try:
                await asyncio.shield(committing)
            except asyncio.CancelledError:
                cancelled = True
            except Exception:  # noqa: BLE001, S110 - the COMMIT's outcome is read just below
                pass
        self._committing = False
        error = committing.exception()
        if error is not None:
            _rollback(db)
            self._known.clear()  # whatever the failed COMMIT left, nothing kept is trusted
            batch.done.set_exception(error)
        else:
            self._forget_written(batch)
            batch.done.set_result(None)
        if cancelled:
            raise asyncio.CancelledError


def _batch_lost() -> sqlite3.OperationalError:
    return sqlite3.OperationalError("SQLite rolled back the transaction during a unit of work")


class _Batch:
    """Units of work committed together: `done` when their COMMIT is (or has failed)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.done: asyncio.Future[None] = loop.create_future()
        self.payments_written: set[str] | None = set()  # None: any payment may have changed
        self.committer: asyncio.Future[None] | None = None  # the task that commits the batch, once one unit ended

    def note(self, payments: set[str] | None) -> None:
        if payments is None:
            self.payments_written = None
        elif self.payments_written is not None:
            self.payments_written |= payments


async def _begin(db: sqlite3.Connection) -> None:
    """BEGIN IMMEDIATE, waiting up to WRITE_WAIT_SECONDS for another writer of the file to finish,
    in short sleeps on the loop rather than in SQLite's busy handler on the loop's thread."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WRITE_WAIT_SECONDS
    while True:
        try:
            db.execute("BEGIN IMMEDIATE")
            return
        except sqlite3.OperationalError as exc:
            busy = (getattr(exc, "sqlite_errorcode", 0) & 0xFF) == sqlite3.SQLITE_BUSY  # extended codes too
            if not busy or loop.time() >= deadline:
                raise
        await asyncio.sleep(0.002)


def _migrate(db: sqlite3.Connection) -> None:
    """Apply the migrations this database has not had, each recorded with its version, all in one
    transaction taken before the version is read (BEGIN IMMEDIATE: one process migrates, the
    others wait and then find nothing to do)."""
    db.execute("BEGIN IMMEDIATE")
    try:
        db.execute(CREATE_VERSION_TABLE)
        version = _sqlite_version(db)
        for migration in MIGRATIONS[version + 1:]:
            for statement in migration.statements("sqlite"):
                db.execute(statement)
            _record(db, migration.version, migration.about)
            log.info("database upgraded to schema version %d (%s)", migration.version, migration.about)
        db.execute("COMMIT")
    except BaseException:
        _rollback(db)
        raise


def _sqlite_version(db: sqlite3.Connection) -> int:
    """The newest version applied; a database from before the version table (the previous
    release counted its migrations in PRAGMA user_version) is adopted as versions 0-user_version."""
    row = db.execute(f"SELECT MAX(version) FROM {VERSION_TABLE}").fetchone()
    if row[0] is not None:
        return int(row[0])
    if db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'transactions'").fetchone() is None:
        return -1  # a new database
    adopted = int(db.execute("PRAGMA user_version").fetchone()[0])
    for migration in MIGRATIONS[:adopted + 1]:
        _record(db, migration.version, f"{migration.about} (adopted from PRAGMA user_version {adopted})")
    return adopted


def _record(db: sqlite3.Connection, version: int, about: str) -> None:
    db.execute(f"INSERT INTO {VERSION_TABLE} (version, about, applied_at) VALUES (?, ?, ?)",
               (version, about, utc_now()))


def _rollback(db: sqlite3.Connection) -> None:
    with contextlib.suppress(sqlite3.Error):  # nothing to roll back
        db.execute("ROLLBACK")
