"""Reconciliation back-off: doubling up to a cap, and no arithmetic that can overflow; however
many payments are due, no more STK queries a second than RECONCILE_QUERIES_PER_SECOND; and when
more are due than that lets through, the operator is told (a warning, the lag in the metrics)."""

import asyncio
import dataclasses
import logging
import re
import time

import pytest

import gateway.payments
from gateway.config import Settings
from gateway.payments import CHECK_OVERDUE_AFTER, PaymentService, iso
from gateway.storage import Transaction
from tests.daraja_http import eventually


def service(**settings: object) -> PaymentService:
    chosen = Settings(reconcile_interval=10.0, reconcile_max_interval=60.0, **settings)  # type: ignore[arg-type]
    return PaymentService(store=None, daraja=None, settings=chosen)  # type: ignore[arg-type]


def payment(status: str = "pending", settled_by: str | None = None, age: float = 0.0,
            next_query_at: float | None = None) -> Transaction:
    return Transaction(checkout_request_id="ws_CO_1", merchant_request_id="m", phone="254712345678", amount=1,
                       account_reference="r", description="d", status=status, settled_by=settled_by,
                       created_at=iso(time.time() - age), next_query_at=next_query_at)


def test_pending_payments_are_queried_ever_more_slowly_up_to_the_cap():
    now = time.time()
    assert [service()._backoff(payment(), n, now) for n in (1, 2, 3, 4, 5)] == [10, 20, 40, 60, 60]


@pytest.mark.parametrize("attempts", [1025, 5000, 10**9])
def test_backoff_never_overflows_however_many_queries(attempts):
    now = time.time()
    assert service()._backoff(payment(), attempts, now) == 60
    assert service()._backoff(payment("failed", "timeout"), attempts, now) == 600


def test_a_payment_given_up_a_day_ago_is_no_longer_queried():
    assert service()._backoff(payment("failed", "timeout", age=86_401), 3, time.time()) is None


async def test_however_many_payments_are_due_the_reconciler_keeps_to_its_query_rate(start_app):
    """120 payments whose customers never answer, each due for a query every 0.3-0.5 s (about 300
    queries a second wanted): the reconciler sends 5 a second, plus at most the second's worth its
    budget holds and the pass under way when counting starts. Before the budget it sent 50 per pass
    whatever the setting (here 250 in the 3 s; about 90 a second against a simulator of its own)."""
    rate = 5
    running = await start_app(RECONCILE_QUERIES_PER_SECOND=str(rate), RECONCILE_AFTER_SECONDS="0.3",
                              SIMULATOR_PROMPT_LIFETIME_SECONDS="60", PUSH_LIMIT_PER_PHONE="0")
    pushes = await asyncio.gather(*(running.push(f"2547160{i:05d}", 10) for i in range(120)))
    assert {p["http"] for p in pushes} == {200}
    await asyncio.sleep(1.0)  # every payment is due by now, and stays due
    started, before = time.monotonic(), running.stk_queries()
    await asyncio.sleep(3.0)
    sent, elapsed = running.stk_queries() - before, time.monotonic() - started
    assert rate * elapsed * 0.5 <= sent <= rate * elapsed + 2 * rate, (sent, elapsed)
    statuses = {(await running.status(p["checkoutRequestId"]))["status"] for p in pushes}
    assert statuses == {"pending"}  # queried ("still processing"), nothing settled by it


@pytest.mark.parametrize("limit, places", [
    (50, [10] * 10),
    (1, [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]),
    (3, [0, 1, 0, 1, 1, 0, 1, 0, 1, 1]),
    (7, [1, 1, 2, 1, 2, 1, 1, 2, 1, 2]),
])
def test_a_fifth_of_the_places_is_kept_for_payments_given_up_however_small_the_passes(limit, places):
    svc = service()
    assert [svc._late_places(limit) for _ in places] == places
    assert sum(places) * 5 == limit * len(places)


