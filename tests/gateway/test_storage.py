"""The store's contract, run against SQLite and against a real PostgreSQL server (a throw-away
cluster: tests/pg_cluster.py): units of work, committed reads, listeners, rows, migrations."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from gateway import reports
from gateway.migrations import MIGRATIONS
from gateway.storage import (
    CHECK_OVERDUE_AFTER,
    SqliteTransactionStore,
    StoreTransaction,
    Transaction,
    TransactionStore,
    pick_due,
)
from gateway.storage_pg import PostgresTransactionStore, numbered

LATEST = MIGRATIONS[-1].version


def _tx(i: int) -> Transaction:
    return Transaction(checkout_request_id=f"ws_CO_{i}", merchant_request_id=f"m-{i}", phone="254712345678",
                       amount=10, account_reference="R", description="D")


async def _store_with(tmp_path: Any, payments: int) -> SqliteTransactionStore:
    """An open SQLite store holding payments ws_CO_0 … ws_CO_<payments - 1>."""
    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    async with store.transaction() as t:
        for i in range(payments):
            await t.insert(_tx(i))
    return store


@pytest.fixture(params=["sqlite", "postgresql"])
def make_store(request, tmp_path):
    """A factory of stores on one new database (several may be opened on it, as several processes would)."""
    if request.param == "sqlite":
        return lambda: SqliteTransactionStore(tmp_path / "t.sqlite3")
    url = request.getfixturevalue("postgres_url")
    return lambda: PostgresTransactionStore(url, max_size=5)


@pytest.fixture
async def store(make_store):
    opened: TransactionStore = make_store()
    await opened.open()
    yield opened
    await opened.close()


async def test_a_new_payment_is_inserted_once_and_a_stored_one_is_left_as_it_is(store):
    async with store.transaction() as t:
        assert await t.insert_new(_tx(1))
    async with store.transaction() as t:
        await t.update("ws_CO_1", {"status": "pending"}, {"status": "completed", "receipt": "RCP1"})
    again = dataclasses.replace(_tx(1), merchant_request_id="other", amount=99)
    async with store.transaction() as t:
        assert not await t.insert_new(again)  # no error: the unit goes on (and commits what else it does)
        await t.insert(_tx(2))
    stored = await store.get("ws_CO_1")
    assert (stored.status, stored.receipt, stored.amount, stored.merchant_request_id) == ("completed", "RCP1", 10,
                                                                                          "m-1")
    assert await store.count() == 2


async def test_a_payment_is_written_read_and_updated_only_from_what_was_expected(store):
    async with store.transaction() as t:
        await t.insert(_tx(1))
    assert (await store.get("ws_CO_1")).status == "pending"
    async with store.transaction() as t:
        assert await t.update("ws_CO_1", {"status": "pending", "receipt": None},
                              {"status": "completed", "receipt": "RCP1", "late": True})
        assert not await t.update("ws_CO_1", {"status": "pending"}, {"status": "failed"})  # no longer pending
    paid = await store.get("ws_CO_1")
    assert (paid.status, paid.receipt, paid.late) == ("completed", "RCP1", True)
    assert await store.receipt_owner("RCP1") == "ws_CO_1"
    assert await store.count() == 1


async def test_due_queries_go_to_pending_payments_first_but_never_crowd_out_those_given_up(store):
    now = time.time()

    def due(i: int, late: bool, overdue: float) -> Transaction:
        tx = dataclasses.replace(_tx(i), next_query_at=now - overdue)
        return dataclasses.replace(tx, status="failed", settled_by="timeout") if late else tx

    async with store.transaction() as t:
        for i in range(6):  # pending, due for 10, 20, … 60 s
            await t.insert(due(i, False, 10.0 * (i + 1)))
        for i in range(10, 16):  # given up locally, due for longer still
            await t.insert(due(i, True, 1000.0 + i))
        await t.insert(due(20, False, -5.0))  # not due yet
        await t.insert(dataclasses.replace(due(21, False, 500.0), status="completed", settled_by="callback"))
        await t.insert(dataclasses.replace(due(22, True, 2000.0), settled_by="query"))  # Daraja's own answer

    async def ids(limit: int, late_at_least: int) -> list[str]:
        chosen = pick_due(await store.due_candidates(now, limit), limit, late_at_least)
        return [tx.checkout_request_id for tx in chosen]

    assert await ids(5, 1) == ["ws_CO_5", "ws_CO_4", "ws_CO_3", "ws_CO_2", "ws_CO_15"]
    assert await ids(5, 0) == ["ws_CO_5", "ws_CO_4", "ws_CO_3", "ws_CO_2", "ws_CO_1"]
    assert await ids(10, 2) == [f"ws_CO_{i}" for i in (5, 4, 3, 2, 1, 0, 15, 14, 13, 12)]  # the rest to the late
    assert len(await ids(50, 10)) == 12  # every due one, and nothing else
    # What a pass reads before it chooses: the longest due of each kind, so that how late each kind
    # is can be told even when the pass leaves one kind out.
    assert await ids(2, 0) == ["ws_CO_5", "ws_CO_4"]
    candidates = [tx.checkout_request_id for tx in await store.due_candidates(now, 2)]
    assert sorted(candidates) == ["ws_CO_14", "ws_CO_15", "ws_CO_4", "ws_CO_5"]


async def test_overdue_checks_are_pending_payments_a_minute_past_their_query(store):
    """What the operator's "Needs attention" page lists and counts: pending payments whose STK
    query is CHECK_OVERDUE_AFTER or more past its time, the longest overdue first; not those given
    up locally, settled, due only just now, or with no query to come."""
    now = time.time()

    def due(i: int, overdue: float | None, **changes: Any) -> Transaction:
        return dataclasses.replace(_tx(i), next_query_at=None if overdue is None else now - overdue, **changes)

    async with store.transaction() as t:
        await t.insert(due(1, CHECK_OVERDUE_AFTER + 300))
        await t.insert(due(2, CHECK_OVERDUE_AFTER))  # exactly at the threshold: overdue
        await t.insert(due(3, CHECK_OVERDUE_AFTER - 1))  # not yet
        await t.insert(due(4, CHECK_OVERDUE_AFTER + 50))
        await t.insert(due(5, CHECK_OVERDUE_AFTER + 900, status="failed", settled_by="timeout"))  # given up locally
        await t.insert(due(6, CHECK_OVERDUE_AFTER + 900, status="completed", settled_by="callback"))
        await t.insert(due(7, None))  # no query to come
    checks = await reports.overdue_checks(store, now)
    assert [(c.payment.checkout_request_id, round(c.overdue_seconds)) for c in checks] == [
        ("ws_CO_1", CHECK_OVERDUE_AFTER + 300), ("ws_CO_4", CHECK_OVERDUE_AFTER + 50), ("ws_CO_2", CHECK_OVERDUE_AFTER)]
    assert [c.overdue_text for c in checks] == ["6 min 0 s", "1 min 50 s", "1 min 0 s"]
    assert [c.payment.checkout_request_id for c in await reports.overdue_checks(store, now, limit=1)] == ["ws_CO_1"]
    assert (await reports.attention(store, now)).overdue_checks == 3
    assert (await reports.attention(store, now - 250)).overdue_checks == 1  # 250 s earlier: the first only
    assert (await reports.attention(store, now - 400)).overdue_checks == 0


async def test_rows_are_read_by_name_by_position_and_as_a_dict(store):
    async with store.transaction() as t:
        await t.insert(_tx(1))
        row = await t.fetch_one("SELECT checkout_request_id, amount FROM transactions WHERE amount = ?", (10,))
        assert (row[0], row["amount"], dict(row), len(row)) == ("ws_CO_1", 10, {"checkout_request_id": "ws_CO_1",
                                                                                "amount": 10}, 2)
    [row] = await store.fetch_all("SELECT phone, 'it''s ?' AS quoted FROM transactions WHERE phone = ?",
                                  ("254712345678",))
    assert (row["phone"], row[1]) == ("254712345678", "it's ?")
    assert await store.fetch_one("SELECT * FROM transactions WHERE checkout_request_id = ?", ("none",)) is None


async def test_ids_of_attempts_and_callbacks_come_back_from_their_insert(store):
    async with store.transaction() as t:
        first = await t.insert_attempt("254712345678", 10, "R", "D", 100.0)
        second = await t.insert_attempt("254712345678", 10, "R", "D", 101.5)
        assert second > first
        assert await t.set_attempt(first, "accepted", "ws_CO_1")
        assert not await t.set_attempt(first, "refused")  # only from sending/unknown
        log_id = await t.log_callback("ws_CO_1", "received", {"Body": {}})
        await t.set_callback_outcome(log_id, "applied", "fine")
    assert [a.id for a in await store.open_attempts("254712345678", 10.0, 0)] == [second]
    assert await store.open_attempts("254712345678", 10.5, 0) == []
    assert (await store.attempt(first)).state == "accepted"
    assert await store.attempt_counts() == {"accepted": 1, "sending": 1}
    [logged] = await store.callbacks("ws_CO_1")
    assert (logged.id, logged.outcome, logged.note) == (log_id, "applied", "fine")


async def test_a_failing_unit_of_work_never_takes_another_with_it(store):
    """50 pairs at once: one transaction of each pair fails after writing; the other's write stands."""

    async def good(i: int) -> None:
        async with store.transaction() as t:
            await t.insert(_tx(i))
            await asyncio.sleep(0)  # let the other coroutine run in between

    async def bad(i: int) -> None:
        with pytest.raises(RuntimeError):
            async with store.transaction() as t:
                await t.insert(_tx(10_000 + i))
                await asyncio.sleep(0)
                raise RuntimeError("this unit of work fails")

    await asyncio.gather(*(coro for i in range(50) for coro in (good(i), bad(i))))
    assert await store.count() == 50
    assert [await store.get(f"ws_CO_{10_000 + i}") for i in range(50)] == [None] * 50


