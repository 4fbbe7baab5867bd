"""Durable transactions: an SQLite file by default.

Every change of state goes through `compare_and_set`, which updates a row only if it is still in
the state the caller read, so two callbacks (or a callback and a reconciliation) that race cannot
both win. Every callback body that arrives is kept in `callback_log`, including duplicates and
callbacks for ids we do not know: that log is the last line of defence for money taken.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiosqlite

SCHEMA = """
CREATE TABLE IF NOT EXISTS transactions (
    checkout_request_id TEXT PRIMARY KEY,
    merchant_request_id TEXT NOT NULL,
    phone               TEXT NOT NULL,
    amount              INTEGER NOT NULL,
    account_reference   TEXT NOT NULL,
    description         TEXT NOT NULL,
    status              TEXT NOT NULL CHECK (status IN ('pending', 'completed', 'failed')),
    result_code         TEXT,
    result_desc         TEXT,
    receipt             TEXT,
    transaction_date    TEXT,
    settled_by          TEXT,
    late                INTEGER NOT NULL DEFAULT 0,
    callback_count      INTEGER NOT NULL DEFAULT 0,
    raw_callback        TEXT,
    query_attempts      INTEGER NOT NULL DEFAULT 0,
    next_query_at       REAL,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    settled_at          TEXT
);
CREATE INDEX IF NOT EXISTS transactions_next_query ON transactions (next_query_at) WHERE next_query_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS callback_log (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    checkout_request_id TEXT,
    received_at         TEXT NOT NULL,
    outcome             TEXT NOT NULL,
    body                TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS callback_log_checkout ON callback_log (checkout_request_id);
-- Every STK push, written before it is sent: if Daraja's answer is lost (a time-out, a crash),
-- the callback that follows can still be matched to what the customer was asked to pay.
CREATE TABLE IF NOT EXISTS push_attempts (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    phone               TEXT NOT NULL,
    amount              INTEGER NOT NULL,
    account_reference   TEXT NOT NULL,
    description         TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('sending', 'accepted', 'refused', 'unknown', 'adopted')),
    checkout_request_id TEXT,
    created_at          TEXT NOT NULL,
    created_epoch       REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS push_attempts_open ON push_attempts (phone, created_epoch)
    WHERE state IN ('sending', 'unknown');
"""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass
class Transaction:
    checkout_request_id: str
    merchant_request_id: str
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


_COLUMNS = [f.name for f in dataclasses.fields(Transaction)]


def _row_to_tx(row: aiosqlite.Row) -> Transaction:
    values = dict(row)
    values["late"] = bool(values["late"])
    return Transaction(**values)


class SqliteTransactionStore:
    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._db: aiosqlite.Connection | None = None

    async def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = await aiosqlite.connect(self.path)
        self._db.row_factory = aiosqlite.Row
        await self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed payment survives a power cut too, not just a crash of this process.
        await self._db.execute("PRAGMA synchronous=FULL")
        await self._db.execute("PRAGMA busy_timeout=5000")
        await self._db.executescript(SCHEMA)
        await self._db.commit()

    async def close(self) -> None:
        if self._db is not None:
            await self._db.close()
            self._db = None

    @property
    def db(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("store is not open")
        return self._db

    async def ping(self) -> bool:
        async with self.db.execute("SELECT 1") as cur:
            return (await cur.fetchone()) is not None

    async def insert(self, tx: Transaction) -> None:
        placeholders = ", ".join("?" for _ in _COLUMNS)
        values = [getattr(tx, c) for c in _COLUMNS]
        await self.db.execute(f"INSERT INTO transactions ({', '.join(_COLUMNS)}) VALUES ({placeholders})", values)
        await self.db.commit()

    async def insert_attempt(self, phone: str, amount: int, account_reference: str, description: str,
                             now: float) -> int:
        cur = await self.db.execute(
            "INSERT INTO push_attempts (phone, amount, account_reference, description, state, created_at, "
            "created_epoch) VALUES (?, ?, ?, ?, 'sending', ?, ?)",
            (phone, amount, account_reference, description, utc_now(), now))
        await self.db.commit()
        return int(cur.lastrowid)

    async def mark_attempt(self, attempt_id: int, state: str) -> None:
        await self.db.execute("UPDATE push_attempts SET state = ? WHERE id = ?", (state, attempt_id))
        await self.db.commit()

    async def record_push(self, attempt_id: int, tx: Transaction, state: str = "accepted") -> bool:
        """Store the payment and close its attempt in one commit. False if either was taken."""
        placeholders = ", ".join("?" for _ in _COLUMNS)
        try:
            cur = await self.db.execute(
                "UPDATE push_attempts SET state = ?, checkout_request_id = ? "
                "WHERE id = ? AND state IN ('sending', 'unknown')", (state, tx.checkout_request_id, attempt_id))
            if cur.rowcount != 1:
                await self.db.rollback()
                return False
            await self.db.execute(f"INSERT INTO transactions ({', '.join(_COLUMNS)}) VALUES ({placeholders})",
                                  [getattr(tx, c) for c in _COLUMNS])
        except aiosqlite.IntegrityError:
            await self.db.rollback()
            return False
        await self.db.commit()
        return True

    async def unmatched_attempt(self, phone: str, amount: float | None, since: float) -> dict[str, Any] | None:
        """The newest push to `phone` since `since` whose answer never came (for a stray callback)."""
        sql = ("SELECT * FROM push_attempts WHERE phone = ? AND state IN ('sending', 'unknown') "
               "AND created_epoch >= ?")
        args: list[Any] = [phone, since]
        if amount is not None:
            sql, args = sql + " AND amount = ?", [*args, int(amount)]
        async with self.db.execute(sql + " ORDER BY created_epoch DESC LIMIT 1", args) as cur:
            row = await cur.fetchone()
        return dict(row) if row else None

    async def get(self, checkout_request_id: str) -> Transaction | None:
        async with self.db.execute("SELECT * FROM transactions WHERE checkout_request_id = ?",
                                   (checkout_request_id,)) as cur:
            row = await cur.fetchone()
        return _row_to_tx(row) if row else None

    async def compare_and_set(self, checkout_request_id: str, expected: dict[str, Any],
                              changes: dict[str, Any]) -> bool:
        """Apply `changes` only if every column in `expected` still has that value."""
        changes = {**changes, "updated_at": utc_now()}
        sets = ", ".join(f"{name} = ?" for name in changes)
        conds = " AND ".join(f"{name} IS ?" for name in expected)
        sql = f"UPDATE transactions SET {sets} WHERE checkout_request_id = ? AND {conds}"
        cur = await self.db.execute(sql, [*changes.values(), checkout_request_id, *expected.values()])
        await self.db.commit()
        return cur.rowcount == 1

    async def due_for_query(self, now: float, limit: int = 50) -> list[Transaction]:
        async with self.db.execute(
            "SELECT * FROM transactions WHERE next_query_at IS NOT NULL AND next_query_at <= ? "
            "AND (status = 'pending' OR (status = 'failed' AND settled_by = 'timeout')) "
            "ORDER BY next_query_at LIMIT ?", (now, limit)) as cur:
            rows = await cur.fetchall()
        return [_row_to_tx(r) for r in rows]

    async def log_callback(self, checkout_request_id: str | None, outcome: str, body: Any) -> None:
        text = body if isinstance(body, str) else json.dumps(body, separators=(",", ":"))
        if outcome == "malformed":
            text = text[:2048]  # junk is kept as a sample, not in full: the endpoint is public
        await self.db.execute(
            "INSERT INTO callback_log (checkout_request_id, received_at, outcome, body) VALUES (?, ?, ?, ?)",
            (checkout_request_id, utc_now(), outcome, text))
        await self.db.commit()

    async def callback_log(self, checkout_request_id: str | None = None) -> list[dict[str, Any]]:
        sql, args = "SELECT * FROM callback_log", ()
        if checkout_request_id is not None:
            sql, args = sql + " WHERE checkout_request_id = ?", (checkout_request_id,)
        async with self.db.execute(sql + " ORDER BY id", args) as cur:
            return [dict(r) for r in await cur.fetchall()]

    async def count(self) -> int:
        async with self.db.execute("SELECT COUNT(*) FROM transactions") as cur:
            row = await cur.fetchone()
        return int(row[0])