async def test_payments_given_up_are_rechecked_under_a_lasting_pending_backlog_at_a_low_rate(start_app):
    """Two STK queries a second (a pass of one place every half second) and 25 pending payments
    due again and again: the 3 given up locally still get one place in five. Before, a pass kept
    `limit // 5` places for them, none when the pass is smaller than five: a late success of theirs
    would not have been looked for while the backlog lasted."""
    running = await start_app(RECONCILE_QUERIES_PER_SECOND="2", PAYMENT_TIMEOUT_SECONDS="300")
    started, now = time.monotonic(), time.time()
    waiting = payment(next_query_at=now - 1)
    gone = payment("failed", "timeout", age=200, next_query_at=now - 1)
    gone = dataclasses.replace(gone, result_code="timeout", settled_at=gone.created_at)
    async with running.payments.store.transaction() as t:
        for i in range(25):
            await t.insert(dataclasses.replace(waiting, checkout_request_id=f"ws_CO_pending_{i}"))
        for i in range(3):
            await t.insert(dataclasses.replace(gone, checkout_request_id=f"ws_CO_given_up_{i}"))

    async def queried(kind: str) -> int:
        rows = await running.payments.store.fetch_all(
            "SELECT SUM(query_attempts) FROM transactions WHERE checkout_request_id LIKE ?", [f"ws_CO_{kind}_%"])
        return int(rows[0][0] or 0)

    await asyncio.sleep(6.0)
    pending, given_up = await queried("pending"), await queried("given_up")
    elapsed = time.monotonic() - started
    assert pending + given_up <= 2 * elapsed + 2, (pending, given_up, elapsed)  # the rate holds (2 held at the start)
    assert 1 <= given_up < pending, (pending, given_up)


def test_processes_on_one_database_share_the_query_rate(caplog):
    """Each of N processes alive on the database takes 1/N of RECONCILE_QUERIES_PER_SECOND (their
    count from the "process" leases, at every heartbeat): together they send Daraja no more."""
    caplog.set_level(logging.INFO, "gateway.payments")
    svc = service(reconcile_queries_per_second=60)
    assert svc.query_budget.rate == 60
    svc.share_queries(3)
    assert svc.query_budget.rate == 20
    svc.share_queries(3)  # unchanged: not logged again
    svc.share_queries(0)  # (no lease read yet: this process alone)
    assert svc.query_budget.rate == 60
    lines = [r.getMessage() for r in caplog.records if "STK queries a second" in r.getMessage()]
    assert lines == ["3 processes share RECONCILE_QUERIES_PER_SECOND=60: at most 20 STK queries a second from this one",
                     "this process reconciles alone again: at most 60 STK queries a second"]


# -- the reconciler falling behind -------------------------------------------------------------

def lagging() -> tuple[PaymentService, list[tuple[float, float]]]:
    seen: list[tuple[float, float]] = []
    svc = service()
    svc.lag_observer = lambda pending, given_up: seen.append((pending, given_up))
    return svc, seen


def behind_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "gateway.payments" and "reconciler" in r.getMessage()]


def test_the_lag_told_is_the_longest_wait_of_each_kind(caplog):
    svc, seen = lagging()
    now = 1_000_000.0
    svc._note_lag(now, [payment(next_query_at=now - 5), payment(next_query_at=now - 2),
                        payment("failed", "timeout", next_query_at=now - 30)], full=True)
    svc._note_lag(now, [], full=False)  # nothing due: no lag
    assert seen == [(5.0, 30.0), (0.0, 0.0)]
    assert behind_lines(caplog) == []  # 5 s late is no backlog; a payment given up locally never warns


