"""Reconciliation back-off: doubling up to a cap, and no arithmetic that can overflow; and however
many payments are due, no more STK queries a second than RECONCILE_QUERIES_PER_SECOND."""

import asyncio
import time

import pytest

from gateway.config import Settings
from gateway.payments import PaymentService, iso
from gateway.storage import Transaction


def service() -> PaymentService:
    settings = Settings(reconcile_interval=10.0, reconcile_max_interval=60.0)
    return PaymentService(store=None, daraja=None, settings=settings)  # type: ignore[arg-type]


def payment(status: str = "pending", settled_by: str | None = None, age: float = 0.0) -> Transaction:
    return Transaction(checkout_request_id="ws_CO_1", merchant_request_id="m", phone="254712345678", amount=1,
                       account_reference="r", description="d", status=status, settled_by=settled_by,
                       created_at=iso(time.time() - age))


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