async def test_units_of_work_are_isolated_read_then_write(make_store):
    """Read a number, yield, write it plus one: from two stores (two processes' worth of
    connections) at once, no increment is lost, as with SQLite's single writer."""
    # SQLite is written by one process (a second writer in this event loop's thread would block
    # it): there, both are the same store.
    first = make_store()
    stores = [first, first if isinstance(first, SqliteTransactionStore) else make_store()]
    for s in set(stores):
        await s.open()
    try:
        async with stores[0].transaction() as t:
            await t.insert(_tx(1))

        async def increment(s: TransactionStore) -> None:
            async with s.transaction() as t:
                row = await t.fetch_one("SELECT query_attempts FROM transactions WHERE checkout_request_id = ?",
                                        ("ws_CO_1",))
                await asyncio.sleep(0.001)
                await t.execute("UPDATE transactions SET query_attempts = ? WHERE checkout_request_id = ?",
                                (row[0] + 1, "ws_CO_1"))

        await asyncio.gather(*(increment(stores[i % 2]) for i in range(40)))
        assert (await stores[1].get("ws_CO_1")).query_attempts == 40
    finally:
        for s in set(stores):
            await s.close()


async def test_readers_never_see_a_transaction_before_it_commits(store):
    inserted, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with store.transaction() as t:
            await t.insert(_tx(1))
            inserted.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await inserted.wait()
    assert await store.get("ws_CO_1") is None  # a status poll now says "not found", not a ghost
    release.set()
    await task
    assert await store.get("ws_CO_1") is not None