def test_a_backlog_is_warned_of_once_and_its_end_once(caplog):
    """Warned when a pending payment's query is CHECK_OVERDUE_AFTER late, not again at every pass
    while it stays behind, and told once it is under half that again (not at every pass that
    hovers around the threshold)."""
    svc, seen = lagging()
    now = 1_000_000.0
    caplog.set_level(logging.INFO, "gateway.payments")
    for lag in (10, CHECK_OVERDUE_AFTER - 1, CHECK_OVERDUE_AFTER, CHECK_OVERDUE_AFTER + 30, CHECK_OVERDUE_AFTER - 1,
                CHECK_OVERDUE_AFTER + 1, CHECK_OVERDUE_AFTER / 2 + 1, CHECK_OVERDUE_AFTER / 2 - 1, 0,
                CHECK_OVERDUE_AFTER * 3):
        svc._note_lag(now, [payment(next_query_at=now - lag)], full=True)
    lines = behind_lines(caplog)
    assert len(lines) == 3, lines
    behind = "the reconciler is behind: a pending payment's STK query is"
    assert lines[0].startswith(f"{behind} {CHECK_OVERDUE_AFTER:.0f} s")
    assert "RECONCILE_QUERIES_PER_SECOND=50" in lines[0] and "mpesa_daraja_request_seconds" in lines[0]
    assert lines[1].startswith(f"the reconciler has caught up: the longest-waiting pending payment's STK query is "
                               f"{CHECK_OVERDUE_AFTER / 2 - 1:.0f} s")
    assert lines[2].startswith(f"{behind} {CHECK_OVERDUE_AFTER * 3:.0f} s")
    assert [r.levelname for r in caplog.records if "reconciler" in r.getMessage()] == ["WARNING", "INFO", "WARNING"]
    assert [pending for pending, _ in seen][3] == CHECK_OVERDUE_AFTER + 30


def test_a_lag_the_pass_had_room_for_is_not_a_backlog(caplog):
    """After a restart, a database outage or a stopped machine, the first pass finds checks long
    overdue, and takes them all: that is no backlog (and no reason to raise the rate), so no
    warning, though the metrics say how late they were."""
    svc, seen = lagging()
    now = 1_000_000.0
    svc._note_lag(now, [payment(next_query_at=now - 600)] * 3, full=False)
    assert seen == [(600.0, 0.0)] and behind_lines(caplog) == []
    svc._note_lag(now, [payment(next_query_at=now - 600)] * 3, full=True)  # the same, with more due than it took
    assert len(behind_lines(caplog)) == 1


def lag_of(metrics: str, kind: str) -> float:
    found = re.search(rf'^mpesa_reconcile_lag_seconds{{kind="{kind}"}} (\S+)$', metrics, re.M)
    assert found, metrics[-2000:]
    return float(found[1])


async def test_a_reconciler_held_to_its_rate_behind_its_due_payments_says_so(start_app, monkeypatch, caplog):
    """Twelve pending payments due at once, one query a second allowed: the last waits about
    twelve seconds. With the threshold at 3 s (60 s in service), the reconciler warns, once, and
    the metrics show the lag and the last pass."""
    monkeypatch.setattr(gateway.payments, "CHECK_OVERDUE_AFTER", 3.0)
    running = await start_app(METRICS_ENABLED="true", RECONCILE_QUERIES_PER_SECOND="1", RECONCILE_AFTER_SECONDS="0.3",
                              SIMULATOR_PROMPT_LIFETIME_SECONDS="60", PUSH_LIMIT_PER_PHONE="0")
    started = time.monotonic()
    pushes = await asyncio.gather(*(running.push(f"2547170{i:05d}", 10) for i in range(12)))
    assert {p["http"] for p in pushes} == {200}
    assert await eventually(lambda: any("the reconciler is behind" in line for line in behind_lines(caplog)),
                            timeout=15)
    assert time.monotonic() - started >= 3.3  # (each due 0.3 s after its push, 3 s overdue no sooner)
    text = await (await running.client.get("/metrics")).text()
    assert 3.0 <= lag_of(text, "pending") <= time.monotonic() - started, (text, time.monotonic() - started)
    assert lag_of(text, "given_up") == 0.0
    last_pass = float(re.search(r"^mpesa_reconcile_last_pass_timestamp_seconds (\S+)$", text, re.M)[1])  # type: ignore[index]
    assert time.time() - 3 <= last_pass <= time.time()
    await asyncio.sleep(1.5)  # further passes, still behind: no second warning
    assert [line for line in behind_lines(caplog) if "behind" in line][1:] == []
