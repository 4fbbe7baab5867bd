"""Signed webhooks to the shop's backend, from a durable outbox.

An event is written into `webhook_events` by a store listener, inside the very transaction that
changes the payment (or the order) it reports: it commits with the change or not at all, and a
change that is not made writes nothing. A background worker then delivers each pending event:

- it claims the due events in a transaction (moving their `next_attempt_at` on by a lease, so the
  same event is not sent twice at once), POSTs each one, and records the outcome in another;
- every attempt is a `webhook_attempts` row (HTTP status or error, duration);
- a 2xx answer is a delivery (`state = 'delivered'`); anything else, or no answer within
  WEBHOOK_TIMEOUT_SECONDS, is retried with exponential back-off until WEBHOOK_RETRY_SECONDS after
  the event was created, then the event is `failed` (an operator can resend it: `resend_event`);
- the state lives in the table, so a restart carries on where the last process stopped.

The body sent is the one stored when the event was written, byte for byte, on every attempt, with
the event's id; only the signature's timestamp changes. The signature is Stripe's shape:
`Mpesa-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import re
import secrets
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp import web
from yarl import URL

from .config import ConfigError, Settings
from .handlers import status_body
from .keys import PAYMENTS, SETTINGS
from .observability import METRICS
from .payments import iso
from .storage import Listener, StoreTransaction, Transaction, TransactionStore

log = logging.getLogger("gateway.webhooks")

SIGNATURE_HEADER = "Mpesa-Signature"
EVENT_ID_HEADER = "Mpesa-Event-Id"
USER_AGENT = "mpesa-gateway-webhooks/0.1"

FIRST_RETRY = 5.0  # seconds, or half of WEBHOOK_TIMEOUT_SECONDS when that is shorter
MAX_RETRY = 3600.0  # the back-off doubles up to this
MAX_DOUBLINGS = 30  # 2**30 × any first delay is already far past the cap
LEASE_SLACK = 5.0  # a claimed event is due again this long after its attempt's time-out
POLL_EVERY = 1.0  # seconds: the table is looked at at least this often (a resend by another process)
CONCURRENT_DELIVERIES = 8
ERROR_CAP = 300  # characters of an error (or the receiver's answer) kept with an attempt
UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]+")  # no line breaks or escapes in logs
SECRET_MIN = 8  # a path or query shorter than this is not taken for a secret (it would garble answers)
LOOPBACK_NAMES = ("localhost", "localhost.localdomain", "ip6-localhost")


def enabled(settings: Settings) -> bool:
    return bool(settings.webhook_url and settings.webhook_secret)


def retry_delay(settings: Settings, attempts: int) -> float:
    """Seconds from the `attempts`-th failed attempt to the next: FIRST_RETRY (or half the time-out,
    if shorter), doubling, at most MAX_RETRY."""
    first = min(FIRST_RETRY, settings.webhook_timeout / 2)
    doublings = min(max(attempts - 1, 0), MAX_DOUBLINGS)
    return min(math.ldexp(first, doublings), MAX_RETRY)


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `Mpesa-Signature` header's value for `body` sent at `timestamp`."""
    digest = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def new_event_id() -> str:
    return "evt_" + secrets.token_urlsafe(18)