async def test_a_status_read_never_sees_a_change_before_it_commits(store):
    async with store.transaction() as t:
        await t.insert(_tx(1))
    changed, release = asyncio.Event(), asyncio.Event()

    async def writer() -> None:
        async with store.transaction() as t:
            assert await t.update("ws_CO_1", {"status": "pending"}, {"status": "completed", "receipt": "R1"})
            changed.set()
            await release.wait()

    task = asyncio.create_task(writer())
    await changed.wait()
    seen = await store.get("ws_CO_1")
    assert seen is not None and (seen.status, seen.receipt) == ("pending", None)  # not paid until it is
    release.set()
    await task
    seen = await store.get("ws_CO_1")
    assert seen is not None and (seen.status, seen.receipt) == ("completed", "R1")


async def test_polls_in_one_pass_of_the_loop_share_one_look_at_the_file_version(tmp_path):
    """A hundred polls that arrive together cost one `PRAGMA data_version`, not a hundred; the
    next pass looks again."""
    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    try:
        async with store.transaction() as t:
            await t.insert(_tx(1))
        statements: list[str] = []
        assert store._quick is not None and store._writer is not None
        store._quick.set_trace_callback(statements.append)
        store._writer.set_trace_callback(statements.append)  # the writer looks at the version
        answers = await asyncio.gather(*(store.get("ws_CO_1") for _ in range(100)))
        assert {a.checkout_request_id for a in answers if a} == {"ws_CO_1"} and len(answers) == 100
        assert statements.count("PRAGMA data_version") == 1
        await asyncio.sleep(0)
        await store.get("ws_CO_1")
        assert statements.count("PRAGMA data_version") == 2
    finally:
        await store.close()


