"""What the web pages may use of the gateway, and nothing more: its settings, finding a payment for
a browser (with the per-client lookup limit), what a receipt shows to whom, and the order a
payment is for; for the operator's pages (web/admin.py), the reports (gateway/reports.py) and the
webhook Resend.

An import contract (pyproject.toml, checked in CI) keeps `web/` to this module and `gateway.keys`.
"""

from __future__ import annotations

import hmac
from datetime import datetime
from typing import Any

from aiohttp import web

from .checkout import mask_phone
from .config import Settings
from .daraja.wire import NAIROBI, TIMESTAMP_FORMAT
from .handlers import LookupLimited, find_payment, status_body
from .keys import PAYMENTS, SETTINGS
from .limits import SlidingWindowLimiter, retry_after_header
from .orders import load_order
from .payments import epoch, token_matches
from .reports import (
    ORDER_STATUSES,
    PAYMENT_STATUSES,
    WEBHOOK_STATES,
    Filters,
    ReportError,
    attention,
    callbacks_of,
    daily_totals,
    double_payments,
    events_about,
    late_successes,
    lost_answers,
    nairobi_time,
    order,
    order_payments,
    orders,
    overdue_checks,
    payment,
    payments,
    payments_csv,
    unmatched_callbacks,
    webhook_event,
    webhook_events,
)
from .storage import Transaction, TransactionStore
from .webhooks import enabled as webhooks_enabled
from .webhooks import resend_event

__all__ = ["ORDER_STATUSES", "PAYMENT_STATUSES", "SETTINGS", "WEBHOOK_STATES", "Filters", "LookupLimited",
           "ReportError", "Settings", "SlidingWindowLimiter", "attention", "callbacks_of", "daily_totals",
           "double_payments", "events_about", "find_payment", "late_successes", "lost_answers", "nairobi_time",
           "operator_store", "order", "order_of", "order_payments", "orders", "overdue_checks", "payment", "payments",
           "payments_csv", "receipt", "resend_webhook", "retry_after_header", "unmatched_callbacks", "webhook_event",
           "webhook_events", "webhooks_enabled"]


def paid_at(tx: Transaction) -> str | None:
    """When the customer paid, in Nairobi time: Daraja's TransactionDate, else when we learnt it."""
    if tx.transaction_date and len(tx.transaction_date) == 14:
        try:
            moment = datetime.strptime(tx.transaction_date, TIMESTAMP_FORMAT).replace(tzinfo=NAIROBI)
        except ValueError:
            moment = None
        if moment is not None:
            return f"{moment:%d %b %Y, %H:%M:%S} EAT"
    if tx.settled_at:
        moment = datetime.fromtimestamp(epoch(tx.settled_at), NAIROBI)
        return f"{moment:%d %b %Y, %H:%M:%S} EAT"
    return None


def masked_request_id(tx: Transaction) -> str:
    """Daraja's CheckoutRequestID ends with the subscriber's number: shown masked like the phone."""
    cid, subscriber = tx.checkout_request_id, tx.phone[3:]
    if subscriber and cid.endswith(subscriber):
        return cid[:-len(subscriber)] + mask_phone(tx.phone)[3:]
    return cid


def order_matches(tx: Transaction, order_id: Any) -> bool:
    """Whether `order_id` is the id of the order this payment is for (the checkout link's capability)."""
    if not isinstance(order_id, str) or not order_id or len(order_id) > 100 or not tx.order_id:
        return False
    return hmac.compare_digest(order_id.encode(), tx.order_id.encode())


def receipt(tx: Transaction, token: Any, order_id: Any = "") -> dict[str, Any]:
    """What a receipt page shows: the outcome and receipt for anyone with the id; amount, phone,
    reference and description only with the payment's token (the browser that paid) or the id of
    its order (the checkout link, which the customer holds)."""
    detailed = token_matches(tx, token)
    by_order = not detailed and order_matches(tx, order_id)
    view: dict[str, Any] = {
        "checkoutRequestId": tx.checkout_request_id,
        "requestIdMasked": masked_request_id(tx),
        "status": tx.status,
        "receipt": tx.receipt,
        "paidAt": paid_at(tx),
        "message": status_body(tx)["message"],
        "resultCode": tx.result_code,
        "detailed": detailed or by_order,
        "paymentToken": token if detailed else "",
        "orderId": tx.order_id if detailed or by_order else None,
    }
    if detailed or by_order:
        view.update(amount=tx.amount, phoneMasked=mask_phone(tx.phone), accountReference=tx.account_reference,
                    description=tx.description)
    return view


async def order_of(request: web.Request, tx: Transaction) -> dict[str, Any] | None:
    """The order a payment is for, as its receipt lists it: reference, items, amount, status.
    Call it only for a browser that may see the payment's details (`receipt(...)["detailed"]`)."""
    if not tx.order_id:
        return None
    order = await load_order(request.app[PAYMENTS].store, tx.order_id)
    if order is None:
        return None
    return {"orderId": order.order_id, "reference": order.reference, "description": order.description,
            "amount": order.amount, "status": order.status, "items": order.lines()}


# -- the operator's view (web/admin.py): the reports of gateway/reports.py, read from this store ----

def operator_store(app: web.Application) -> TransactionStore:
    """The store the reports read (committed data only). Open while the app runs."""
    return app[PAYMENTS].store


async def resend_webhook(app: web.Application, event_id: str) -> bool:
    """The operator's Resend: the event pending and due now, same id and body (False: no such event)."""
    return await resend_event(app[PAYMENTS].store, event_id)

