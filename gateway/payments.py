"""A payment's life: pending → completed | failed, from callbacks, queries and the local time-out.

Rules that protect the customer's money:
- every change of state is one isolated store transaction (`store.transaction()`);
- every push is written down before it is sent, and every callback body before it is acted on,
  so a crash at any point leaves something the recovery pass can finish;
- a callback changes a payment directly only when it matches the stored push: CheckoutRequestID
  and MerchantRequestID, and (where the callback carries them) Amount and PhoneNumber, with a
  receipt no other payment has. Anything else (a field mismatch, a callback for an id we never
  stored, a success after Daraja reported a failure, any failure) is confirmed with an STK query
  first; what Daraja does not confirm changes nothing and stays in the callback log as `unverified`;
- a success is never downgraded (not by a failure callback, not by a query);
- a success that arrives after the gateway gave up locally still completes the payment (late);
- a payment without a callback is settled by an STK query, after a grace period and then with
  back-off, never once per browser poll.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import hmac
import json
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .checkout import Checkout, mask_phone
from .config import Settings
from .daraja.client import DarajaClient, StkPushRequest, StkQueryResult
from .daraja.errors import DarajaError, DarajaUnavailable, RateLimited, SystemBusy
from .daraja.wire import MalformedCallback, StkCallback, parse_stk_callback
from .events import PaymentEvents
from .limits import RateBudget
from .shared import Leases
from .storage import (
    CHECK_OVERDUE_AFTER,
    MISSING_BATCH,
    LoggedCallback,
    PushAttempt,
    StoreTransaction,
    Transaction,
    TransactionStore,
    capped_body,
    pick_due,
)
from .storage_pg import UNAVAILABLE

log = logging.getLogger("gateway.payments")

# How long a payment given up locally is still checked with Daraja (with slow back-off).
LATE_QUERY_WINDOW = 24 * 3600.0
# How old a push whose answer was lost may be for a callback to be matched to it.
ADOPT_WINDOW = 30 * 60.0
# A callback that needs an STK query to be believed, and whose query keeps failing, is retried by
# the recovery pass for this long, then left `unverified` for a person to look at.
VERIFY_GIVE_UP = 3600.0
VERIFY_CONCURRENCY = 8
RECOVERY_EVERY = 15.0  # seconds between recovery passes (the first runs at start-up)
FULL_RECOVERY_EVERY = 3600.0  # … of which one looks at every push attempt ever made (see `recover`)
HEARTBEAT_EVERY = 2.0  # several processes: each renews its "alive" lease this often …
PROCESS_LEASE = 10.0  # … for this long (a process silent for longer is taken for dead)
DEFERRED_MAX = 100_000  # callbacks kept in memory while the database is unreachable
OTHERS_POLL = 0.05  # how often a callback reads whether another process's push has its answer yet
# A reconciliation pass claims at most this many due payments (and the query budget may allow fewer),
# pending ones first but for a fifth of the places (over passes: one pass in five of one place), kept
# for payments given up locally when so many are due.
QUERIES_PER_PASS = 50
LATE_SHARE = 5
MAX_BACKOFF_DOUBLINGS = 30  # 2**30 × any interval is already far past every cap


def iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def epoch(iso_text: str) -> float:
    return datetime.fromisoformat(iso_text.replace("Z", "+00:00")).timestamp()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_matches(tx: Transaction, token: Any) -> bool:
    """Whether `token` is the browser token handed out with this payment's push answer."""
    if not isinstance(token, str) or not token or len(token) > 200 or tx.token_hash is None:
        return False
    return hmac.compare_digest(token_hash(token), tx.token_hash)


@dataclass(frozen=True)
class StartedPayment:
    transaction: Transaction
    token: str  # shown once, to the browser that made the push; only its hash is stored


@dataclass(frozen=True)
class CallbackOutcome:
    """What a callback did: applied, late_success, receipt_added, duplicate, conflict, unknown,
    verifying (an STK query will decide), unverified."""

    outcome: str
    transaction: Transaction | None = None


def is_settled_by_daraja(tx: Transaction) -> bool:
    """Final on Daraja's word (a callback or a query), not merely given up by us."""
    return tx.status == "completed" or (tx.status == "failed" and tx.settled_by != "timeout")


def candidate_phones(cb: StkCallback) -> list[str]:
    """Whose push a callback may answer: its PhoneNumber, and the subscriber number that real
    CheckoutRequestIDs end with (ws_CO_…708374149)."""
    phones = []
    if cb.phone and len(cb.phone) == 12 and cb.phone.isdigit() and cb.phone.startswith("254"):
        phones.append(cb.phone)
    suffix = cb.checkout_request_id[-9:]
    if suffix.isascii() and suffix.isdigit() and suffix[0] in "17" and "254" + suffix not in phones:
        phones.append("254" + suffix)
    return phones


