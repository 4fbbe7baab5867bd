"""The schema's history: numbered migrations, applied in order, once each, at start-up.

A database records the versions it has had in `schema_migrations` (one row per version, with when
it was applied). Version 0 is the first release's schema; 1 and 2 are the migrations the SQLite
store used to count in `PRAGMA user_version`, so a file written by that release (user_version 2,
no version table) is adopted as versions 0-2 and upgraded from there, never recreated.

Each migration has an SQLite and a PostgreSQL text. Versions 0-2 are history and differ only where
the dialects must: SQLite's `INTEGER PRIMARY KEY AUTOINCREMENT` is an identity column, `REAL` is
`DOUBLE PRECISION` (PostgreSQL's REAL is 4 bytes), and the tables keyed by text (transactions,
orders, webhook_events) get an explicit `rowid` identity column, which SQLite has implicitly:
queries order by `rowid` (insertion order) on both. New migrations should be one portable text
(`Migration.portable`), written in the SQL both databases accept.

Statements are separated by ";" at the end of a line; no statement may contain one otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

VERSION_TABLE = "schema_migrations"
CREATE_VERSION_TABLE = (f"CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (version INTEGER PRIMARY KEY, "
                        "about TEXT NOT NULL, applied_at TEXT NOT NULL)")


@dataclass(frozen=True)
class Migration:
    version: int
    about: str
    sqlite: str
    postgresql: str

    @classmethod
    def portable(cls, version: int, about: str, sql: str) -> Migration:
        return cls(version, about, sql, sql)

    def text(self, dialect: str) -> str:
        return self.sqlite if dialect == "sqlite" else self.postgresql

    def statements(self, dialect: str) -> list[str]:
        return [s.strip() for s in self.text(dialect).split(";\n") if s.strip() and not _only_comments(s)]


def _only_comments(statement: str) -> bool:
    return all(not line.strip() or line.strip().startswith("--") for line in statement.splitlines())


_SQLITE_0 = """
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

_POSTGRESQL_0 = """
CREATE TABLE IF NOT EXISTS transactions (
    rowid               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
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
    next_query_at       DOUBLE PRECISION,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    settled_at          TEXT
);
CREATE INDEX IF NOT EXISTS transactions_next_query ON transactions (next_query_at) WHERE next_query_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS callback_log (
    id                  BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    checkout_request_id TEXT,
    received_at         TEXT NOT NULL,
    outcome             TEXT NOT NULL,
    body                TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS callback_log_checkout ON callback_log (checkout_request_id);
-- Every STK push, written before it is sent: if Daraja's answer is lost (a time-out, a crash),
-- the callback that follows can still be matched to what the customer was asked to pay.
CREATE TABLE IF NOT EXISTS push_attempts (
    id                  BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    phone               TEXT NOT NULL,
    amount              INTEGER NOT NULL,
    account_reference   TEXT NOT NULL,
    description         TEXT NOT NULL,
    state               TEXT NOT NULL CHECK (state IN ('sending', 'accepted', 'refused', 'unknown', 'adopted')),
    checkout_request_id TEXT,
    created_at          TEXT NOT NULL,
    created_epoch       DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS push_attempts_open ON push_attempts (phone, created_epoch)
    WHERE state IN ('sending', 'unknown');
"""

# 1: the browser's token for its own payment (only its hash is stored); a receipt belongs to
# one payment only; why a callback was not applied; finding attempts and callbacks to repair.
_1 = """
    ALTER TABLE transactions ADD COLUMN token_hash TEXT;
    CREATE UNIQUE INDEX IF NOT EXISTS transactions_receipt ON transactions (receipt) WHERE receipt IS NOT NULL;
    ALTER TABLE callback_log ADD COLUMN note TEXT;
    CREATE INDEX IF NOT EXISTS callback_log_open ON callback_log (outcome) WHERE outcome IN ('received', 'verifying');
    CREATE INDEX IF NOT EXISTS push_attempts_state ON push_attempts (state, created_epoch);
    """

# 2: orders priced on the server; idempotent requests; the webhook outbox (an event is written
# in the same transaction as the change it reports, and delivered from here until it lands).
_SQLITE_2 = """
    CREATE TABLE orders (
        order_id            TEXT PRIMARY KEY,
        reference           TEXT NOT NULL,
        description         TEXT NOT NULL,
        amount              INTEGER NOT NULL CHECK (amount > 0),
        items               TEXT NOT NULL,
        metadata            TEXT,
        status              TEXT NOT NULL CHECK (status IN ('open', 'paid')),
        checkout_request_id TEXT,
        created_at          TEXT NOT NULL,
        updated_at          TEXT NOT NULL,
        paid_at             TEXT
    );
    CREATE INDEX orders_created ON orders (created_at);
    CREATE INDEX orders_reference ON orders (reference);
    ALTER TABLE transactions ADD COLUMN order_id TEXT;
    CREATE INDEX transactions_order ON transactions (order_id) WHERE order_id IS NOT NULL;
    CREATE INDEX transactions_phone ON transactions (phone);
    CREATE INDEX transactions_created ON transactions (created_at);
    ALTER TABLE push_attempts ADD COLUMN order_id TEXT;
    CREATE TABLE idempotency_keys (
        scope          TEXT NOT NULL,
        key            TEXT NOT NULL,
        request_hash   TEXT NOT NULL,
        status         INTEGER,
        response       TEXT,
        created_epoch  REAL NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX idempotency_keys_created ON idempotency_keys (created_epoch);
    CREATE TABLE webhook_events (
        event_id        TEXT PRIMARY KEY,
        type            TEXT NOT NULL,
        body            TEXT NOT NULL,
        created_epoch   REAL NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at REAL,
        last_status     INTEGER,
        last_error      TEXT,
        delivered_at    TEXT
    );
    CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX webhook_events_created ON webhook_events (created_epoch);
    CREATE TABLE webhook_attempts (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id    TEXT NOT NULL,
        at          TEXT NOT NULL,
        status      INTEGER,
        error       TEXT,
        duration_ms REAL
    );
    CREATE INDEX webhook_attempts_event ON webhook_attempts (event_id);
    """

