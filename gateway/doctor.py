"""`python run.py migrate` and `python run.py doctor`: the database's schema and a configuration,
looked at (and, for `migrate`, upgraded) without serving.

    migrate   apply the numbered migrations (gateway/migrations.py) to DATABASE_URL's database, one
              line per migration applied, or "up to date"; exit 0, or 2 with one line saying why not
    doctor    check the configuration: the mode's settings, the database (reachable, migrated to the
              latest version, writable), Daraja's OAuth with the configured credentials, the
              callback URL's shape; one line per check, exit 0 if all pass, else 1

Neither prints a secret: the consumer secret, the passkey, the shop's keys, DATABASE_URL's password
and the callback URL's path (its secret) are taken out of every line.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sqlite3
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TextIO
from urllib.parse import quote, urlsplit

import asyncpg

from .config import DEFAULT_DATABASE_URL, ConfigError, Settings, is_postgresql, load_settings, sqlite_path
from .daraja.errors import AuthRefused, DarajaError, DarajaUnavailable
from .migrations import MIGRATIONS, VERSION_TABLE
from .storage import utc_now
from .storage_pg import open_store  # the gateway's own migration path, as at start-up

LATEST = MIGRATIONS[-1].version
CONNECT_TIMEOUT = 10.0  # seconds for a PostgreSQL server to accept a connection
MIGRATE_HINT = "run `python run.py migrate` (or start the gateway once)"
# The statement of the write check: a row no migration ever writes, rolled back at once.
TEST_WRITE = (f"INSERT INTO {VERSION_TABLE} (version, about, applied_at) "
              "VALUES (-1, 'run.py doctor: a test write, rolled back', {})")


class DatabaseProblem(Exception):
    """The database cannot be used: the message is one line saying why and what to do."""


def hide_password(url: str) -> str:
    """DATABASE_URL without its password (a PostgreSQL URL may carry one)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return parts._replace(netloc=parts.netloc.replace(f":{parts.password}@", ":…@", 1)).geturl()


def masked_url(url: str) -> str:
    """The scheme and host only: the callback's path is its secret, so it is never printed."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/… (path hidden)"


def database_url(env: Mapping[str, str], override: str | None = None) -> str:
    """DATABASE_URL (or `override`), checked as the gateway checks it; DatabaseProblem if unusable."""
    raw = (override or env.get("DATABASE_URL") or "").strip() or DEFAULT_DATABASE_URL
    [setting] = [f for f in fields(Settings) if f.metadata.get("env") == "DATABASE_URL"]
    try:
        url: str = setting.metadata["parse"]("DATABASE_URL", raw)
    except ConfigError as exc:
        raise DatabaseProblem(str(exc)) from None
    return url


# -- the schema ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Schema:
    """What a database says of its schema: the versions in its version table, or (an SQLite file
    of the release before the table) the migrations it counted in PRAGMA user_version."""

    versions: dict[int, str] = field(default_factory=dict)
    legacy: int | None = None  # PRAGMA user_version of a file with tables and no version table
    foreign: bool = False  # tables of the gateway's, but no version table (not a database it wrote)

    @property
    def version(self) -> int:
        return max(self.versions, default=-1)

    def problem(self) -> str | None:
        """None when the schema is the latest; else one line saying what to do."""
        if self.version == LATEST:
            return None
        if self.version > LATEST:
            return (f"schema version {self.version} is newer than this release knows ({LATEST}): "
                    "run the gateway's newer release")
        if self.legacy is not None:
            return (f"the previous release's schema (PRAGMA user_version {self.legacy}, no {VERSION_TABLE} table): "
                    f"{MIGRATE_HINT}")
        if self.foreign:
            return f"tables but no {VERSION_TABLE} table: not a database the gateway wrote"
        if self.version < 0:
            return f"no schema yet (empty database): {MIGRATE_HINT}"
        return f"schema version {self.version} of {LATEST}: {MIGRATE_HINT}"


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "…"


PG_ERRORS = (OSError, TimeoutError, ValueError, asyncpg.PostgresError, asyncpg.InterfaceError)


async def pg_connect(url: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(url, timeout=CONNECT_TIMEOUT)
    except PG_ERRORS as exc:
        raise DatabaseProblem(f"cannot connect to {hide_password(url)}: {_reason(exc)}") from None


def sqlite_connect(path: Path, *, write: bool = False) -> sqlite3.Connection:
    """An existing file only (never created by looking), read-only unless `write`."""
    if not path.is_file():
        raise DatabaseProblem(f"No database at {path} (DATABASE_URL): set DATABASE_URL to the gateway's, "
                              "or start it once")
    mode = "rw" if write else "ro"
    try:
        db = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode={mode}", uri=True, isolation_level=None)
        db.execute("PRAGMA busy_timeout=2000")
    except sqlite3.Error as exc:
        raise DatabaseProblem(f"{path} cannot be opened ({_reason(exc)})") from None
    return db


async def read_schema(url: str) -> Schema:
    """The schema of DATABASE_URL's database, read without creating or changing anything."""
    if is_postgresql(url):
        conn = await pg_connect(url)
        try:
            if not await conn.fetchval("SELECT to_regclass($1) IS NOT NULL", VERSION_TABLE):
                foreign = bool(await conn.fetchval("SELECT to_regclass('transactions') IS NOT NULL"))
                return Schema(foreign=foreign)
            rows = await conn.fetch(f"SELECT version, about FROM {VERSION_TABLE}")
        except PG_ERRORS as exc:
            raise DatabaseProblem(f"{hide_password(url)} cannot be read: {_reason(exc)}") from None
        finally:
            await conn.close()
        return Schema({int(r[0]): str(r[1]) for r in rows})
    path = sqlite_path(url)
    db = sqlite_connect(path)
    try:
        return _sqlite_schema(db)
    except sqlite3.DatabaseError as exc:
        raise DatabaseProblem(f"{path} cannot be read as the gateway's database ({_reason(exc)})") from None
    finally:
        db.close()