async def test_a_payment_kept_in_memory_is_never_older_than_the_sqlite_file(tmp_path, monkeypatch):
    """Status polls are answered from memory while the file is unchanged; a change committed by
    anyone (this store's writer, another connection, another process) is seen by a read in a
    later pass of the event loop (the file's version is read at most once per pass)."""
    monkeypatch.setattr("gateway.storage.KNOWN_PAYMENTS", 3)
    store = await _store_with(tmp_path, 5)
    try:
        first = await store.get("ws_CO_1")
        assert await store.get("ws_CO_1") is first  # unchanged file: from memory
        other = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
        other.execute("UPDATE transactions SET status = 'completed', receipt = 'R9' "
                      "WHERE checkout_request_id = 'ws_CO_1'")
        other.close()
        await asyncio.sleep(0)  # the next pass of the loop
        seen = await store.get("ws_CO_1")
        assert seen is not None and (seen.status, seen.receipt) == ("completed", "R9")
        async with store.transaction() as t:
            assert await t.update("ws_CO_1", {"receipt": "R9"}, {"description": "changed here"})
        seen = await store.get("ws_CO_1")
        assert seen is not None and seen.description == "changed here"
        for i in range(5):  # more than the store keeps: the oldest make way, every read is still right
            assert (await store.get(f"ws_CO_{i}")).checkout_request_id == f"ws_CO_{i}"  # type: ignore[union-attr]
        assert len(store._known) == 3
        assert await store.get("ws_CO_404") is None
    finally:
        await store.close()


async def test_a_commit_of_this_store_drops_only_the_payments_it_wrote(tmp_path):
    """The reconciler's and the callbacks' commits do not empty the memory every status poll reads
    from: a unit that writes a payment by id drops that payment's kept copy once it commits, and
    only that one; a unit that writes the payments in SQL of its own drops them all."""
    store = await _store_with(tmp_path, 4)
    try:
        kept = {i: await store.get(f"ws_CO_{i}") for i in range(4)}
        async with store.transaction() as t:
            assert await t.update("ws_CO_1", {"status": "pending"}, {"status": "completed", "receipt": "R1"})
        seen = await store.get("ws_CO_1")
        assert seen is not None and (seen.status, seen.receipt) == ("completed", "R1")
        for i in (0, 2, 3):
            assert await store.get(f"ws_CO_{i}") is kept[i]  # still from memory
        async with store.transaction() as t:
            await t.execute("UPDATE transactions SET description = 'by hand' WHERE checkout_request_id = 'ws_CO_2'")
        seen = await store.get("ws_CO_2")
        assert seen is not None and seen.description == "by hand"
        assert await store.get("ws_CO_3") is not kept[3]  # everything was dropped
    finally:
        await store.close()


async def test_a_commit_made_elsewhere_before_this_store_commits_is_seen_while_its_commit_runs(tmp_path, monkeypatch):
    """While the writer's COMMIT runs in its thread the version is not looked at (the writer is
    busy); the look made just before that COMMIT has seen what others committed before it."""
    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    slow = asyncio.Event()

    async def slow_to_thread(func: Callable[..., object], *args: object) -> object:
        await slow.wait()
        return func(*args)

    try:
        async with store.transaction() as t:
            await t.insert(_tx(1))
        assert (await store.get("ws_CO_1")).status == "pending"  # type: ignore[union-attr]
        other = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
        other.execute("UPDATE transactions SET status = 'completed', receipt = 'R7' "
                      "WHERE checkout_request_id = 'ws_CO_1'")
        other.close()
        monkeypatch.setattr("gateway.storage.asyncio.to_thread", slow_to_thread)

        async def unit() -> None:
            async with store.transaction() as t:
                await t.insert(_tx(2))

        writing = asyncio.create_task(unit())
        while not store._committing:
            await asyncio.sleep(0.001)
        seen = await store.get("ws_CO_1")
        assert seen is not None and (seen.status, seen.receipt) == ("completed", "R7")
        slow.set()
        await writing
        assert (await store.get("ws_CO_2")) is not None
    finally:
        slow.set()
        await store.close()


