"""A payment's life: pending → completed | failed, from callbacks, queries and the local time-out.

Rules that protect the customer's money:
- a callback is applied once; duplicates and replays change nothing;
- a success is never downgraded (not by a failure callback, not by a query);
- a success that arrives after the payment was given up (failed locally or by a query) still
  completes it, and is logged as late;
- a payment without a callback is settled by an STK query, after a grace period and then with
  back-off, never once per browser poll.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable

from .checkout import Checkout, mask_phone
from .config import Settings
from .daraja.client import DarajaClient, StkPushRequest
from .daraja.errors import DarajaError, DarajaUnavailable
from .daraja.wire import StkCallback, parse_stk_callback
from .events import PaymentEvents
from .storage import SqliteTransactionStore, Transaction

log = logging.getLogger("gateway.payments")

# How long a payment given up locally is still checked with Daraja (with slow back-off).
LATE_QUERY_WINDOW = 24 * 3600.0
# How old a push whose answer was lost may be for a stray callback to be matched to it.
ADOPT_WINDOW = 30 * 60.0


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(iso_text: str) -> float:
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()


@dataclass(frozen=True)
class CallbackOutcome:
    """What a callback did: applied, late_success, receipt_added, duplicate, conflict, unknown, mismatch."""

    outcome: str
    transaction: Transaction | None = None


class PaymentService:
    def __init__(self, store: SqliteTransactionStore, daraja: DarajaClient, settings: Settings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.daraja = daraja
        self.settings = settings
        self.clock = clock
        self.events = PaymentEvents()

    # -- starting a payment --------------------------------------------------------------------

    async def start(self, checkout: Checkout) -> Transaction:
        """Send the STK push and store the pending payment. Daraja errors propagate, typed.

        The attempt is written before the push goes out, so that if Daraja's answer is lost the
        callback that follows can still be matched to it (see `_adopt`)."""
        attempt_id = await self.store.insert_attempt(checkout.phone, checkout.amount, checkout.account_reference,
                                                     checkout.description, self.clock())
        try:
            accepted = await self.daraja.stk_push(StkPushRequest(
                phone=checkout.phone, amount=checkout.amount, account_reference=checkout.account_reference,
                description=checkout.description, callback_url=self.settings.callback_url))
        except DarajaUnavailable as exc:
            await self.store.mark_attempt(attempt_id, "unknown" if exc.maybe_sent else "refused")
            if exc.maybe_sent:
                log.warning("push attempt %d to %s: no answer from Daraja (%s); the prompt may still reach the "
                            "phone, and its callback will be matched to this attempt", attempt_id,
                            mask_phone(checkout.phone), exc)
            raise
        except DarajaError:
            await self.store.mark_attempt(attempt_id, "refused")
            raise
        now = self.clock()
        tx = Transaction(
            checkout_request_id=accepted.checkout_request_id,
            merchant_request_id=accepted.merchant_request_id,
            phone=checkout.phone, amount=checkout.amount,
            account_reference=checkout.account_reference, description=checkout.description,
            next_query_at=now + self.settings.reconcile_after,
            created_at=iso(now), updated_at=iso(now),
        )
        if not await self.store.record_push(attempt_id, tx):
            # Its callback came first and adopted the attempt (or took the id): that row stands.
            existing = await self.store.get(tx.checkout_request_id)
            if existing is not None:
                return existing
            await self.store.insert(tx)
        log.info("payment %s started: KES %d from %s", tx.checkout_request_id, tx.amount, mask_phone(tx.phone))
        return tx

    async def get(self, checkout_request_id: str) -> Transaction | None:
        return await self.store.get(checkout_request_id)

    # -- callbacks -----------------------------------------------------------------------------

    async def apply_callback(self, body: Any) -> CallbackOutcome:
        """Apply Daraja's callback. Raises `MalformedCallback` (after logging the body) if unreadable."""
        try:
            cb = parse_stk_callback(body)
        except ValueError:
            await self.store.log_callback(None, "malformed", body)
            raise
        adopted = False
        for _ in range(5):  # compare-and-set retries if another writer got there first
            tx = await self.store.get(cb.checkout_request_id)
            if tx is None:
                tx = await self._adopt(cb)
                adopted = tx is not None
            if tx is None:
                log.warning("callback for unknown CheckoutRequestID %s (ResultCode %s): logged, nothing created",
                            cb.checkout_request_id, cb.result_code)
                await self.store.log_callback(cb.checkout_request_id, "unknown", body)
                return CallbackOutcome("unknown")
            if cb.merchant_request_id != tx.merchant_request_id:
                log.warning("callback for %s carries MerchantRequestID %s, not ours: ignored as forged",
                            cb.checkout_request_id, cb.merchant_request_id)
                await self.store.log_callback(cb.checkout_request_id, "mismatch", body)
                return CallbackOutcome("mismatch", tx)
            outcome, changes = self._callback_transition(tx, cb, body)
            if changes and not await self.store.compare_and_set(tx.checkout_request_id, _state_of(tx), changes):
                continue
            if adopted and outcome == "applied":
                outcome = "adopted"
            await self.store.log_callback(cb.checkout_request_id, outcome, body)
            tx = await self._changed(cb.checkout_request_id) if changes else tx
            return CallbackOutcome(outcome, tx)
        raise RuntimeError(f"callback for {cb.checkout_request_id} lost five write races")

    async def _adopt(self, cb: StkCallback) -> Transaction | None:
        """A callback for an id we never stored: if a push to that phone (and amount) lost its
        answer recently, the callback is that push's. Real CheckoutRequestIDs end with the
        subscriber's number; success callbacks also carry PhoneNumber and Amount."""
        phone = cb.phone if cb.phone and len(cb.phone) == 12 and cb.phone.isdigit() else None
        suffix = cb.checkout_request_id[-9:]
        if phone is None and suffix.isdigit() and suffix[0] in "17":
            phone = "254" + suffix
        if phone is None:
            return None
        attempt = await self.store.unmatched_attempt(phone, cb.amount, self.clock() - ADOPT_WINDOW)
        if attempt is None:
            return None
        tx = Transaction(
            checkout_request_id=cb.checkout_request_id, merchant_request_id=cb.merchant_request_id,
            phone=attempt["phone"], amount=attempt["amount"], account_reference=attempt["account_reference"],
            description=attempt["description"], created_at=iso(attempt["created_epoch"]),
            updated_at=iso(self.clock()))
        if await self.store.record_push(attempt["id"], tx, state="adopted"):
            log.warning("ADOPTED: callback %s (ResultCode %s) belongs to push attempt %d, whose answer from "
                        "Daraja never came", cb.checkout_request_id, cb.result_code, attempt["id"])
        return await self.store.get(cb.checkout_request_id)

    def _callback_transition(self, tx: Transaction, cb: StkCallback, body: Any) -> tuple[str, dict[str, Any]]:
        raw = json.dumps(body, separators=(",", ":"))
        if cb.succeeded:
            completed = {"status": "completed", "result_code": "0", "result_desc": cb.result_desc,
                         "receipt": cb.receipt, "transaction_date": cb.transaction_date,
                         "raw_callback": raw, "settled_by": "callback", "settled_at": iso(self.clock()),
                         "next_query_at": None}
            if cb.amount is not None and cb.amount != tx.amount:
                log.warning("callback for %s reports KES %s paid, KES %s asked", tx.checkout_request_id,
                            cb.amount, tx.amount)
            if tx.status == "pending":
                return "applied", completed
            if tx.status == "failed":
                log.warning("LATE SUCCESS: %s was %s (%s) and is now completed with receipt %s",
                            tx.checkout_request_id, tx.status, tx.settled_by, cb.receipt)
                return "late_success", {**completed, "late": True}
            if tx.receipt is None:  # completed by a query, which carries no receipt
                return "receipt_added", {"receipt": cb.receipt, "transaction_date": cb.transaction_date,
                                         "raw_callback": raw}
            if tx.receipt != cb.receipt:
                log.warning("callback for %s brings receipt %s but %s is stored: kept the stored one",
                            tx.checkout_request_id, cb.receipt, tx.receipt)
                return "conflict", {}
            return "duplicate", {}
        if tx.status == "pending":
            return "applied", {"status": "failed", "result_code": cb.result_code, "result_desc": cb.result_desc,
                               "raw_callback": raw, "settled_by": "callback", "settled_at": iso(self.clock()),
                               "next_query_at": None}
        if tx.status == "completed":
            log.warning("failure callback (%s) for completed payment %s: the success stands",
                        cb.result_code, tx.checkout_request_id)
            return "conflict", {}
        return "duplicate", {}

    async def _changed(self, checkout_request_id: str) -> Transaction | None:
        """Tell live pages about a stored change; returns the stored row."""
        tx = await self.store.get(checkout_request_id)
        if tx is not None:
            self.events.publish(tx)
        return tx

    # -- reconciliation ------------------------------------------------------------------------

    async def reconcile_due(self) -> int:
        """Query Daraja about every payment whose next check is due: pending ones, and ones given up
        locally (a success that Daraja confirms later still completes them). Returns how many."""
        now = self.clock()
        due = await self.store.due_for_query(now)
        claimed = []
        for tx in due:
            attempts = tx.query_attempts + 1
            # Pending: doubling up to the max interval. Given up: keep asking, ever more slowly.
            cap = self.settings.reconcile_max_interval * (1 if tx.status == "pending" else 10)
            backoff = min(self.settings.reconcile_interval * 2 ** (attempts - 1), cap)
            if tx.status != "pending" and now - epoch(tx.created_at) >= LATE_QUERY_WINDOW:
                backoff = None  # a day on, Daraja has long forgotten it
            # Claim the slot first, so no other worker (or pass) queries the same payment meanwhile.
            if await self.store.compare_and_set(
                    tx.checkout_request_id,
                    {"status": tx.status, "settled_by": tx.settled_by, "next_query_at": tx.next_query_at},
                    {"next_query_at": None if backoff is None else now + backoff, "query_attempts": attempts}):
                if backoff is not None:
                    claimed.append(tx)
        await asyncio.gather(*(self._reconcile(tx) for tx in claimed))
        return len(claimed)

    async def _reconcile(self, tx: Transaction) -> None:
        try:
            result = await self.daraja.stk_query(tx.checkout_request_id)
        except (DarajaError, DarajaUnavailable) as exc:
            log.warning("STK query for %s failed: %s", tx.checkout_request_id, exc)
            result = None
        if result is not None and not result.pending:
            if await self._settle_from_query(tx, result.result_code or "", result.result_desc):
                return
        expired = self.clock() - epoch(tx.created_at) >= self.settings.payment_timeout
        if tx.status == "pending" and expired:
            changed = await self.store.compare_and_set(
                tx.checkout_request_id, {"status": "pending"},
                {"status": "failed", "result_code": "timeout", "settled_by": "timeout",
                 "result_desc": "No callback and no final answer from M-Pesa in time", "settled_at": iso(self.clock())})
            if changed:
                await self._changed(tx.checkout_request_id)
                log.warning("payment %s given up after %.0f s without an answer; it is still checked, and a "
                            "late success will complete it", tx.checkout_request_id, self.settings.payment_timeout)

    async def _settle_from_query(self, tx: Transaction, code: str, desc: str) -> bool:
        """Settle from Daraja's query answer. From pending: completed or failed. From a local
        give-up: a success completes it (late); a failure replaces "timeout" with the real reason."""
        changes: dict[str, Any] = {"result_code": code, "result_desc": desc, "settled_by": "query",
                                   "settled_at": iso(self.clock()), "next_query_at": None}
        changes["status"] = "completed" if code == "0" else "failed"
        if tx.status == "pending":
            expected: dict[str, Any] = {"status": "pending"}
        elif tx.status == "failed" and tx.settled_by == "timeout":
            expected = {"status": "failed", "settled_by": "timeout"}
            changes["late"] = code == "0"
        else:
            return False
        changed = await self.store.compare_and_set(tx.checkout_request_id, expected, changes)
        if changed:
            await self._changed(tx.checkout_request_id)
            if tx.status != "pending" and code == "0":
                log.warning("LATE SUCCESS: %s was given up locally; Daraja's query says it was paid",
                            tx.checkout_request_id)
            log.info("payment %s settled by STK query: %s %s", tx.checkout_request_id, code, desc)
        return changed


def _state_of(tx: Transaction) -> dict[str, Any]:
    """The columns a callback transition was decided on; the write only happens if they still hold."""
    return {"status": tx.status, "receipt": tx.receipt, "settled_by": tx.settled_by}


async def reconcile_forever(service: PaymentService, tick: float = 1.0) -> None:
    while True:
        try:
            await service.reconcile_due()
        except asyncio.CancelledError:
            raise
        except Exception:  # keep reconciling: one bad pass must not stop the loop
            log.exception("reconciliation pass failed")
        await asyncio.sleep(tick)