def _sqlite_schema(db: sqlite3.Connection) -> Schema:
    def table(name: str) -> bool:
        return db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)).fetchone() \
            is not None

    if table(VERSION_TABLE):
        return Schema({int(v): str(a) for v, a in db.execute(f"SELECT version, about FROM {VERSION_TABLE}")})
    if table("transactions"):
        return Schema(legacy=int(db.execute("PRAGMA user_version").fetchone()[0]))
    return Schema()


async def try_write(url: str) -> None:
    """One write in a transaction that is rolled back: DatabaseProblem if the database refuses it."""
    if is_postgresql(url):
        conn = await pg_connect(url)
        try:
            transaction = conn.transaction()
            await transaction.start()
            try:
                await conn.execute(TEST_WRITE.format("$1"), utc_now())
            finally:
                await transaction.rollback()
        except PG_ERRORS as exc:
            raise DatabaseProblem(f"a test write was refused: {_reason(exc)}") from None
        finally:
            await conn.close()
        return
    db = sqlite_connect(sqlite_path(url), write=True)
    try:
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(TEST_WRITE.format("?"), (utc_now(),))
        finally:
            db.execute("ROLLBACK")
    except sqlite3.Error as exc:
        raise DatabaseProblem(f"a test write was refused: {_reason(exc)}") from None
    finally:
        db.close()


# -- migrate -------------------------------------------------------------------------------------

async def migrate(url: str) -> list[tuple[int, str]]:
    """Apply the migrations DATABASE_URL's database has not had (creating an SQLite file if there is
    none); the (version, about) of each one recorded by this run."""
    fresh_file = not is_postgresql(url) and not sqlite_path(url).exists()
    before = Schema() if fresh_file else await read_schema(url)
    if before.foreign:
        raise DatabaseProblem(before.problem() or "")
    if before.version > LATEST:
        raise DatabaseProblem(before.problem() or "")
    store = open_store(url)
    try:
        await store.open()
        try:
            rows = await store.fetch_all(f"SELECT version, about FROM {VERSION_TABLE} ORDER BY version")
        finally:
            await store.close()
    except (sqlite3.Error, *PG_ERRORS) as exc:
        raise DatabaseProblem(f"{hide_password(url)} could not be migrated: {_reason(exc)}") from None
    return [(int(r[0]), str(r[1])) for r in rows if int(r[0]) not in before.versions]


