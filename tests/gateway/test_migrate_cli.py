"""`python run.py migrate` and `python run.py payments …` as subprocesses, on an SQLite file and on a
throw-away PostgreSQL database (tests/pg_cluster.py): migrations applied one line each, then "up to
date"; a bad or unreachable database refused in one line; the operator's listings read from
PostgreSQL without creating or migrating anything."""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import asyncpg

from gateway.migrations import MIGRATIONS
from gateway.storage import Transaction, utc_now
from gateway.storage_pg import PostgresTransactionStore
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
LATEST = MIGRATIONS[-1].version
APPLIED = [f"applied {m.version}: {m.about}" for m in MIGRATIONS]


def run_py(cwd: Path, database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """run.py in a directory of its own (no .env of the project's is read there: none is there)."""
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env["DATABASE_URL"] = database_url
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=60)


def test_migrate_creates_and_upgrades_an_sqlite_file_then_says_up_to_date(tmp_path):
    url = f"sqlite:///{tmp_path}/data/shop.sqlite3"
    done = run_py(tmp_path, url, "migrate")
    assert (done.returncode, done.stdout.splitlines(), done.stderr) == (0, APPLIED, "")
    with sqlite3.connect(tmp_path / "data" / "shop.sqlite3") as db:
        assert [v for (v,) in db.execute("SELECT version FROM schema_migrations ORDER BY version")] == \
            list(range(LATEST + 1))
    again = run_py(tmp_path, url, "migrate")
    assert (again.returncode, again.stdout, again.stderr) == (
        0, f"up to date: {url} is at schema version {LATEST}\n", "")


def test_migrate_upgrades_a_file_of_the_previous_release_and_keeps_its_rows(tmp_path):
    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as db:  # the release before the version table: user_version 1
        db.executescript(MIGRATIONS[0].sqlite)
        for statement in MIGRATIONS[1].statements("sqlite"):
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.execute("INSERT INTO transactions (checkout_request_id, merchant_request_id, phone, amount, "
                   "account_reference, description, status, created_at, updated_at) VALUES ('ws_CO_old', 'm', "
                   "'254712345678', 10, 'R', 'D', 'completed', '2026-01-01T00:00:00.000Z', "
                   "'2026-01-01T00:00:00.000Z')")
    db.close()
    done = run_py(tmp_path, f"sqlite:///{path}", "migrate")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        *(f"applied {m.version}: {m.about} (adopted from PRAGMA user_version 1)" for m in MIGRATIONS[:2]),
        *APPLIED[2:]]
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT checkout_request_id FROM transactions").fetchall() == [("ws_CO_old",)]
    db.close()


def test_a_bad_or_unreachable_database_is_one_line_and_exit_2(tmp_path):
    for url, says in (("mysql://db/shop", "run.py migrate: DATABASE_URL must start with sqlite:/// or postgresql://"),
                      ("postgresql://db", "run.py migrate: DATABASE_URL must name a host and a database"),
                      (f"postgresql://shop:hunter2-secret@127.0.0.1:{free_port()}/shop",
                       "run.py migrate: cannot connect to postgresql://shop:…@127.0.0.1:")):
        done = run_py(tmp_path, url, "migrate")
        assert (done.returncode, done.stdout) == (2, ""), (url, done.stdout, done.stderr)
        assert done.stderr.startswith(says) and done.stderr.count("\n") == 1, (url, done.stderr)
        assert "hunter2" not in done.stderr and "Traceback" not in done.stderr
    not_a_database = tmp_path / "notes.txt"
    not_a_database.write_text("not a database\n" * 100)
    done = run_py(tmp_path, f"sqlite:///{not_a_database}", "migrate")
    assert done.returncode == 2 and "cannot be read as the gateway's database" in done.stderr, done.stderr
    assert done.stderr.count("\n") == 1


async def _run(cwd: Path, url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return await asyncio.to_thread(run_py, cwd, url, *args)


async def test_migrate_on_postgresql_applies_each_migration_once(postgres_url, tmp_path):
    done = await _run(tmp_path, postgres_url, "migrate")
    assert (done.returncode, done.stdout.splitlines(), done.stderr) == (0, APPLIED, "")
    conn = await asyncpg.connect(postgres_url)
    try:
        assert [r[0] for r in await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")] == \
            list(range(LATEST + 1))
        assert await conn.fetchval("SELECT to_regclass('webhook_events') IS NOT NULL")
    finally:
        await conn.close()
    again = await _run(tmp_path, postgres_url, "migrate")
    assert (again.returncode, again.stdout) == (0, f"up to date: {postgres_url} is at schema version {LATEST}\n")


async def test_a_database_that_does_not_exist_on_the_server_is_one_line(postgres_url, tmp_path):
    missing = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    done = await _run(tmp_path, missing, "migrate")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "no_such_database" in done.stderr and "does not exist" in done.stderr


def _payment(cid: str, status: str, amount: int, receipt: str | None = None) -> Transaction:
    now = utc_now()
    return Transaction(checkout_request_id=cid, merchant_request_id="m", phone="254712345678", amount=amount,
                       account_reference="INV-7", description="D", status=status, receipt=receipt,
                       created_at=now, updated_at=now)


async def test_payments_list_and_totals_read_postgresql(postgres_url, tmp_path):
    store = PostgresTransactionStore(postgres_url)
    await store.open()
    try:
        async with store.transaction() as t:
            await t.insert(_payment("ws_CO_paid", "completed", 1500, "RCP7PAID"))
            await t.insert(_payment("ws_CO_failed", "failed", 40))
            await t.insert(_payment("ws_CO_waiting", "pending", 5))
    finally:
        await store.close()
    listed = await _run(tmp_path, postgres_url, "payments", "list")
    assert listed.returncode == 0, listed.stderr
    assert all(cid in listed.stdout for cid in ("ws_CO_paid", "ws_CO_failed", "ws_CO_waiting"))
    assert "RCP7PAID" in listed.stdout and "KES 1,500" in listed.stdout and "1-3 of 3 payments" in listed.stdout
    found = await _run(tmp_path, postgres_url, "payments", "list", "-q", "RCP7PAID", "--json")
    assert [p["checkout_request_id"] for p in json.loads(found.stdout)["payments"]] == ["ws_CO_paid"]
    totals = await _run(tmp_path, postgres_url, "payments", "totals", "--json")
    assert totals.returncode == 0, totals.stderr
    [day] = json.loads(totals.stdout)
    assert (day["payments"], day["completed"], day["paid_amount"], day["failed"], day["pending"]) == (3, 1, 1500, 1, 1)
    table = await _run(tmp_path, postgres_url, "payments", "totals")
    assert table.returncode == 0 and "KES 1,500" in table.stdout


async def test_payments_on_an_unmigrated_postgresql_database_creates_nothing(postgres_url, tmp_path):
    done = await _run(tmp_path, postgres_url, "payments", "list")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "no schema yet" in done.stderr and "python run.py migrate" in done.stderr
    conn = await asyncpg.connect(postgres_url)
    try:  # not created by looking
        assert await conn.fetchval("SELECT COUNT(*) FROM pg_tables WHERE schemaname = 'public'") == 0
    finally:
        await conn.close()
    unreachable = await _run(tmp_path, f"postgresql://127.0.0.1:{free_port()}/shop", "payments", "totals")
    assert unreachable.returncode == 2 and "cannot connect to" in unreachable.stderr
    assert "Traceback" not in unreachable.stderr