def mismatches(tx: Transaction, cb: StkCallback, receipt_owner: str | None) -> list[str]:
    """How a callback differs from the push it names (empty: it matches)."""
    problems = []
    if tx.merchant_request_id and cb.merchant_request_id != tx.merchant_request_id:
        problems.append("MerchantRequestID is not the one Daraja gave for this CheckoutRequestID")
    if cb.amount is not None and cb.amount != tx.amount:
        problems.append(f"Amount {cb.amount:g} is not the KES {tx.amount} asked")
    if cb.phone and len(cb.phone) == 12 and cb.phone.isdigit() and cb.phone != tx.phone:
        problems.append(f"PhoneNumber {mask_phone(cb.phone)} is not the phone asked ({mask_phone(tx.phone)})")
    if cb.succeeded and receipt_owner is not None and receipt_owner != tx.checkout_request_id:
        problems.append(f"receipt {cb.receipt} already belongs to payment {receipt_owner}")
    return problems


class PaymentService:
    def __init__(self, store: TransactionStore, daraja: DarajaClient, settings: Settings, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.daraja = daraja
        self.settings = settings
        self.clock = clock
        self.events = PaymentEvents()
        # Pushes of this process still waiting for Daraja's answer, by phone: a callback that
        # overtakes its push's answer waits for it rather than guessing.
        self._pushes_in_flight: dict[str, set[asyncio.Future[None]]] = {}
        self._attempts_in_flight: set[int] = set()
        self._attempts_checked_to = 0  # the recovery pass has seen every attempt up to this id
        self._verifications: dict[str, asyncio.Task[None]] = {}
        self._verify_requested: set[str] = set()
        self._verify_slots = asyncio.Semaphore(VERIFY_CONCURRENCY)
        self._rereads: set[asyncio.Task[None]] = set()
        self.leases: Leases | None = None  # set when other processes share the database
        # Callbacks that came while the database was unreachable: applied when it is back.
        self._deferred: collections.deque[tuple[Any, str]] = collections.deque(maxlen=DEFERRED_MAX)
        # The reconciler's STK queries, at most RECONCILE_QUERIES_PER_SECOND however many are due
        # (this process's share of it when others reconcile on the same database: `share_queries`).
        self.query_budget = RateBudget(settings.reconcile_queries_per_second)
        self._sharing = 1  # processes reconciling on this database, this one included
        # Told at each pass how late the longest-waiting due check is (pending, given up locally): the metrics.
        self.lag_observer: Callable[[float, float], None] | None = None
        self._behind = False  # the reconciler is behind (warned of; told again once it has caught up)
        self._late_credit = 0  # places earned by payments given up locally, in fifths of a place

    # -- starting a payment --------------------------------------------------------------------

    async def start(self, checkout: Checkout) -> StartedPayment:
        """Send the STK push and store the pending payment. Daraja errors propagate, typed.

        The attempt is written before the push goes out, so that if Daraja's answer is lost the
        callback that follows can still be matched to it (after an STK query confirms it)."""
        async with self.store.transaction() as t:
            # The order goes with the attempt: a payment adopted or repaired from it still pays its order.
            attempt_id = await t.insert_attempt(checkout.phone, checkout.amount, checkout.account_reference,
                                                checkout.description, self.clock(), checkout.order_id,
                                                self.leases.holder if self.leases else None)
        answered = asyncio.get_running_loop().create_future()
        self._pushes_in_flight.setdefault(checkout.phone, set()).add(answered)
        self._attempts_in_flight.add(attempt_id)
        try:
            return await self._push(attempt_id, checkout)
        finally:
            answered.set_result(None)
            waiting = self._pushes_in_flight.get(checkout.phone, set())
            waiting.discard(answered)
            if not waiting:
                self._pushes_in_flight.pop(checkout.phone, None)
            self._attempts_in_flight.discard(attempt_id)

    async def _push(self, attempt_id: int, checkout: Checkout) -> StartedPayment:
        try:
            accepted = await self.daraja.stk_push(StkPushRequest(
                phone=checkout.phone, amount=checkout.amount, account_reference=checkout.account_reference,
                description=checkout.description, callback_url=self.settings.callback_url))
        except DarajaUnavailable as exc:
            await self._close_attempt(attempt_id, "unknown" if exc.maybe_sent else "refused")
            if exc.maybe_sent:
                log.warning("push attempt %d to %s: no answer from Daraja (%s); the prompt may still reach the "
                            "phone, and its callback will be matched to this attempt once an STK query confirms "
                            "it", attempt_id, mask_phone(checkout.phone), exc)
            raise
        except DarajaError:
            await self._close_attempt(attempt_id, "refused")
            raise
        now = self.clock()
        token = secrets.token_urlsafe(32)
        tx = Transaction(
            checkout_request_id=accepted.checkout_request_id,
            merchant_request_id=accepted.merchant_request_id,
            phone=checkout.phone, amount=checkout.amount,
            account_reference=checkout.account_reference, description=checkout.description,
            next_query_at=now + self.settings.reconcile_after,
            created_at=iso(now), updated_at=iso(now), token_hash=token_hash(token), order_id=checkout.order_id,
        )
        async with self.store.transaction() as t:
            stored = tx
            if not await t.insert_new(tx):
                # Its callback came first and a verified adoption stored it: that row stands.
                await t.update(tx.checkout_request_id, {"token_hash": None},
                               {"token_hash": tx.token_hash, "merchant_request_id": tx.merchant_request_id})
                stored = await t.get(tx.checkout_request_id) or tx
            if not await t.set_attempt(attempt_id, "accepted", tx.checkout_request_id):
                log.info("push attempt %d was already matched to a callback", attempt_id)
        return StartedPayment(stored, token)  # logged by the caller, with the request's timing

    async def _close_attempt(self, attempt_id: int, state: str) -> None:
        async with self.store.transaction() as t:
            await t.set_attempt(attempt_id, state, only_from=("sending",))

    async def get(self, checkout_request_id: str) -> Transaction | None:
        return await self.store.get(checkout_request_id)

    # -- callbacks -----------------------------------------------------------------------------

    async def apply_callback(self, body: Any, text: str | None = None) -> CallbackOutcome:
        """Take Daraja's callback (`body` parsed, `text` as received): kept first, then matched,
        then applied or verified. Raises `MalformedCallback` (after keeping a capped copy) if unreadable."""
        raw = capped_body(body if text is None else text)
        try:
            cb = parse_stk_callback(body)
        except MalformedCallback as exc:
            async with self.store.transaction() as t:
                await t.log_callback(None, "malformed", raw, note=str(exc))
            raise
        async with self.store.transaction() as t:
            log_id = await t.log_callback(cb.checkout_request_id, "received", raw)
            outcome = await self._match(t, log_id, cb, raw, adopt=False)
        if outcome is None:
            # An id we have not stored: its push's answer may still be on its way (the callback
            # overtook it). The body is already kept, so a crash while waiting loses nothing.
            await self._wait_for_pushes(candidate_phones(cb))
            async with self.store.transaction() as t:
                outcome = await self._match(t, log_id, cb, raw, adopt=True)
        return await self._after_match(cb, outcome)

    def defer_callback(self, body: Any, text: str) -> None:
        if len(self._deferred) == self._deferred.maxlen:
            log.error("CALLBACK DROPPED: %d callbacks are already waiting for the database", len(self._deferred))
        self._deferred.append((body, text))
        log.warning("database unavailable: a callback is kept in memory (%d waiting) until it is back",
                    len(self._deferred))

    async def apply_deferred(self) -> int:
        """Apply the callbacks kept while the database was away, oldest first; stop at the first
        that still cannot be stored. Returns how many were applied."""
        done = 0
        while self._deferred:
            body, text = self._deferred[0]
            try:
                await self.apply_callback(body, text)
            except MalformedCallback:
                pass
            except UNAVAILABLE:
                return done
            self._deferred.popleft()
            done += 1
        if done:
            log.info("%d callback(s) kept while the database was away are now stored and applied", done)
        return done

    async def _after_match(self, cb: StkCallback, outcome: CallbackOutcome | None) -> CallbackOutcome:
        assert outcome is not None
        if outcome.outcome == "verifying":
            self._verify_soon(cb.checkout_request_id)
        elif outcome.outcome in ("applied", "late_success", "receipt_added"):
            tx = await self._changed(cb.checkout_request_id)
            return CallbackOutcome(outcome.outcome, tx)
        return outcome

    async def _wait_for_pushes(self, phones: list[str]) -> None:
        waiting = [f for phone in phones for f in self._pushes_in_flight.get(phone, ())]
        if waiting:
            # Every push ends by its own time-out; this only bounds the wait if one hangs oddly.
            await asyncio.wait(waiting, timeout=self.answer_deadline())
        if self.store.shared:
            await self._wait_for_other_processes(phones)

    async def _wait_for_other_processes(self, phones: list[str]) -> None:
        """Pushes to these phones that another live process sent and is still waiting on (their
        attempts are `sending` in the database): wait, reading the database, until each has its
        answer. A process that died (its heartbeat lease ran out) will never get its answer: its
        pushes are not waited for (the callback is then matched through Daraja's query). Nor are
        this process's own (in memory, exactly) or unsigned ones (written by a release before)."""
        if not phones:
            return
        deadline = time.monotonic() + self.answer_deadline()
        marks = ", ".join("?" for _ in phones)
        me = self.leases.holder if self.leases else ""
        while time.monotonic() < deadline:
            now = self.clock()
            # This process's own pushes were waited for in `_wait_for_pushes` (exactly, in memory).
            row = await self.store.fetch_one(
                f"SELECT COUNT(*) FROM push_attempts WHERE state = 'sending' AND created_epoch >= ? "
                f"AND phone IN ({marks}) AND sender IS NOT NULL AND sender <> ? AND sender IN "
                f"(SELECT key FROM leases WHERE name = 'process' AND until_epoch > ?)",
                (now - self.answer_deadline(), *phones, me, now))
            if row is None or not int(row[0]):
                return
            await asyncio.sleep(OTHERS_POLL)

    async def _match(self, t: StoreTransaction, log_id: int, cb: StkCallback, raw: str, *,
                     adopt: bool) -> CallbackOutcome | None:
        """Decide what a logged callback does, inside one transaction. None: the id is unknown and
        `adopt` is False (the caller waits for pushes in flight, then asks again)."""
        tx = await t.get(cb.checkout_request_id)
        if tx is None:
            if not adopt:
                return None
            attempts = await self._adoption_candidates(t, cb, self.clock())
            if not attempts:
                await t.set_callback_outcome(log_id, "unknown", "no payment or push attempt matches this callback")
                log.warning("callback for unknown CheckoutRequestID %s (ResultCode %s): kept, nothing created",
                            cb.checkout_request_id, cb.result_code)
                return CallbackOutcome("unknown")
            await t.set_callback_outcome(
                log_id, "verifying", f"may answer push attempt {attempts[0].id}, whose answer from Daraja was "
                                     "lost: confirming with an STK query")
            return CallbackOutcome("verifying")
        owner = await t.receipt_owner(cb.receipt) if cb.succeeded and cb.receipt else None
        outcome, changes, note = self._judge(tx, cb, owner, raw)
        if changes and not await t.update(tx.checkout_request_id, _state_of(tx), changes):
            outcome, note = "verifying", "the payment changed while this callback was read"
        await t.set_callback_outcome(log_id, outcome, note)
        if outcome in ("unverified", "conflict"):
            log.warning("callback for %s not applied (%s): %s", cb.checkout_request_id, outcome, note)
        return CallbackOutcome(outcome, tx)

    def _judge(self, tx: Transaction, cb: StkCallback, receipt_owner: str | None,
               raw: str) -> tuple[str, dict[str, Any], str | None]:
        """(outcome, changes, note) for a callback naming a stored payment."""
        problems = mismatches(tx, cb, receipt_owner)
        if tx.merchant_request_id and cb.merchant_request_id != tx.merchant_request_id:
            # Daraja always sends the id it gave: this did not come from Daraja.
            return "unverified", {}, "; ".join(problems)
        if problems:
            return "verifying", {}, "; ".join(problems)
        if not tx.merchant_request_id:
            return "verifying", {}, ("this payment was repaired from its push attempt: its MerchantRequestID is "
                                     "not known")
        if cb.succeeded:
            if tx.status == "completed":
                if tx.receipt is None:  # completed by a query, which carries no receipt
                    return "receipt_added", {"receipt": cb.receipt, "transaction_date": cb.transaction_date,
                                             "raw_callback": raw}, None
                if tx.receipt == cb.receipt:
                    return "duplicate", {}, None
                return "conflict", {}, f"receipt {cb.receipt} differs from the stored {tx.receipt}: kept the stored one"
            if is_settled_by_daraja(tx):  # failed on Daraja's word: only Daraja can say otherwise
                return "verifying", {}, "a success after Daraja reported a failure"
            late = tx.status == "failed"
            if late:
                log.warning("LATE SUCCESS: %s was given up locally and is now completed with receipt %s",
                            tx.checkout_request_id, cb.receipt)
            return ("late_success" if late else "applied"), self._completed_by_callback(cb, raw, late), None
        if tx.status == "completed":
            return "conflict", {}, f"failure ({cb.result_code}) after a success: the success stands"
        if is_settled_by_daraja(tx):
            return "duplicate", {}, None
        # A failure frees the customer to pay again, so it is believed only once Daraja confirms it.
        return "verifying", {}, "a failure is confirmed with an STK query before it is applied"

    def _completed_by_callback(self, cb: StkCallback, raw: str, late: bool) -> dict[str, Any]:
        changes = {"status": "completed", "result_code": "0", "result_desc": cb.result_desc,
                   "receipt": cb.receipt, "transaction_date": cb.transaction_date, "raw_callback": raw,
                   "settled_by": "callback", "settled_at": iso(self.clock()), "next_query_at": None}
        return {**changes, "late": True} if late else changes

    async def _adoption_candidates(self, t: StoreTransaction, cb: StkCallback, now: float) -> list[PushAttempt]:
        found: list[PushAttempt] = []
        for phone in candidate_phones(cb):
            found += await t.open_attempts(phone, cb.amount, now - ADOPT_WINDOW)
        return sorted(found, key=lambda a: -a.created_epoch)

    # -- verification: an STK query decides ----------------------------------------------------

    def _verify_soon(self, checkout_request_id: str) -> None:
        self._verify_requested.add(checkout_request_id)
        if checkout_request_id in self._verifications:
            return  # the running verification goes round again and takes this callback too
        task = asyncio.create_task(self._verify(checkout_request_id))
        self._verifications[checkout_request_id] = task

    async def _verify(self, checkout_request_id: str) -> None:
        try:
            # A request made while this runs (during any await below) makes it go round again.
            while checkout_request_id in self._verify_requested:
                self._verify_requested.discard(checkout_request_id)
                if not await self._verify_logged(checkout_request_id):
                    return  # Daraja could not be asked: the recovery pass tries again later
        finally:
            self._verifications.pop(checkout_request_id, None)
            self._verify_requested.discard(checkout_request_id)

    async def _verify_logged(self, checkout_request_id: str) -> bool:
        """Ask Daraja about `checkout_request_id` and settle every callback waiting on the answer."""
        rows = await self.store.callbacks(checkout_request_id, outcomes=("verifying",))
        if not rows:
            return True
        try:
            async with self._verify_slots:
                result: StkQueryResult | None = await self.daraja.stk_query(checkout_request_id)
            failure = None
        except DarajaError as exc:
            if exc.http_status >= 500 or isinstance(exc, (RateLimited, SystemBusy)):
                # Daraja's own trouble (busy, rate limits, a 429): ask again later
                log.warning("could not verify callback(s) for %s: %s; will try again", checkout_request_id, exc)
                return False
            result, failure = None, exc  # e.g. 400 Invalid CheckoutRequestID: Daraja does not know it
        except DarajaUnavailable as exc:
            log.warning("could not verify callback(s) for %s: %s; will try again", checkout_request_id, exc)
            return False
        changed = False
        async with self.store.transaction() as t:
            for row in rows:
                outcome, verdict, did_change = await self._settle_verified(t, row, result, failure)
                changed = changed or did_change
                note = f"{row.note}; {verdict}" if row.note else verdict  # why it was asked, and the answer
                await t.set_callback_outcome(row.id, outcome, note)
                log.log(logging.WARNING if outcome == "unverified" else logging.INFO,
                        "callback %d for %s: %s (%s)", row.id, checkout_request_id, outcome, note)
        if changed:
            await self._changed(checkout_request_id)
        return True

    async def _settle_verified(self, t: StoreTransaction, row: LoggedCallback, result: StkQueryResult | None,
                               failure: DarajaError | None) -> tuple[str, str, bool]:
        """Apply what Daraja's query confirms of one logged callback: (outcome, note, changed)."""
        cb = parse_stk_callback(json.loads(row.body))
        if result is None:
            assert failure is not None
            return "unverified", f"Daraja's STK query refused it: {failure.error_code} {failure.error_message}", False
        tx = await t.get(cb.checkout_request_id)
        adopted = False
        if tx is None:
            attempts = await self._adoption_candidates(t, cb, epoch(row.received_at))
            if not attempts:
                return "unverified", "Daraja knows this id, but no push attempt is left to match it to", False
            attempt = attempts[0]
            tx = Transaction(
                checkout_request_id=cb.checkout_request_id, merchant_request_id=cb.merchant_request_id,
                phone=attempt.phone, amount=attempt.amount, account_reference=attempt.account_reference,
                description=attempt.description, created_at=iso(attempt.created_epoch), updated_at=iso(self.clock()),
                next_query_at=self.clock() + self.settings.reconcile_interval, order_id=attempt.order_id)
            await t.insert(tx)
            await t.set_attempt(attempt.id, "adopted", cb.checkout_request_id)
            adopted = True
            log.warning("ADOPTED: %s belongs to push attempt %d, whose answer from Daraja never came (confirmed "
                        "by an STK query)", cb.checkout_request_id, attempt.id)
        if result.pending:
            if adopted:
                return "adopted", "Daraja's query: the customer has not answered yet", True
            return "unverified", "Daraja's query says this payment is still open", False
        code = result.result_code or ""
        owner = await t.receipt_owner(cb.receipt) if cb.succeeded and cb.receipt else None
        problems = mismatches(tx, cb, owner)
        agrees = cb.succeeded == (code == "0") and (cb.succeeded or cb.result_code == code)
        if agrees and not problems:
            changes = self._confirmed_callback_changes(tx, cb, row.body)
            if changes and await t.update(tx.checkout_request_id, _state_of(tx), changes):
                outcome = "adopted" if adopted else "late_success" if changes.get("late") else "verified"
                return outcome, f"confirmed by Daraja's STK query ({code})", True
            outcome = "adopted" if adopted else "duplicate"
            return outcome, f"Daraja's query agrees ({code}); nothing to change", adopted
        # The callback is not what Daraja says. Daraja's own answer still counts, as a query's would.
        changed = await self._apply_query_result(t, tx, code, result.result_desc)
        why = "; ".join(problems) or f"Daraja's query says {code} {result.result_desc}".strip()
        return "unverified", why, changed or adopted

    def _confirmed_callback_changes(self, tx: Transaction, cb: StkCallback, raw: str) -> dict[str, Any]:
        if cb.succeeded:
            if tx.status == "completed":
                return {} if tx.receipt else {"receipt": cb.receipt, "transaction_date": cb.transaction_date,
                                              "raw_callback": raw}
            return self._completed_by_callback(cb, raw, late=tx.status == "failed")
        if tx.status == "completed" or is_settled_by_daraja(tx):
            return {}
        return {"status": "failed", "result_code": cb.result_code, "result_desc": cb.result_desc,
                "raw_callback": raw, "settled_by": "callback", "settled_at": iso(self.clock()),
                "next_query_at": None}

    async def _changed(self, checkout_request_id: str) -> Transaction | None:
        """Tell live pages about a committed change (here, and through the database in every other
        process on it); returns the stored row."""
        tx = await self.store.get(checkout_request_id)
        if tx is not None:
            self.events.publish(tx)
            await self.store.announce(checkout_request_id)
        return tx

    def heard(self, checkout_request_id: str | None) -> None:
        """Another process changed a payment (None: anything may have changed, e.g. while the change
        feed was reconnecting): live pages here following it get its committed state."""
        ids = [checkout_request_id] if checkout_request_id is not None else self.events.followed()
        for followed in ids:
            if self.events.subscriber_count(followed):
                task = asyncio.ensure_future(self._reread(followed))
                self._rereads.add(task)
                task.add_done_callback(self._rereads.discard)

    async def _reread(self, checkout_request_id: str) -> None:
        try:
            tx = await self.store.get(checkout_request_id)
        except Exception as exc:  # noqa: BLE001 - the page polls as well; it will see the change
            log.warning("could not read payment %s after a change notice: %s", checkout_request_id, exc)
            return
        if tx is not None:
            self.events.publish(tx)

    # -- reconciliation ------------------------------------------------------------------------

    def _backoff(self, tx: Transaction, attempts: int, now: float) -> float | None:
        """Seconds to the next query. Pending: doubling up to the max interval. Given up locally:
        ever more slowly, for a day. None: stop asking."""
        if tx.status != "pending" and now - epoch(tx.created_at) >= LATE_QUERY_WINDOW:
            return None  # a day on, Daraja has long forgotten it
        cap = self.settings.reconcile_max_interval * (1 if tx.status == "pending" else 10)
        doublings = min(max(attempts - 1, 0), MAX_BACKOFF_DOUBLINGS)
        return min(math.ldexp(self.settings.reconcile_interval, doublings), cap)  # interval × 2**doublings

    async def reconcile_due(self) -> int:
        """Query Daraja about every payment whose next check is due: pending ones, and ones given up
        locally (a success that Daraja confirms later still completes them), the longest due first
        (pending ones before the others, but for a fifth of the places), as many as the query budget
        allows. Returns how many."""
        allowed = self.query_budget.available()
        if not allowed:
            return 0
        now = self.clock()
        limit = min(allowed, QUERIES_PER_PASS)
        candidates = await self.store.due_candidates(now, limit)  # the longest due of each kind
        due = pick_due(candidates, limit, late_at_least=self._late_places(limit))
        claimed = []
        if due:
            # Claim each slot first, so no other pass (or worker) queries the same payment meanwhile.
            async with self.store.transaction() as t:
                for tx in due:
                    attempts = tx.query_attempts + 1
                    backoff = self._backoff(tx, attempts, now)
                    if await t.update(tx.checkout_request_id,
                                      {"status": tx.status, "settled_by": tx.settled_by,
                                       "next_query_at": tx.next_query_at},
                                      {"next_query_at": None if backoff is None else now + backoff,
                                       "query_attempts": attempts}) and backoff is not None:
                        claimed.append(tx)
        self.query_budget.spend(len(claimed))
        await asyncio.gather(*(self._reconcile(tx) for tx in claimed))
        self._note_lag(now, candidates, full=len(due) >= limit)  # (last: nothing it does can hold up the queries)
        return len(claimed)

    def _late_places(self, limit: int) -> int:
        """Places of a pass of `limit` kept for payments given up locally: a fifth of every pass's
        places, the fractions carried to the next pass. So a pass smaller than five (a low query
        rate) keeps its place for them one pass in five, or so, instead of never (a lasting
        pending backlog would otherwise hold up for good the rechecks that find late successes)."""
        self._late_credit += limit
        places, self._late_credit = divmod(self._late_credit, LATE_SHARE)
        return places

    def share_queries(self, processes: int) -> None:
        """`processes` are alive on this database, this one included: each takes an equal share of
        RECONCILE_QUERIES_PER_SECOND, so that together they never send Daraja more (its allowance
        is counted per app, whatever the number of workers and machines)."""
        processes = max(1, processes)
        if processes == self._sharing:
            return
        self._sharing = processes
        rate = self.settings.reconcile_queries_per_second
        self.query_budget.set_rate(rate / processes)
        if processes > 1:
            log.info("%d processes share RECONCILE_QUERIES_PER_SECOND=%d: at most %.3g STK queries a second from "
                     "this one", processes, rate, rate / processes)
        else:
            log.info("this process reconciles alone again: at most %d STK queries a second", rate)

    def _note_lag(self, now: float, candidates: list[Transaction], *, full: bool) -> None:
        """How late the longest-waiting due checks were at the pass that read `candidates` (the
        longest due of each kind), told to the metrics. A pass that took as many as it could (`full`)
        with a pending payment's query CHECK_OVERDUE_AFTER late means the reconciler is behind: warned
        of once, and the catching up once that lag is under half the threshold again. (A lag with
        room left in the pass is what an outage, a restart or a stopped clock leaves: it goes at this
        pass.)"""
        pending = late = 0.0
        for tx in candidates:
            lag = now - (tx.next_query_at if tx.next_query_at is not None else now)
            if tx.status == "pending":
                pending = max(pending, lag)
            else:
                late = max(late, lag)
        if self.lag_observer is not None:
            self.lag_observer(pending, late)
        if not self._behind and full and pending >= CHECK_OVERDUE_AFTER:
            self._behind = True
            log.warning("the reconciler is behind: a pending payment's STK query is %.0f s overdue, and more are due "
                        "than a pass takes (RECONCILE_QUERIES_PER_SECOND=%d; if Daraja answers promptly, see "
                        "mpesa_daraja_request_seconds, raise it within Daraja's allowance)", pending,
                        self.settings.reconcile_queries_per_second)
        elif self._behind and pending < CHECK_OVERDUE_AFTER / 2:
            self._behind = False
            log.info("the reconciler has caught up: the longest-waiting pending payment's STK query is %.0f s "
                     "overdue", pending)

    async def _reconcile(self, tx: Transaction) -> None:
        try:
            result = await self.daraja.stk_query(tx.checkout_request_id)
        except (DarajaError, DarajaUnavailable) as exc:
            log.warning("STK query for %s failed: %s", tx.checkout_request_id, exc)
            result = None
        if result is not None and not result.pending and \
                await self._settle_from_query(tx, result.result_code or "", result.result_desc):
            return
        expired = self.clock() - epoch(tx.created_at) >= self.settings.payment_timeout
        if tx.status == "pending" and expired:
            async with self.store.transaction() as t:
                changed = await t.update(
                    tx.checkout_request_id, {"status": "pending"},
                    {"status": "failed", "result_code": "timeout", "settled_by": "timeout",
                     "result_desc": "No callback and no final answer from M-Pesa in time",
                     "settled_at": iso(self.clock())})
            if changed:
                await self._changed(tx.checkout_request_id)
                log.warning("payment %s given up after %.0f s without an answer; it is still checked, and a "
                            "late success will complete it", tx.checkout_request_id, self.settings.payment_timeout)

    async def _settle_from_query(self, tx: Transaction, code: str, desc: str) -> bool:
        """Settle from Daraja's query answer. From pending: completed or failed. From a local
        give-up: a success completes it (late); a failure replaces "timeout" with the real reason."""
        async with self.store.transaction() as t:
            current = await t.get(tx.checkout_request_id)
            changed = current is not None and await self._apply_query_result(t, current, code, desc)
        if changed:
            await self._changed(tx.checkout_request_id)
            log.info("payment %s settled by STK query: %s %s", tx.checkout_request_id, code, desc)
        return changed

    async def _apply_query_result(self, t: StoreTransaction, tx: Transaction, code: str, desc: str) -> bool:
        if is_settled_by_daraja(tx):
            return False
        changes: dict[str, Any] = {"result_code": code, "result_desc": desc, "settled_by": "query",
                                   "settled_at": iso(self.clock()), "next_query_at": None,
                                   "status": "completed" if code == "0" else "failed"}
        if tx.status == "failed":  # given up locally
            changes["late"] = code == "0"
        if code == "0":
            receipt = await self._receipt_from_unverified_callback(t, tx)
            if receipt is not None:
                changes.update(receipt)
        changed = await t.update(tx.checkout_request_id, _state_of(tx), changes)
        if changed and tx.status == "failed" and code == "0":
            log.warning("LATE SUCCESS: %s was given up locally; Daraja's query says it was paid",
                        tx.checkout_request_id)
        return changed

    async def _receipt_from_unverified_callback(self, t: StoreTransaction, tx: Transaction) -> dict[str, Any] | None:
        """Daraja's query says paid, and carries no receipt. A kept success callback for this payment
        that matches it in every field (but could not be confirmed when it came) supplies one."""
        for row in reversed(await t.callbacks(tx.checkout_request_id, outcomes=("unverified",))):
            try:
                cb = parse_stk_callback(json.loads(row.body))
            except (ValueError, MalformedCallback):
                continue
            owner = await t.receipt_owner(cb.receipt) if cb.receipt else None
            if cb.succeeded and cb.receipt and not mismatches(tx, cb, owner) and tx.merchant_request_id:
                return {"receipt": cb.receipt, "transaction_date": cb.transaction_date, "raw_callback": row.body}
        return None

    # -- recovery ------------------------------------------------------------------------------

    def answer_deadline(self) -> float:
        """After this long, a push's answer can no longer come: a token refresh and a retry, each
        within the Daraja time-out, and some slack."""
        return self.settings.daraja_timeout * 3 + 5

    async def recover(self, everything: bool = True) -> dict[str, int]:
        """Finish what a crash (or a lost answer) left half done. Run at start-up and periodically;
        `everything=False`: accepted attempts are looked at only among those made since this
        process's previous pass (see below)."""
        now = self.clock()
        counts = {"lost_answers": 0, "repaired": 0, "callbacks": 0}
        stale = [a for a in await self.store.stale_attempts(now - self.answer_deadline())
                 if a.id not in self._attempts_in_flight]
        if stale:
            async with self.store.transaction() as t:
                for attempt in stale:
                    counts["lost_answers"] += await t.set_attempt(attempt.id, "unknown", only_from=("sending",))
            log.warning("%d push attempt(s) never got Daraja's answer (a crash or a time-out); each is kept, and "
                        "a callback that Daraja's query confirms will be matched to it", counts["lost_answers"])
        # A push's attempt is marked accepted in the unit of work that stores its payment, so an
        # accepted attempt without one is what a crash of an earlier release, a restore or a hand
        # edit leaves: looked for among all attempts at start-up and hourly (that join grows with
        # every push ever made: about a second at 1,000,000), else among the newer ones only.
        newest = await self.store.last_attempt_id()
        missing = await self.store.accepted_attempts_without_payment(0 if everything else self._attempts_checked_to)
        if len(missing) < MISSING_BATCH:  # all found (else the rest come in the next pass)
            self._attempts_checked_to = newest
        for attempt in missing:
            assert attempt.checkout_request_id is not None
            async with self.store.transaction() as t:
                if await t.get(attempt.checkout_request_id) is not None:
                    continue
                await t.insert(Transaction(
                    checkout_request_id=attempt.checkout_request_id, merchant_request_id="",
                    phone=attempt.phone, amount=attempt.amount, account_reference=attempt.account_reference,
                    description=attempt.description, created_at=iso(attempt.created_epoch),
                    updated_at=iso(now), next_query_at=now, order_id=attempt.order_id))
            counts["repaired"] += 1
            log.warning("REPAIRED: push attempt %d was accepted by Daraja as %s but its payment was not stored; "
                        "stored now, to be settled by an STK query", attempt.id, attempt.checkout_request_id)
        for row in await self.store.open_callbacks(iso(now - 2.0)):
            counts["callbacks"] += await self._resume_callback(row, now)
        return counts

    async def _resume_callback(self, row: LoggedCallback, now: float) -> int:
        if row.checkout_request_id in self._verifications:
            return 0
        try:
            cb = parse_stk_callback(json.loads(row.body))
        except (ValueError, MalformedCallback):
            async with self.store.transaction() as t:
                await t.set_callback_outcome(row.id, "malformed", "unreadable when resumed")
            return 1
        if row.outcome == "received":  # the process stopped before it was matched
            async with self.store.transaction() as t:
                outcome = await self._match(t, row.id, cb, row.body, adopt=True)
            await self._after_match(cb, outcome)
        elif now - epoch(row.received_at) >= VERIFY_GIVE_UP:
            async with self.store.transaction() as t:
                await t.set_callback_outcome(row.id, "unverified", "Daraja could not be asked about it for an hour")
        else:
            self._verify_soon(cb.checkout_request_id)
        return 1

    async def close(self) -> None:
        """Stop verifications under way (their callbacks stay `verifying` for the next start)."""
        for task in list(self._verifications.values()):
            task.cancel()
        for task in list(self._verifications.values()):
            with contextlib.suppress(asyncio.CancelledError):
                await task


def _state_of(tx: Transaction) -> dict[str, Any]:
    """The columns a transition was decided on; the write only happens if they still hold."""
    return {"status": tx.status, "receipt": tx.receipt, "settled_by": tx.settled_by}


async def reconcile_forever(service: PaymentService, tick: float = 1.0, leases: Leases | None = None) -> None:
    """Reconcile due payments every `tick`; recover every RECOVERY_EVERY, starting now. With `leases`
    (several processes on one database), a recovery pass runs in one process at a time, and not
    again anywhere until RECOVERY_EVERY has passed: the first process to start recovers."""
    last_recovery = last_beat = last_full = float("-inf")
    away_since: float | None = None  # the database has been unreachable since then
    while True:
        try:
            if leases is not None and time.monotonic() - last_beat >= HEARTBEAT_EVERY:
                await leases.claim("process", leases.holder, PROCESS_LEASE)  # "this process is alive"
                service.share_queries(await leases.held("process"))
                last_beat = time.monotonic()
            if time.monotonic() - last_recovery >= RECOVERY_EVERY:
                last_recovery = time.monotonic()
                if leases is None or await leases.claim("recovery", "", RECOVERY_EVERY):
                    everything = time.monotonic() - last_full >= FULL_RECOVERY_EVERY
                    await service.recover(everything)
                    if everything:
                        last_full = time.monotonic()
            await service.apply_deferred()
            await service.reconcile_due()
            if away_since is not None:
                log.warning("the database is back after %.1f s; reconciling again", time.monotonic() - away_since)
                away_since = None
        except asyncio.CancelledError:
            raise
        except UNAVAILABLE as exc:  # one line when it goes, one when it is back: not a traceback per tick
            last_recovery = float("-inf")  # recover again as soon as it is back
            if away_since is None:
                away_since = time.monotonic()
                log.warning("the database is unreachable (%s): reconciliation waits for it", type(exc).__name__)
        except Exception:  # keep reconciling: one bad pass must not stop the loop
            log.exception("reconciliation pass failed")
        await asyncio.sleep(tick)
