"""Reconciliation back-off: doubling up to a cap, and no arithmetic that can overflow."""

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