def migrate_main(argv: Sequence[str], env: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    argparse.ArgumentParser(prog="run.py migrate", description="Apply the numbered migrations to DATABASE_URL's "
                            "database (SQLite or PostgreSQL) and exit; the gateway also applies them at "
                            "start-up.").parse_args(list(argv))
    out = out or sys.stdout
    try:
        url = database_url(os.environ if env is None else env)
        applied = asyncio.run(migrate(url))
    except DatabaseProblem as exc:
        print(f"run.py migrate: {exc}", file=sys.stderr)
        return 2
    for version, about in applied:
        out.write(f"applied {version}: {about}\n")
    if not applied:
        out.write(f"up to date: {hide_password(url)} is at schema version {LATEST}\n")
    return 0


# -- doctor --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None  # None: not run (what it needs failed)
    text: str

    def line(self) -> str:
        mark = "skip" if self.ok is None else "ok" if self.ok else "FAIL"
        return f"{mark:<4}  {self.name}: {self.text}"


def settings_check(env: Mapping[str, str]) -> tuple[Check, Settings | None]:
    try:
        s = load_settings(env)
    except ConfigError as exc:
        return Check("settings", False, str(exc)), None
    daraja = "built-in simulator" if s.simulator_mounted and not env.get("MPESA_BASE_URL") else s.base_url
    return Check("settings", True, f"MPESA_ENV={s.mpesa_env}, APP_ENV={s.app_env}, shortcode {s.shortcode}, "
                                   f"{s.transaction_type}, Daraja at {daraja}"), s


async def database_checks(env: Mapping[str, str]) -> list[Check]:
    """Reachable, migrated to the latest version, writable, durable: four lines."""
    try:
        url = database_url(env)
        schema = await read_schema(url)
    except DatabaseProblem as exc:
        return [Check("database", False, str(exc)), Check("schema", None, "needs the database"),
                Check("writes", None, "needs the database"), Check("durability", None, "needs the database")]
    reached = Check("database", True, f"{hide_password(url)} reached")
    durable = await durability_check(url)
    problem = schema.problem()
    if problem is not None:
        return [reached, Check("schema", False, problem), Check("writes", None, "needs the schema"), durable]
    migrated = Check("schema", True, f"version {schema.version}, the latest")
    try:
        await try_write(url)
    except DatabaseProblem as exc:
        return [reached, migrated, Check("writes", False, f"{exc}: give the database user the right to write "
                                                           "(and not a read-only server or file)"), durable]
    return [reached, migrated, Check("writes", True, "a test write was accepted (and rolled back)"), durable]


async def durability_check(url: str) -> Check:
    """A commit the database acknowledged must survive a crash of its server: PostgreSQL's `fsync`
    and `synchronous_commit` on (SQLite: the gateway sets WAL and synchronous=FULL itself)."""
    name = "durability"
    if not is_postgresql(url):
        return Check(name, True, "SQLite, WAL with synchronous=FULL (the gateway sets both)")
    try:
        conn = await pg_connect(url)
    except DatabaseProblem as exc:
        return Check(name, None, str(exc))
    try:
        fsync, commit = await conn.fetchval("SHOW fsync"), await conn.fetchval("SHOW synchronous_commit")
    except PG_ERRORS as exc:
        return Check(name, None, f"could not read the server's settings ({_reason(exc)})")
    finally:
        await conn.close()
    said = f"fsync={fsync}, synchronous_commit={commit}"
    if fsync != "on" or commit == "off":
        return Check(name, False, f"{said}: a crash of the database server would forget payments it acknowledged; "
                                  "set both to on in postgresql.conf")
    return Check(name, True, said)


async def oauth_check(s: Settings | None) -> Check:
    name = "Daraja OAuth"
    if s is None:
        return Check(name, None, "needs the settings")
    if s.simulator_mounted:
        return Check(name, True, f"simulated (simulator mode: the simulator at {s.base_url} accepts the "
                                 "configured credentials); no request sent to Safaricom")
    import aiohttp  # here only: `run.py migrate` and `run.py payments` start without the web stack

    from .daraja.client import DarajaClient
    async with aiohttp.ClientSession() as session:
        client = DarajaClient(session, base_url=s.base_url, consumer_key=s.consumer_key,
                              consumer_secret=s.consumer_secret, shortcode=s.shortcode, passkey=s.passkey,
                              timeout=s.daraja_timeout)
        try:
            await client.tokens.get()
        except AuthRefused as exc:
            return Check(name, False, f"{s.base_url} refused MPESA_CONSUMER_KEY and MPESA_CONSUMER_SECRET "
                                      f"({_said(exc)}): copy both again from your app on developer.safaricom.co.ke "
                                      f"({s.mpesa_env} keys for MPESA_ENV={s.mpesa_env})")
        except DarajaError as exc:
            return Check(name, False, f"{s.base_url} answered {_said(exc)}: try again in a minute")
        except DarajaUnavailable as exc:
            return Check(name, False, f"{exc} ({s.base_url}): check MPESA_BASE_URL and this machine's "
                                      "access to it")
    return Check(name, True, f"a token from {s.base_url} with the configured key and secret")


def _said(exc: DarajaError) -> str:
    """What Daraja answered, briefly: its code and message, and the HTTP status."""
    said = " ".join(f"{exc.error_code} {exc.error_message}".split())
    return _reason(Exception(f"{said}, HTTP {exc.http_status}" if said else f"HTTP {exc.http_status}"))


def _local(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified or address.is_link_local


def callback_check(mode: str, url: str) -> Check:
    """The shape Daraja needs: https outside simulator mode, a path of its own (its secret), a
    host the internet can reach in production."""
    name = "callback URL"
    if not url:
        return Check(name, False, f"MPESA_ENV={mode} needs CALLBACK_URL, a public https URL Daraja can POST to")
    parts = urlsplit(url)
    fixes = []
    if mode != "simulator" and parts.scheme != "https":
        fixes.append("use https (Daraja posts callbacks to https URLs)")
    elif parts.scheme not in ("http", "https"):
        fixes.append("use an http(s) URL")
    if not parts.hostname:
        fixes.append("name a host")
    elif mode == "production" and _local(parts.hostname):
        fixes.append(f"use a public host name, not {parts.hostname}: Daraja calls it from the internet")
    if parts.path.strip("/") == "":
        fixes.append("give it a path of its own, e.g. /mpesa/callback/<random>")
    if fixes:
        return Check(name, False, f"{masked_url(url)}: " + "; ".join(fixes))
    return Check(name, True, f"{masked_url(url)}" + (": https, a path of its own" if mode != "simulator" else ""))


def _callback_of(env: Mapping[str, str], s: Settings | None) -> tuple[str, str]:
    """The mode and the callback URL: the settings', or (settings refused) the environment's."""
    if s is not None:
        return s.mpesa_env, s.callback_url
    mode = env.get("MPESA_ENV", "").strip() or "simulator"
    url = env.get("CALLBACK_URL", "").strip()
    if not url and mode == "simulator":
        url = "http://127.0.0.1/mpesa/callback"
    return mode, url


def secrets_of(env: Mapping[str, str]) -> list[tuple[str, str]]:
    """(text, replacement) pairs taken out of every line printed, longest first."""
    pairs: list[tuple[str, str]] = []
    for f in fields(Settings):
        name = f.metadata.get("env")
        raw = env.get(name, "").strip() if name else ""
        if not raw or f.repr:
            continue
        if name == "CALLBACK_URL":  # its path is the secret (a short one is no secret, and not hidden)
            path = urlsplit(raw).path
            if len(path.strip("/")) >= 4:
                pairs += [(raw, masked_url(raw)), (path, "/…")]
        elif len(raw) >= 4:
            pairs.append((raw, "…"))
    password = urlsplit(env.get("DATABASE_URL", "").strip()).password
    if password and len(password) >= 4:
        pairs.append((password, "…"))
    return sorted(pairs, key=lambda p: -len(p[0]))


def scrub(text: str, secrets: Sequence[tuple[str, str]]) -> str:
    for secret, replacement in secrets:
        text = text.replace(secret, replacement)
    return text


async def doctor(env: Mapping[str, str]) -> list[Check]:
    checked, s = settings_check(env)
    return [checked, *await database_checks(env), await oauth_check(s), callback_check(*_callback_of(env, s))]


def doctor_main(argv: Sequence[str], env: Mapping[str, str] | None = None, out: TextIO | None = None) -> int:
    argparse.ArgumentParser(prog="run.py doctor", description="Check the configuration (the environment and .env, "
                            "as the server reads them) without serving: settings, database, Daraja's OAuth, "
                            "the callback URL. Exit 0 if every check passes, else 1.").parse_args(list(argv))
    env = dict(os.environ if env is None else env)
    out = out or sys.stdout
    checks = asyncio.run(doctor(env))
    secrets = secrets_of(env)
    for check in checks:
        out.write(scrub(check.line(), secrets) + "\n")
    failed = [c for c in checks if not c.ok]
    out.write("All checks passed.\n" if not failed else
              f"{len(failed)} of {len(checks)} checks did not pass.\n")
    return 0 if not failed else 1