_POSTGRESQL_2 = """
    CREATE TABLE orders (
        rowid               BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        order_id            TEXT PRIMARY KEY,
        reference           TEXT NOT NULL,
        description         TEXT NOT NULL,
        amount              INTEGER NOT NULL CHECK (amount > 0),
        items               TEXT NOT NULL,
        metadata            TEXT,
        status              TEXT NOT NULL CHECK (status IN ('open', 'paid')),
        checkout_request_id TEXT,
        created_at          TEXT NOT NULL,
        updated_at          TEXT NOT NULL,
        paid_at             TEXT
    );
    CREATE INDEX orders_created ON orders (created_at);
    CREATE INDEX orders_reference ON orders (reference);
    ALTER TABLE transactions ADD COLUMN order_id TEXT;
    CREATE INDEX transactions_order ON transactions (order_id) WHERE order_id IS NOT NULL;
    CREATE INDEX transactions_phone ON transactions (phone);
    CREATE INDEX transactions_created ON transactions (created_at);
    ALTER TABLE push_attempts ADD COLUMN order_id TEXT;
    CREATE TABLE idempotency_keys (
        scope          TEXT NOT NULL,
        key            TEXT NOT NULL,
        request_hash   TEXT NOT NULL,
        status         INTEGER,
        response       TEXT,
        created_epoch  DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (scope, key)
    );
    CREATE INDEX idempotency_keys_created ON idempotency_keys (created_epoch);
    CREATE TABLE webhook_events (
        rowid           BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        event_id        TEXT PRIMARY KEY,
        type            TEXT NOT NULL,
        body            TEXT NOT NULL,
        created_epoch   DOUBLE PRECISION NOT NULL,
        state           TEXT NOT NULL CHECK (state IN ('pending', 'delivered', 'failed')),
        attempts        INTEGER NOT NULL DEFAULT 0,
        next_attempt_at DOUBLE PRECISION,
        last_status     INTEGER,
        last_error      TEXT,
        delivered_at    TEXT
    );
    CREATE INDEX webhook_events_due ON webhook_events (next_attempt_at) WHERE state = 'pending';
    CREATE INDEX webhook_events_created ON webhook_events (created_epoch);
    CREATE TABLE webhook_attempts (
        id          BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
        event_id    TEXT NOT NULL,
        at          TEXT NOT NULL,
        status      INTEGER,
        error       TEXT,
        duration_ms DOUBLE PRECISION
    );
    CREATE INDEX webhook_attempts_event ON webhook_attempts (event_id);
    """

# What several gateway processes on one database share: leases (one holder at a time, until a time:
# the OAuth refresh, the recovery pass, a push for an order, each live process's heartbeat), the
# events the abuse limits count, the OAuth token itself, and which process sent each push.
_3 = """
CREATE TABLE leases (
    name        TEXT NOT NULL,
    key         TEXT NOT NULL,
    holder      TEXT NOT NULL,
    until_epoch DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (name, key)
);
CREATE TABLE limit_events (
    event_id TEXT PRIMARY KEY,
    name     TEXT NOT NULL,
    key      TEXT NOT NULL,
    at_epoch DOUBLE PRECISION NOT NULL
);
CREATE INDEX limit_events_key ON limit_events (name, key, at_epoch);
ALTER TABLE push_attempts ADD COLUMN sender TEXT;
CREATE TABLE oauth_tokens (
    name          TEXT PRIMARY KEY,
    token         TEXT NOT NULL,
    expires_epoch DOUBLE PRECISION NOT NULL,
    lifetime      DOUBLE PRECISION NOT NULL,
    fetched_at    TEXT NOT NULL
);
"""

MIGRATIONS: tuple[Migration, ...] = (
    Migration(0, "the first release's schema", _SQLITE_0, _POSTGRESQL_0),
    Migration.portable(1, "payment tokens, unique receipts, callback notes", _1),
    Migration(2, "orders, idempotency keys, the webhook outbox", _SQLITE_2, _POSTGRESQL_2),
    Migration.portable(3, "what several processes share: leases, limit events, the OAuth token", _3),
)
assert [m.version for m in MIGRATIONS] == list(range(len(MIGRATIONS))), "migrations are numbered 0, 1, 2, …"
