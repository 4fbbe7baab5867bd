"""Durable payments in PostgreSQL (asyncpg, a pool): the SQLite store's interface and semantics.

`DATABASE_URL=postgresql://user:pass@host:port/db` selects it. The SQL is the same text the SQLite
store runs (written in the SQL both accept); only its `?` placeholders become `$1, $2, …` here.

Semantics kept from the SQLite store, on purpose, until something finer is designed and tested:

* Units of work are serialized. Each one takes a transaction-scoped advisory lock (`WRITER_LOCK`)
  before its first statement, as SQLite's `BEGIN IMMEDIATE` takes the one write lock, so code that
  reads and then decides a write inside `store.transaction()` sees nothing change in between, in
  this process or in any other one on the same database. Reads outside a transaction (`store.
  fetch_one`, …) take no lock and see committed data only (READ COMMITTED, autocommit).
* Migrations run at `open()` under another advisory lock (`MIGRATION_LOCK`), inside one transaction
  with the version table: several processes starting at once migrate once.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from typing import Any

import asyncpg

from .config import is_postgresql, sqlite_path
from .migrations import CREATE_VERSION_TABLE, MIGRATIONS, VERSION_TABLE
from .storage import Listener, Row, SqliteTransactionStore, StoreTransaction, TransactionStore, utc_now

log = logging.getLogger("gateway.storage")

# The database is not there just now (restarting, unreachable, shutting down): a 503, not a 500.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError, asyncpg.exceptions.OperatorInterventionError)

CHANGES_CHANNEL = "mpesa_payment_changed"  # LISTEN/NOTIFY: "<process> <checkoutRequestId>"
RECONNECT_EVERY = 1.0

# Keys of the advisory locks (any bigint; these spell "mpesa-gw" and "mpesa-mg" in ASCII).
WRITER_LOCK = 0x6D706573612D6777
MIGRATION_LOCK = 0x6D706573612D6D67


@functools.lru_cache(maxsize=1024)
def numbered(sql: str) -> str:
    """`?` placeholders → `$1, $2, …`, leaving quoted text ('…', "…") and comments alone."""
    out: list[str] = []
    n, i, size = 0, 0, len(sql)
    while i < size:
        ch = sql[i]
        if ch in ("'", '"'):
            end = sql.find(ch, i + 1)
            while end != -1 and end + 1 < size and sql[end + 1] == ch:  # '' inside a literal
                end = sql.find(ch, end + 2)
            end = size - 1 if end == -1 else end
            out.append(sql[i:end + 1])
            i = end + 1
        elif sql.startswith("--", i):
            end = sql.find("\n", i)
            end = size if end == -1 else end
            out.append(sql[i:end])
            i = end
        elif ch == "?":
            n += 1
            out.append(f"${n}")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _set_event(event: asyncio.Event, *_: object) -> None:
    event.set()


def _changed(status: str) -> int:
    """Rows changed, from asyncpg's command tag ("UPDATE 3", "INSERT 0 1", "DELETE 0")."""
    last = status.rsplit(" ", 1)[-1]
    return int(last) if last.isdigit() else 0