async def test_a_failed_look_at_the_file_version_never_keeps_a_unit_from_committing(tmp_path, monkeypatch):
    """The look just before a COMMIT is a read; if SQLite refuses it, the unit is committed all the
    same (and nothing kept is trusted), rather than left waiting for a COMMIT that never comes."""
    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    try:
        async with store.transaction() as t:
            await t.insert(_tx(1))
        assert await store.get("ws_CO_1") is not None

        def refused() -> None:
            raise sqlite3.OperationalError("database is locked")

        monkeypatch.setattr(store, "_look_for_other_commits", refused)
        await asyncio.sleep(0)  # a new pass: the look is due again

        async def unit() -> None:
            async with store.transaction() as t:
                assert await t.update("ws_CO_1", {"status": "pending"}, {"status": "completed", "receipt": "R2"})

        await asyncio.wait_for(unit(), timeout=10)
        assert not store._known  # nothing kept survived the failed look
        other = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
        receipt = other.execute("SELECT receipt FROM transactions WHERE checkout_request_id = 'ws_CO_1'").fetchone()
        assert receipt == ("R2",)
        other.close()
    finally:
        await store.close()


class _RefusesRelease:
    """The store's writer connection, except that the next `RELEASE unit` fails."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db, self.refuse = db, True

    def execute(self, sql: str, *args: Any) -> Any:
        if sql == "RELEASE unit" and self.refuse:
            self.refuse = False
            raise sqlite3.OperationalError("disk I/O error")
        return self.db.execute(sql, *args)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


async def test_a_unit_whose_release_fails_is_undone_and_its_payment_never_kept_stale(tmp_path):
    """Its caller is told it failed, so its writes must not be committed with the batch; and the
    payment it touched is read again, not answered from memory."""
    store = await _store_with(tmp_path, 2)
    try:
        assert (await store.get("ws_CO_1")).status == "pending"  # type: ignore[union-attr]
        writer = store._writer
        assert writer is not None
        store._writer = _RefusesRelease(writer)  # type: ignore[assignment]
        with pytest.raises(sqlite3.OperationalError):
            async with store.transaction() as t:
                assert await t.update("ws_CO_1", {"status": "pending"}, {"status": "completed", "receipt": "R1"})
        async with store.transaction() as t:  # the next unit is not taken down with it
            assert await t.update("ws_CO_0", {"status": "pending"}, {"status": "failed", "result_code": "1032"})
        other = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
        rows = dict(other.execute("SELECT checkout_request_id, status FROM transactions").fetchall())
        other.close()
        assert rows == {"ws_CO_0": "failed", "ws_CO_1": "pending"}
        assert (await store.get("ws_CO_1")).status == "pending"  # type: ignore[union-attr]
        assert (await store.get("ws_CO_0")).status == "failed"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_an_unforeseen_error_before_the_commit_fails_the_batch_rather_than_leaving_it_waiting(
        tmp_path, monkeypatch):
    """Whatever goes wrong between a batch's last unit and its COMMIT, its units hear of it (they
    are not left waiting for a COMMIT that never comes), nothing of theirs is committed, and the
    store goes on working."""
    store = await _store_with(tmp_path, 1)
    try:
        def broken(*args: object) -> object:
            raise RuntimeError("no thread for the COMMIT")

        monkeypatch.setattr("gateway.storage.asyncio.to_thread", broken)

        async def unit() -> None:
            async with store.transaction() as t:
                assert await t.update("ws_CO_0", {"status": "pending"}, {"status": "completed", "receipt": "R0"})

        with pytest.raises(RuntimeError):
            await asyncio.wait_for(unit(), timeout=10)
        assert not store._committing
        monkeypatch.undo()
        assert (await store.get("ws_CO_0")).status == "pending"  # type: ignore[union-attr]
        await asyncio.wait_for(unit(), timeout=10)
        assert (await store.get("ws_CO_0")).status == "completed"  # type: ignore[union-attr]
    finally:
        await store.close()


async def test_sqlite_units_that_queue_together_commit_together_and_each_ends_durable(tmp_path):
    """Group commit: 60 units at once make far fewer COMMITs (fsyncs) than units, and every
    block ends only once its unit is committed (another connection sees its row at that moment)."""
    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    commits: list[str] = []
    assert store._writer is not None
    store._writer.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    other = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
    unseen: list[int] = []

    async def unit(i: int) -> None:
        async with store.transaction() as t:
            await t.insert(_tx(i))
        seen = other.execute("SELECT 1 FROM transactions WHERE checkout_request_id = ?", (f"ws_CO_{i}",)).fetchone()
        if seen is None:
            unseen.append(i)

    try:
        await asyncio.gather(*(unit(i) for i in range(60)))
        assert unseen == []
        assert 1 <= len(commits) <= 20, len(commits)
        assert await store.count() == 60
    finally:
        other.close()
        await store.close()


async def one_batch(store: SqliteTransactionStore, *units: Callable[[], Awaitable[None]]) -> list[object]:
    """Run `units` in one batch: a first unit inserts ws_CO_1 and holds the writer while they queue
    for it, then lets go. What each ended with (None or its exception), the first's first."""
    holding, go = asyncio.Event(), asyncio.Event()

    async def first() -> None:
        async with store.transaction() as t:
            await t.insert(_tx(1))
            holding.set()
            await go.wait()  # the others queue for the writer meanwhile: one batch

    tasks = [asyncio.create_task(first())]
    await holding.wait()
    tasks += [asyncio.create_task(unit()) for unit in units]
    await asyncio.sleep(0.05)
    go.set()
    return list(await asyncio.gather(*tasks, return_exceptions=True))