def shown_url(url: str) -> str:
    """What logs and the attempts table say of the receiver: its scheme, host and port only. Its
    user name and password, path and query may be secrets of the shop's (a token in the path)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme}://{host}" + (f":{port}" if port else "")


def _url_secrets(url: str) -> list[str]:
    """The parts of the receiver's URL that must not be repeated in a log line or an attempt's error,
    longest first (a library's error message may quote the URL, in any of its spellings)."""
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    found = {url, yarl_url(url), parts.password or ""} | {p for p in (path, parts.query) if len(p) >= SECRET_MIN}
    return sorted((s for s in found if s), key=len, reverse=True)


def yarl_url(url: str) -> str:
    """The URL as aiohttp spells it (its errors quote it so)."""
    try:
        return str(URL(url))
    except (TypeError, ValueError):
        return url


# -- the events --------------------------------------------------------------------------------

def payment_data(tx: Transaction) -> dict[str, Any]:
    """What `payment.completed` and `payment.failed` carry."""
    return {
        "checkoutRequestId": tx.checkout_request_id,
        "orderId": tx.order_id,
        "status": tx.status,
        "amount": tx.amount,
        "phone": tx.phone,
        "receipt": tx.receipt,
        "resultCode": tx.result_code,
        "resultDesc": tx.result_desc,
        "message": status_body(tx)["message"],
        "settledBy": tx.settled_by,
        "late": tx.late,
        "createdAt": tx.created_at,
        "settledAt": tx.settled_at,
    }


def _json_or_text(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def order_data(order: Mapping[str, Any], receipt: str | None) -> dict[str, Any]:
    """What `order.paid` carries (`order` is the orders table's row)."""
    return {
        "orderId": order.get("order_id"),
        "reference": order.get("reference"),
        "amount": order.get("amount"),
        "status": order.get("status"),
        "checkoutRequestId": order.get("checkout_request_id"),
        "receipt": receipt,
        "metadata": _json_or_text(order.get("metadata")),
        "paidAt": order.get("paid_at"),
    }


async def write_event(t: StoreTransaction, kind: str, data: dict[str, Any], now: float) -> str:
    """Put an event in the outbox, inside the caller's transaction. Returns its id."""
    event_id = new_event_id()
    body = json.dumps({"id": event_id, "type": kind, "created": int(now), "data": data},
                      separators=(",", ":"), allow_nan=False)
    await t.execute("INSERT INTO webhook_events (event_id, type, body, created_epoch, state, attempts, "
                    "next_attempt_at) VALUES (?, ?, ?, ?, 'pending', 0, ?)", (event_id, kind, body, now, now))
    return event_id


async def resend_event(store: TransactionStore, event_id: str) -> bool:
    """Send an event again (the operator's Resend): pending and due now, with the same id and body.
    Works on any event (pending, delivered or failed); False if there is no such event. A running
    worker in this process starts at once; one in another process within POLL_EVERY."""
    async with store.transaction() as t:
        changed, _ = await t.execute(
            "UPDATE webhook_events SET state = 'pending', next_attempt_at = ? WHERE event_id = ?",
            (time.time(), event_id))
    if changed:
        log.info("webhook event %s queued again by the operator", event_id)
        worker = _WORKERS.get(store)
        if worker is not None:
            worker.wake()
    return bool(changed)


# -- delivery ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Claimed:
    event_id: str
    kind: str
    body: str
    created_epoch: float
    attempts: int


@dataclass(frozen=True)
class _Outcome:
    status: int | None
    error: str | None
    duration_ms: float

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


# The worker delivering from a store in this process, so that `resend_event` can wake it.
_WORKERS: weakref.WeakKeyDictionary[TransactionStore, Deliveries] = weakref.WeakKeyDictionary()


class Deliveries:
    """The outbox's worker: claims due events, delivers them (a few at once), records each attempt."""

    def __init__(self, store: TransactionStore, settings: Settings, session: aiohttp.ClientSession, *,
                 clock: Callable[[], float] = time.time,
                 counted: Callable[[str], None] = lambda result: None) -> None:
        self.counted = counted  # told of each attempt: delivered, retrying, failed, cut short
        self.store = store
        self.settings = settings
        self.session = session
        self.clock = clock
        self._wake = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._where = shown_url(settings.webhook_url)  # for logs: never the URL's credentials, path or query
        self._secrets = _url_secrets(settings.webhook_url)

    def wake(self) -> None:
        self._wake.set()

    async def run(self) -> None:
        while True:
            self._wake.clear()  # a wake-up from here on makes the pause below end at once
            try:
                await self.deliver_due()
                pause = await self._pause()
            except asyncio.CancelledError:
                raise
            except Exception:  # keep delivering: one bad pass must not stop the worker
                log.exception("webhook delivery pass failed")
                pause = POLL_EVERY
            # asyncio.timeout, not wait_for: on Python 3.11, wait_for swallows a cancellation that
            # arrives as the event is set, and this loop (so the app's shutdown) would never end.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(pause):
                    await self._wake.wait()

    async def _pause(self) -> float:
        """Seconds until an event that is not being delivered is due (at most POLL_EVERY); with
        every slot taken, until a delivery ends (it wakes the worker)."""
        if len(self._in_flight) >= CONCURRENT_DELIVERIES:
            return POLL_EVERY
        rows = await self.store.fetch_all(
            "SELECT event_id, next_attempt_at FROM webhook_events WHERE state = 'pending' "
            "ORDER BY next_attempt_at LIMIT ?", (len(self._in_flight) + 1,))
        due = [float(r[1]) for r in rows if r[0] not in self._in_flight and r[1] is not None]
        if not due:
            return POLL_EVERY
        return min(max(due[0] - self.clock(), 0.0), POLL_EVERY)

    async def deliver_due(self) -> int:
        """Claim the events that are due and start their deliveries. Returns how many started."""
        free = CONCURRENT_DELIVERIES - len(self._in_flight)
        if free <= 0:
            return 0
        now = self.clock()
        claimed: list[_Claimed] = []
        async with self.store.transaction() as t:
            rows = await t.fetch_all(
                "SELECT event_id, type, body, created_epoch, attempts FROM webhook_events "
                "WHERE state = 'pending' AND next_attempt_at <= ? ORDER BY next_attempt_at, rowid LIMIT ?",
                (now, free + len(self._in_flight)))
            for row in rows:
                if row["event_id"] in self._in_flight or len(claimed) >= free:
                    continue
                # The lease: due again only if this attempt's outcome is never recorded (a crash).
                await t.execute("UPDATE webhook_events SET next_attempt_at = ? WHERE event_id = ?",
                                (now + self.settings.webhook_timeout + LEASE_SLACK, row["event_id"]))
                claimed.append(_Claimed(row["event_id"], row["type"], row["body"], float(row["created_epoch"]),
                                        int(row["attempts"])))
        for event in claimed:
            task = asyncio.create_task(self._deliver(event))
            self._in_flight[event.event_id] = task
            task.add_done_callback(functools.partial(self._done, event.event_id))
        return len(claimed)

    def _done(self, event_id: str, _: object) -> None:
        self._in_flight.pop(event_id, None)
        self.wake()  # a slot is free

    async def _deliver(self, event: _Claimed) -> None:
        started = time.monotonic()
        try:
            outcome = await self.post(event)
        except asyncio.CancelledError:  # the gateway is stopping: the event is due again at the next start
            cut = _Outcome(None, "cut short: the gateway stopped during this attempt",
                           round((time.monotonic() - started) * 1000, 1))
            await self._record(event, cut, retry_at=self.clock())
            raise
        await self._record(event, outcome)

    async def post(self, event: _Claimed) -> _Outcome:
        """One attempt: the stored body, signed now. Never raises for the receiver's failings."""
        body = event.body.encode()
        headers = {"Content-Type": "application/json", "User-Agent": USER_AGENT, EVENT_ID_HEADER: event.event_id,
                   SIGNATURE_HEADER: sign(self.settings.webhook_secret, int(self.clock()), body)}
        timeout = self.settings.webhook_timeout
        started = time.monotonic()
        status: int | None = None
        error: str | None = None
        try:
            async with self.session.post(self.settings.webhook_url, data=body, headers=headers,
                                         allow_redirects=False,
                                         timeout=aiohttp.ClientTimeout(total=timeout)) as resp:
                status = resp.status
                if not 200 <= status < 300:
                    answer = (await resp.content.read(ERROR_CAP)).decode("utf-8", "replace").strip()
                    error = f"HTTP {status}" + (f": {answer}" if answer else "")
        except TimeoutError:
            status, error = None, f"no answer within {timeout:g} s"
        except (aiohttp.ClientError, OSError, ValueError) as exc:
            status, error = None, f"{type(exc).__name__}: {exc}"
        duration_ms = (time.monotonic() - started) * 1000
        if error is not None:
            error = self._clean(error)
        return _Outcome(status, error, round(duration_ms, 1))

    def _clean(self, error: str) -> str:
        """An error (or the receiver's answer) fit for a log line and the operator's page: without the
        URL's secrets, on one line, and short."""
        for secret in self._secrets:
            error = error.replace(secret, "…")
        return UNPRINTABLE.sub(" ", error).strip()[:ERROR_CAP]

    async def _record(self, event: _Claimed, outcome: _Outcome, *, retry_at: float | None = None) -> None:
        now = self.clock()
        attempts = event.attempts + 1
        deadline = event.created_epoch + self.settings.webhook_retry_for
        async with self.store.transaction() as t:
            await t.execute("INSERT INTO webhook_attempts (event_id, at, status, error, duration_ms) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (event.event_id, iso(now), outcome.status, outcome.error, outcome.duration_ms))
            if outcome.delivered:
                await t.execute(
                    "UPDATE webhook_events SET state = 'delivered', attempts = attempts + 1, next_attempt_at = NULL, "
                    "last_status = ?, last_error = NULL, delivered_at = ? WHERE event_id = ?",
                    (outcome.status, iso(now), event.event_id))
            elif now >= deadline and retry_at is None:
                await t.execute(
                    "UPDATE webhook_events SET state = 'failed', attempts = attempts + 1, next_attempt_at = NULL, "
                    "last_status = ?, last_error = ? WHERE event_id = ?",
                    (outcome.status, outcome.error, event.event_id))
            else:
                await t.execute(
                    "UPDATE webhook_events SET attempts = attempts + 1, next_attempt_at = ?, last_status = ?, "
                    "last_error = ? WHERE event_id = ?",
                    (retry_at if retry_at is not None else min(now + retry_delay(self.settings, attempts), deadline),
                     outcome.status, outcome.error, event.event_id))
        self.counted("cut_short" if retry_at is not None else "delivered" if outcome.delivered
                     else "failed" if now >= deadline else "retrying")
        if retry_at is not None:
            log.warning("webhook %s %s attempt %d to %s cut short by the shutdown; it is sent again at the next "
                        "start", event.kind, event.event_id, attempts, self._where)
        elif outcome.delivered:
            log.info("webhook %s %s delivered to %s (attempt %d, HTTP %d)", event.kind, event.event_id,
                     self._where, attempts, outcome.status)
        elif now >= deadline:
            log.error("webhook %s %s FAILED: not delivered to %s in %d attempts over %.0f s (last: %s); "
                      "an operator can resend it", event.kind, event.event_id, self._where, attempts,
                      self.settings.webhook_retry_for, outcome.error)
        else:
            log.warning("webhook %s %s attempt %d to %s failed (%s); retrying", event.kind, event.event_id,
                        attempts, self._where, outcome.error)

    async def close(self) -> None:
        """Stop the deliveries under way: each records its attempt as cut short, due again at once."""
        tasks = list(self._in_flight.values())
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task


# -- wiring ------------------------------------------------------------------------------------

def _listeners(worker: Callable[[], Deliveries | None]) -> tuple[Listener, Listener]:
    def written() -> None:
        current = worker()
        if current is not None:
            # Woken after this transaction: the worker's claim waits for the write lock, i.e. the commit.
            asyncio.get_running_loop().call_soon(current.wake)

    async def on_payment(t: StoreTransaction, tx: Transaction, previous_status: str | None) -> None:
        kind = {"completed": "payment.completed", "failed": "payment.failed"}.get(tx.status)
        if kind is None:
            return
        await write_event(t, kind, payment_data(tx), time.time())
        written()

    async def on_order(t: StoreTransaction, order: Mapping[str, Any], previous_status: str | None) -> None:
        row = dict(order)
        if row.get("status") != "paid" or previous_status == "paid":
            return
        payment = await t.get(row["checkout_request_id"]) if row.get("checkout_request_id") else None
        await write_event(t, "order.paid", order_data(row, payment.receipt if payment else None), time.time())
        written()

    return on_payment, on_order


async def webhooks_ctx(app: web.Application) -> AsyncIterator[None]:
    """The listeners that write events (registered before anything can change a payment) and the
    worker that delivers them, with its own HTTP session."""
    settings = app[SETTINGS]
    store = app[PAYMENTS].store
    holder: list[Deliveries] = []
    on_payment, on_order = _listeners(lambda: holder[0] if holder else None)
    store.listen("payment", on_payment)
    store.listen("order", on_order)
    connector = aiohttp.TCPConnector(limit=CONCURRENT_DELIVERIES)
    # No cookie jar: every delivery stands alone, and a receiver cannot fill the gateway's memory
    # with cookies. (Redirects are not followed, and an answer's body is read at most ERROR_CAP bytes.)
    async with aiohttp.ClientSession(connector=connector, cookie_jar=aiohttp.DummyCookieJar()) as session:
        webhooks = app[METRICS].webhooks
        deliveries = Deliveries(store, settings, session, counted=lambda result: webhooks.labels(result).inc())
        holder.append(deliveries)
        _WORKERS[store] = deliveries
        task = asyncio.create_task(deliveries.run())
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await deliveries.close()
            _WORKERS.pop(store, None)


def _is_this_gateway(settings: Settings) -> bool:
    """Whether MERCHANT_WEBHOOK_URL is the gateway's own listening address, or its CALLBACK_URL.
    Events sent there would only come back as malformed callbacks or refused requests, retried for
    WEBHOOK_RETRY_SECONDS, and the shop would hear of nothing."""
    target = urlsplit(settings.webhook_url)
    callback = urlsplit(settings.callback_url)
    if (target.scheme, target.netloc.lower(), target.path.rstrip("/")) == (
            callback.scheme, callback.netloc.lower(), callback.path.rstrip("/")):
        return True
    host = (target.hostname or "").lower()
    try:
        port = target.port or (443 if target.scheme == "https" else 80)
    except ValueError:
        return False
    if port != settings.port:
        return False
    if host in LOOPBACK_NAMES or host == settings.host.lower():
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_unspecified


def install_webhooks(app: web.Application) -> None:
    """Write an event for every change the shop hears of, and deliver them, signed, until they land.
    Only when MERCHANT_WEBHOOK_URL and MERCHANT_WEBHOOK_SECRET are set: otherwise nothing is written.
    Refused (ConfigError) when MERCHANT_WEBHOOK_URL is this gateway itself."""
    settings = app[SETTINGS]
    if not enabled(settings):
        return
    if _is_this_gateway(settings):
        raise ConfigError(f"MERCHANT_WEBHOOK_URL ({shown_url(settings.webhook_url)}/…) is this gateway itself: "
                          "set it to the shop's backend, which receives the events")
    app.cleanup_ctx.append(webhooks_ctx)
