"""What the web pages may use of the gateway, and nothing more: its settings, finding a payment for
a browser (with the per-client lookup limit), and what a receipt shows to whom.

An import contract (pyproject.toml, checked in CI) keeps `web/` to this module and `gateway.keys`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from .checkout import mask_phone
from .config import Settings
from .daraja.wire import NAIROBI, TIMESTAMP_FORMAT
from .handlers import LookupLimited, find_payment, status_body
from .keys import SETTINGS
from .payments import epoch, token_matches
from .storage import Transaction

__all__ = ["SETTINGS", "LookupLimited", "Settings", "find_payment", "receipt"]


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


def receipt(tx: Transaction, token: Any) -> dict[str, Any]:
    """What a receipt page shows: the outcome and receipt for anyone with the id; amount, phone,
    reference and description only with the payment's token (the browser that paid)."""
    detailed = token_matches(tx, token)
    view: dict[str, Any] = {
        "checkoutRequestId": tx.checkout_request_id,
        "requestIdMasked": masked_request_id(tx),
        "status": tx.status,
        "receipt": tx.receipt,
        "paidAt": paid_at(tx),
        "message": status_body(tx)["message"],
        "detailed": detailed,
        "paymentToken": token if detailed else "",
    }
    if detailed:
        view.update(amount=tx.amount, phoneMasked=mask_phone(tx.phone), accountReference=tx.account_reference,
                    description=tx.description)
    return view