class CountingLock(asyncio.Lock):
    """The writer's lock, counting how often it is taken."""

    def __init__(self) -> None:
        super().__init__()
        self.taken = 0

    async def acquire(self) -> bool:
        self.taken += 1
        return await super().acquire()


async def test_sqlite_a_batch_is_committed_by_one_task_not_one_per_unit(tmp_path):
    """The units of one batch share one commit: the writer is taken once per unit and once for the
    COMMIT. (One commit task per unit took it twice per unit: each queued behind the next units
    only to find its batch committed already, a cost every push paid twice.)"""
    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    store._write_lock = lock = CountingLock()
    commits: list[str] = []
    assert store._writer is not None
    store._writer.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)

    def inserting(i: int) -> Callable[[], Awaitable[None]]:
        async def unit() -> None:
            async with store.transaction() as t:
                await t.insert(_tx(i))
        return unit

    try:
        ended = await one_batch(store, *(inserting(i) for i in range(2, 11)))
        assert ended == [None] * 10
        assert commits == ["COMMIT"]
        assert lock.taken == 10 + 1
        assert await store.count() == 10
    finally:
        await store.close()


async def test_sqlite_a_commit_that_fails_fails_every_unit_of_its_batch(tmp_path):
    """A COMMIT refused (here a deferred constraint, checked at COMMIT) undoes its whole batch, and
    every unit in it raises: none of them is reported done. The next units commit as usual."""
    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    assert store._writer is not None
    store._writer.execute("PRAGMA foreign_keys=ON")
    store._writer.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    store._writer.execute("CREATE TABLE child (parent_id INTEGER REFERENCES parent(id) DEFERRABLE INITIALLY DEFERRED)")

    async def breaks_the_commit() -> None:
        async with store.transaction() as t:
            await t.execute("INSERT INTO child (parent_id) VALUES (42)")  # no parent 42: refused at COMMIT

    async def third() -> None:
        async with store.transaction() as t:
            await t.insert(_tx(3))

    try:
        results = await one_batch(store, breaks_the_commit, third)
        assert all(isinstance(r, sqlite3.IntegrityError) for r in results), results
        assert await store.get("ws_CO_1") is None and await store.get("ws_CO_3") is None
        async with store.transaction() as t:
            await t.insert(_tx(4))
        assert await store.get("ws_CO_4") is not None
    finally:
        await store.close()