class PostgresTransaction(StoreTransaction):
    """A unit of work on one pooled connection, inside its transaction."""

    def __init__(self, conn: asyncpg.Connection, listeners: dict[str, list[Listener]] | None = None) -> None:
        super().__init__(listeners)
        self._conn: asyncpg.Connection | None = conn

    def _live(self) -> asyncpg.Connection:
        if self._conn is None:
            raise RuntimeError("this transaction is over")  # a leaked handle cannot write later
        return self._conn

    async def execute(self, sql: str, args: Iterable[Any] = ()) -> tuple[int, int | None]:
        status = await self._live().execute(numbered(sql), *args)
        return _changed(status), None

    async def fetch_one(self, sql: str, args: Iterable[Any] = ()) -> Row | None:
        row: Row | None = await self._live().fetchrow(numbered(sql), *args)
        return row

    async def fetch_all(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return list(await self._live().fetch(numbered(sql), *args))


class PostgresTransactionStore(TransactionStore):
    dialect = "postgresql"
    shared = True

    def __init__(self, dsn: str, *, min_size: int = 1, max_size: int = 10) -> None:
        super().__init__()
        self.dsn = dsn
        self._sizes = (min_size, max_size)
        self._pool: asyncpg.Pool | None = None
        # This process's units of work queue here, before taking a pooled connection: waiting on the
        # advisory lock with one connection each, they would take the whole pool, and the unit of
        # work holding the lock could then not make the plain reads (`store.get`, …) it awaits.
        self._write_lock = asyncio.Lock()
        self.instance = secrets.token_hex(8)  # names this process in its change notices
        self._watcher: asyncio.Task[None] | None = None

    async def open(self) -> None:
        pool = await asyncpg.create_pool(self.dsn, min_size=self._sizes[0], max_size=self._sizes[1])
        try:
            async with pool.acquire() as conn:
                await _migrate(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def close(self) -> None:
        watcher, self._watcher = self._watcher, None
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()  # waits for the connections in use (transactions under way) to come back

    def _live(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("store is not open")
        return self._pool

    async def fetch_one(self, sql: str, args: Iterable[Any] = ()) -> Row | None:
        row: Row | None = await self._live().fetchrow(numbered(sql), *args)
        return row

    async def fetch_all(self, sql: str, args: Iterable[Any] = ()) -> list[Row]:
        return list(await self._live().fetch(numbered(sql), *args))

    async def announce(self, checkout_request_id: str) -> None:
        try:
            await self._live().execute("SELECT pg_notify($1, $2)", CHANGES_CHANNEL,
                                       f"{self.instance} {checkout_request_id}")
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            # Pages elsewhere still poll: they see the change within their polling interval.
            log.warning("could not announce a change of %s to other processes: %s", checkout_request_id, exc)

    async def watch_changes(self, heard: Callable[[str | None], None]) -> None:
        if self._watcher is None:
            self._watcher = asyncio.create_task(self._watch(heard))

    async def _watch(self, heard: Callable[[str | None], None]) -> None:
        """LISTEN on a connection of its own; reconnect after losing it (the database restarting),
        then tell `heard(None)`: whatever changed meanwhile is read again."""
        def on_notice(_conn: object, _pid: int, _channel: str, payload: str) -> None:
            instance, _, checkout_request_id = payload.partition(" ")
            if instance != self.instance and checkout_request_id:
                heard(checkout_request_id)

        connected_before = False
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self.dsn)
                lost = asyncio.Event()
                conn.add_termination_listener(functools.partial(_set_event, lost))
                await conn.add_listener(CHANGES_CHANNEL, on_notice)
                if connected_before:
                    log.info("change feed listening again")
                    heard(None)
                connected_before = True
                await lost.wait()
                log.warning("change feed lost its connection to the database; reconnecting")
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.debug("change feed cannot connect yet: %s", exc)
            finally:
                if conn is not None and not conn.is_closed():
                    with contextlib.suppress(Exception):
                        await conn.close(timeout=2)
            await asyncio.sleep(RECONNECT_EVERY)

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[StoreTransaction]:
        """One isolated unit of work: committed when the block ends, rolled back if it raises (or
        is cancelled). Units of work run one at a time across every process on this database: one
        at a time in this process (an asyncio lock, holding no connection while it waits), then
        under the advisory lock (one connection per process waits there)."""
        async with self._write_lock, self._live().acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", WRITER_LOCK)
            tx = PostgresTransaction(conn, self._listeners)
            try:
                yield tx
            finally:
                tx._conn = None


async def _migrate(conn: asyncpg.Connection) -> None:
    """Apply the migrations this database has not had, each recorded with its version, in one
    transaction under an advisory lock: of several processes starting at once, one migrates and
    the others then find nothing to do."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", MIGRATION_LOCK)
        await conn.execute(CREATE_VERSION_TABLE)
        version = await conn.fetchval(f"SELECT MAX(version) FROM {VERSION_TABLE}")
        version = -1 if version is None else int(version)
        for migration in MIGRATIONS[version + 1:]:
            for statement in migration.statements("postgresql"):
                await conn.execute(statement)
            await conn.execute(f"INSERT INTO {VERSION_TABLE} (version, about, applied_at) VALUES ($1, $2, $3)",
                               migration.version, migration.about, utc_now())
            log.info("database upgraded to schema version %d (%s)", migration.version, migration.about)


def open_store(database_url: str) -> TransactionStore:
    """The store DATABASE_URL names (not yet opened): PostgreSQL, or an SQLite file. Here, beside
    both stores, so that the commands (`run.py migrate`, `payments`) need nothing of the web app."""
    if is_postgresql(database_url):
        return PostgresTransactionStore(database_url)
    return SqliteTransactionStore(sqlite_path(database_url))