async def test_sqlite_a_unit_cancelled_while_its_batch_commits_is_committed_before_it_stops(tmp_path):
    """A caller cancelled once its unit's block is done (waiting for its batch's COMMIT) stops only
    after that COMMIT: what it wrote is durable when the cancellation reaches it, never half done."""
    class SlowCommit:
        """The writer, its COMMIT made slow (as a slow disk's fsync would), so that the
        cancellation surely lands while it runs."""

        def __init__(self, conn: sqlite3.Connection) -> None:
            self.conn = conn

        def execute(self, sql: str, *args: object) -> sqlite3.Cursor:
            if sql == "COMMIT":
                time.sleep(0.2)  # in the COMMIT's own thread
            return self.conn.execute(sql, *args)

        def __getattr__(self, name: str) -> object:
            return getattr(self.conn, name)

    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    store._writer = SlowCommit(store._writer)  # type: ignore[assignment, arg-type]
    other = sqlite3.connect(tmp_path / "t.sqlite3", isolation_level=None)
    seen_when_cancelled: list[bool] = []

    async def cancelled_after_its_block() -> None:
        me = asyncio.current_task()
        assert me is not None
        try:
            async with store.transaction() as t:
                await t.insert(_tx(2))
                asyncio.get_running_loop().call_soon(me.cancel)  # lands while it waits for the COMMIT
        except asyncio.CancelledError:
            row = other.execute("SELECT 1 FROM transactions WHERE checkout_request_id = 'ws_CO_2'").fetchone()
            seen_when_cancelled.append(row is not None)
            raise

    try:
        first_done, cancelled = await one_batch(store, cancelled_after_its_block)
        assert first_done is None
        assert isinstance(cancelled, asyncio.CancelledError), cancelled
        assert seen_when_cancelled == [True]
        async with store.transaction() as t:  # the store goes on
            await t.insert(_tx(3))
        assert await store.count() == 3
    finally:
        other.close()
        await store.close()


async def test_sqlite_a_batch_rolled_back_by_sqlite_fails_every_unit_in_it(tmp_path):
    """SQLite rolls a whole transaction back on some errors (an I/O error, a full disk): then every
    unit of the batch is lost and must fail, none reported durable, and the next unit starts a new
    batch. (The rollback is made here by a unit's own ROLLBACK, as SQLite would make it.)"""
    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()

    async def rolled_back() -> None:
        async with store.transaction() as t:
            await t.insert(_tx(2))
            await t.execute("ROLLBACK")

    async def after() -> None:
        async with store.transaction() as t:
            await t.insert(_tx(3))

    try:
        first_done, second_done, third_done = await one_batch(store, rolled_back, after)
        assert isinstance(first_done, sqlite3.OperationalError), first_done
        assert isinstance(second_done, sqlite3.OperationalError), second_done
        assert third_done is None
        assert [await store.get(f"ws_CO_{i}") is not None for i in (1, 2, 3)] == [False, False, True]
    finally:
        await store.close()


async def test_a_busy_sqlite_file_sends_the_status_read_to_the_readers_thread(tmp_path):
    """The point read runs on the loop's thread and never waits for a lock there: when SQLite
    answers "busy" (a checkpoint, a recovery), the read is made again on the reader's thread."""

    class Busy:
        def __init__(self) -> None:
            self.calls = 0

        def execute(self, *_: object) -> None:
            self.calls += 1
            raise sqlite3.OperationalError("database is locked")

        def close(self) -> None:
            pass

    store = SqliteTransactionStore(tmp_path / "t.sqlite3")
    await store.open()
    try:
        async with store.transaction() as t:
            await t.insert(_tx(1))
        quick, busy = store._quick, Busy()
        store._quick = busy  # type: ignore[assignment]
        found = await store.get("ws_CO_1")
        assert busy.calls == 1
        assert found is not None and found.checkout_request_id == "ws_CO_1"
        assert await store.get("ws_CO_2") is None
        store._quick = quick
    finally:
        await store.close()


async def test_a_cancelled_unit_of_work_rolls_back_and_frees_the_store(store):
    started = asyncio.Event()

    async def stuck() -> None:
        async with store.transaction() as t:
            await t.insert(_tx(1))
            started.set()
            await asyncio.sleep(60)

    task = asyncio.create_task(stuck())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    async with asyncio.timeout(5):
        async with store.transaction() as t:
            await t.insert(_tx(2))
    assert await store.get("ws_CO_1") is None and await store.get("ws_CO_2") is not None


async def test_a_leaked_transaction_cannot_write_later(store):
    async with store.transaction() as t:
        leaked = t
    with pytest.raises(RuntimeError, match="over"):
        await leaked.insert(_tx(1))


async def test_listeners_run_inside_the_transaction_and_roll_back_with_it(store):
    seen: list[tuple[str, str | None]] = []

    async def on_payment(t: StoreTransaction, row: Transaction, previous: str | None) -> None:
        seen.append((row.status, previous))
        await t.log_callback(row.checkout_request_id, "applied", "from the listener")

    store.listen("payment", on_payment)
    async with store.transaction() as t:
        await t.insert(_tx(1))
    with pytest.raises(RuntimeError):
        async with store.transaction() as t:
            await t.update("ws_CO_1", {"status": "pending"}, {"status": "failed"})
            raise RuntimeError("undone")
    assert seen == [("failed", "pending")] and await store.callbacks("ws_CO_1") == []
    async with store.transaction() as t:
        await t.update("ws_CO_1", {"status": "pending"}, {"status": "completed"})
    assert len(await store.callbacks("ws_CO_1")) == 1


async def test_every_migration_is_recorded_once_and_a_reopened_store_applies_none(make_store):
    first = make_store()
    await first.open()
    async with first.transaction() as t:
        await t.insert(_tx(1))
    await first.close()
    again = make_store()
    await again.open()
    try:
        rows = await again.fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == list(range(LATEST + 1))
        assert await again.schema_version() == LATEST
        assert await again.get("ws_CO_1") is not None
    finally:
        await again.close()


async def test_stores_opened_at_once_migrate_once(make_store):
    stores = [make_store() for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    try:
        rows = await stores[0].fetch_all("SELECT version FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == list(range(LATEST + 1))
    finally:
        for s in stores:
            await s.close()


async def test_a_database_of_the_previous_release_is_upgraded_not_recreated(tmp_path):
    """The release before the version table: SCHEMA, then its migrations counted in user_version."""
    path = tmp_path / "old.sqlite3"
    db = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:3]:
        for statement in migration.statements("sqlite"):
            db.execute(statement)
    db.execute("PRAGMA user_version = 2")
    db.execute("INSERT INTO orders (order_id, reference, description, amount, items, status, created_at, updated_at) "
               "VALUES ('ord_1', 'R', 'D', 10, '[]', 'open', 'now', 'now')")
    db.close()
    store = SqliteTransactionStore(path)
    await store.open()
    try:
        rows = await store.fetch_all("SELECT version, about FROM schema_migrations ORDER BY version")
        assert [r[0] for r in rows] == list(range(LATEST + 1))
        assert all("adopted from PRAGMA user_version 2" in r[1] for r in rows[:3])
        assert await store.fetch_one("SELECT order_id FROM orders") is not None  # kept, not recreated
    finally:
        await store.close()


def test_question_marks_become_numbered_placeholders_outside_quotes_and_comments():
    assert numbered("SELECT a FROM t WHERE b = ? AND c IN (?, ?)") == "SELECT a FROM t WHERE b = $1 AND c IN ($2, $3)"
    assert numbered("SELECT '?', 'it''s ?', \"?\" -- why?\nFROM t WHERE x = ?") == (
        "SELECT '?', 'it''s ?', \"?\" -- why?\nFROM t WHERE x = $1")


async def test_totals_per_nairobi_day_on_both_databases(store):
    """21:30 UTC is already the next day in Nairobi (UTC+3, no summer time)."""
    from gateway.reports import daily_totals

    rows = [("ws_CO_a", "2026-11-30T20:59:59.000Z", "completed", 100), ("ws_CO_b", "2026-11-30T21:30:00.000Z",
            "completed", 250), ("ws_CO_c", "2026-11-30T22:00:00.000Z", "failed", 40),
            ("ws_CO_d", "2026-12-01T08:00:00.000Z", "pending", 5)]
    async with store.transaction() as t:
        for cid, created, status, amount in rows:
            await t.insert(Transaction(checkout_request_id=cid, merchant_request_id="m", phone="254712345678",
                                       amount=amount, account_reference="R", description="D", status=status,
                                       created_at=created, updated_at=created))
    totals = await daily_totals(store)
    assert [(d.day, d.payments, d.completed, d.paid_amount, d.failed, d.pending) for d in totals] == [
        ("2026-12-01", 3, 1, 250, 1, 1), ("2026-11-30", 1, 1, 100, 0, 0)]


async def test_the_operators_attention_counts_on_both_databases(store):
    from gateway.reports import attention

    async with store.transaction() as t:
        for i, order in enumerate(["ord_a", "ord_a", "ord_b"]):
            await t.insert(Transaction(checkout_request_id=f"ws_CO_{i}", merchant_request_id="m", phone="254712345678",
                                       amount=10, account_reference="R", description="D", status="completed",
                                       receipt=f"RC{i}", order_id=order))
    counts = await attention(store)
    assert (counts.double_payments, counts.late_successes, counts.lost_answers) == (1, 0, 0)
