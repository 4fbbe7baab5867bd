"""The gateway's HTTP contract: /stkpush, /stkpush/status, /health and Daraja's callback."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp_sse import sse_response

from .checkout import Checkout, CheckoutError, is_clean_text, mask_phone, parse_checkout
from .clients import client_address, own_origin
from .config import Settings
from .daraja.errors import DarajaError, DarajaUnavailable
from .daraja.wire import MalformedCallback
from .keys import CLIENT_PUSH_LIMITER, LOOKUP_LIMITER, PAYMENTS, PUSH_LIMITER, SETTINGS, STREAM_LIMITS
from .limits import retry_after_header
from .observability import METRICS
from .payments import token_matches
from .result_messages import customer_message, daraja_answer
from .storage import Transaction
from .storage_pg import UNAVAILABLE
from .streams import tracked_stream

log = logging.getLogger("gateway.http")

MAX_ID_LENGTH = 100


T = TypeVar("T")


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, *, headers: dict[str, str] | None = None,
                 **extra: Any) -> None:
        super().__init__(message)
        self.message, self.status, self.headers, self.extra = message, status, headers or {}, extra


def failure(message: str, status: int, *, headers: dict[str, str] | None = None, **extra: Any) -> web.Response:
    return web.json_response({"success": False, "message": message, **extra}, status=status, headers=headers)


def too_many(message: str, wait: float) -> BadRequest:
    return BadRequest(message, 429, headers={"Retry-After": retry_after_header(wait)})


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


class DuplicateField(ValueError):
    def __init__(self, name: str) -> None:
        super().__init__(f'Request body has the field "{name[:40]}" more than once')


def _unique_fields(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """An object whose fields are each named once: {"amount": 1, "amount": 200} means two things,
    and a proxy or a log that reads the first would disagree with us reading the last."""
    body = dict(pairs)
    if len(body) != len(pairs):
        seen: set[str] = set()
        for name, _ in pairs:
            if name in seen:
                raise DuplicateField(name)
            seen.add(name)
    return body


# Made once: json.loads with any hook builds a decoder per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float)
_UNIQUE_DECODER = json.JSONDecoder(parse_constant=_reject_constant, parse_float=_finite_float,
                                   object_pairs_hook=_unique_fields)


def loads_json(raw: bytes | str, *, unique_fields: bool = False) -> Any:
    """JSON as the standard defines it: no NaN or Infinity, no number too big for a float; with
    `unique_fields`, no object naming a field twice (`DuplicateField`)."""
    if not isinstance(raw, str):  # as json.loads reads bytes: UTF-8, -16 or -32, by the first bytes
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
    return (_UNIQUE_DECODER if unique_fields else _DECODER).decode(raw)


def _origin_allowed(request: web.Request, settings: Settings) -> bool:
    """No Origin (a server, curl) or our own pages' origin, or the configured front end's."""
    origin = request.headers.get("Origin")
    if origin is None:
        return True
    if origin.rstrip("/") == settings.frontend_url or origin == own_origin(request):
        return True  # the front end, or this page's own origin exactly (most polls: no parsing)
    parts = urlsplit(origin)
    return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()


def check_json_request(request: web.Request) -> None:
    """A JSON API call from a page this gateway trusts (or from no page at all), else BadRequest."""
    if not _origin_allowed(request, request.app[SETTINGS]):
        # CORS keeps other sites from reading answers; this keeps them from sending requests.
        raise BadRequest("Cross-origin request refused", 403)
    if request.content_type != "application/json":
        raise BadRequest("Content-Type must be application/json", 415)


async def read_body(request: web.Request) -> bytes:
    try:
        return await request.read()  # aiohttp enforces client_max_size (413) before this returns
    except (web.RequestPayloadError, ConnectionResetError):  # a client that left mid-body
        raise BadRequest("Request body could not be read") from None


async def read_json_object(request: web.Request) -> dict[str, Any]:
    """The body of a JSON API call, from a page this gateway trusts."""
    check_json_request(request)
    raw = await read_body(request)  # read once: an idempotency check before may have read it already
    try:
        body = loads_json(raw, unique_fields=True)
    except DuplicateField as exc:
        raise BadRequest(str(exc)) from None
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadRequest("Request body must be valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body


def daraja_failure(exc: DarajaError | DarajaUnavailable) -> web.Response:
    """Daraja's failure as the shop's customer is told it: a lookup in `DARAJA_ANSWERS`."""
    answer = daraja_answer(exc)
    if answer.logged:
        log.error("Daraja: %s: %s", type(exc).__name__, exc)
    extra: dict[str, Any] = {}
    if answer.field is not None:
        extra["field"] = answer.field
    if answer.with_error_code and isinstance(exc, DarajaError):
        extra["errorCode"] = exc.error_code
    headers = {"Retry-After": str(answer.retry_after)} if answer.retry_after is not None else None
    return failure(answer.message, answer.status, headers=headers, **extra)


def _refused(exc: DarajaError | DarajaUnavailable) -> bool:
    """Daraja surely did not prompt the customer."""
    return isinstance(exc, DarajaError) or not exc.maybe_sent


async def stk_push(request: web.Request) -> web.Response:
    """A push for a shop's order (`orderId`: the order sets amount, reference and description), or
    for an amount the browser sends, when FREE_AMOUNT_PUSHES allows it."""
    settings = request.app[SETTINGS]
    body = await read_json_object(request)
    if body.get("orderId") is not None:
        from .orders import order_checkout  # (orders builds on this module's helpers)

        async with order_checkout(request, body) as checkout:  # one push at a time per order
            return await push_checkout(request, checkout)
    if not settings.free_amount_pushes:
        return failure("orderId is required", 400, field="orderId")
    try:
        checkout = parse_checkout(body, settings.max_amount)
    except CheckoutError as exc:
        return failure(exc.message, 400, field=exc.field)
    return await push_checkout(request, checkout)


async def push_checkout(request: web.Request, checkout: Checkout) -> web.Response:
    """The push itself, within the per-client and per-phone limits."""
    pushes = request.app[METRICS].pushes
    client = client_address(request)
    wait = await request.app[CLIENT_PUSH_LIMITER].take(client)
    if wait:
        pushes.labels("limited").inc()
        # Stops one client firing prompts at many phones.
        raise too_many("Too many payment requests from your connection. Please wait a few minutes and try again.",
                       wait)
    per_phone = request.app[PUSH_LIMITER]
    wait = await per_phone.take(checkout.phone)  # reserved before the push: concurrent requests cannot all pass
    if wait:
        pushes.labels("limited").inc()
        # Stops a checkout being used to bombard someone's phone with payment prompts.
        raise too_many("Too many payment requests to this phone. Please wait a few minutes and try again.", wait)
    started = time.perf_counter()
    phone = mask_phone(checkout.phone)
    try:
        pushed = await request.app[PAYMENTS].start(checkout)
    except (DarajaError, DarajaUnavailable) as exc:
        if _refused(exc):  # no prompt reached the phone: a refusal must not lock the customer out
            await per_phone.give_back(checkout.phone)
        outcome = "refused" if isinstance(exc, DarajaError) else "unknown" if exc.maybe_sent else "unavailable"
        pushes.labels(outcome).inc()
        log.info("STK push to %s: %s", phone, outcome, extra={
            "phone": phone, "outcome": outcome, "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
        return daraja_failure(exc)
    tx = pushed.transaction
    pushes.labels("accepted").inc()
    log.info("STK push to %s for KES %d: accepted as %s", phone, tx.amount, tx.checkout_request_id, extra={
        "payment_id": tx.checkout_request_id, "phone": phone, "outcome": "accepted",
        "duration_ms": round((time.perf_counter() - started) * 1000, 1)})
    return web.json_response({"success": True, "checkoutRequestId": tx.checkout_request_id,
                              "message": "STK push sent successfully", "paymentToken": pushed.token})


def status_body(tx: Transaction, detailed: bool = False) -> dict[str, Any]:
    """The status answer. The guide's fields for anyone with the id; amount, phone, reference and
    description only for the browser holding the payment's token (`detailed`)."""
    common: dict[str, Any] = {"checkoutRequestId": tx.checkout_request_id}
    if detailed:
        common.update(amount=tx.amount, phoneMasked=mask_phone(tx.phone), accountReference=tx.account_reference,
                      description=tx.description)
    if tx.status == "pending":
        return {"success": True, "status": "pending", "message": "Waiting for user to complete payment", **common}
    if tx.status == "completed":
        message = "Payment completed" if tx.receipt else \
            "Payment confirmed by M-Pesa; the receipt number has not arrived yet"
        return {"success": True, "status": "completed", "transaction_id": tx.receipt,
                "MpesaReceiptNumber": tx.receipt, "message": message, **common}
    return {"success": False, "status": "failed", "message": customer_message(tx.result_code, tx.result_desc or ""),
            "resultCode": tx.result_code, **common}


# The status answer's JSON by what it says: the same poll repeats every 3 s until its payment
# changes, so each answer is encoded once. Keyed by exactly the fields `status_body` reads (a test
# holds the two together), not by the payment itself: PostgreSQL reads a new one at every poll, and
# the answers kept must not keep whole payments (their callbacks' bodies) alive.
_ANSWERS: dict[tuple[Any, ...], bytes] = {}
ANSWERS_KEPT = 20_000  # answers kept at most (then all are dropped, and the next polls encode again)


def status_key(tx: Transaction, detailed: bool) -> tuple[Any, ...]:
    """What `status_body(tx, detailed)` depends on, and nothing else."""
    said = (tx.checkout_request_id, tx.status, tx.receipt, tx.result_code, tx.result_desc)
    # (the amount's type too: 100 == 100.0 as keys, but they are written differently)
    return (*said, tx.amount, type(tx.amount), tx.phone, tx.account_reference, tx.description) if detailed else said


def status_json(tx: Transaction, detailed: bool) -> bytes:
    """`status_body(tx, detailed)` as JSON, encoded once per answer."""
    key = status_key(tx, detailed)
    answer = _ANSWERS.get(key)
    if answer is None:
        answer = json.dumps(status_body(tx, detailed)).encode()
        if len(_ANSWERS) >= ANSWERS_KEPT:
            _ANSWERS.clear()
        _ANSWERS[key] = answer
    return answer


class LookupLimited(Exception):
    def __init__(self, retry_after: float) -> None:
        super().__init__(f"too many lookups of unknown payments; retry after {retry_after:.0f} s")
        self.retry_after = retry_after


async def limited_lookup(request: web.Request, read: Callable[[], Awaitable[T | None]]) -> T | None:
    """`read()` for a browser, within the per-client limit on lookups of things that do not exist
    (`LookupLimited`). Counted as a miss before the read and given back on a hit: lookups sent all
    at once cannot all pass a check that is only counted once their reads come back."""
    found, wait = await request.app[LOOKUP_LIMITER].lookup(client_address(request), read)
    if wait:
        raise LookupLimited(wait)
    return found


async def find_payment(request: web.Request, checkout_request_id: str) -> Transaction | None:
    """A payment by id, for a browser. Ids follow Daraja's guessable shape (time and phone), so a
    client that keeps asking about ids that do not exist is stopped for a while (`LookupLimited`)."""
    checkout_request_id = checkout_request_id.strip()

    async def read() -> Transaction | None:
        if 0 < len(checkout_request_id) <= MAX_ID_LENGTH and is_clean_text(checkout_request_id):
            return await request.app[PAYMENTS].get(checkout_request_id)
        return None

    return await limited_lookup(request, read)


async def _find_or_fail(request: web.Request, checkout_request_id: str) -> Transaction:
    try:
        tx = await find_payment(request, checkout_request_id)
    except LookupLimited as exc:
        raise too_many("Too many lookups of payments that do not exist. Please wait and try again.",
                       exc.retry_after) from None
    if tx is None:
        raise BadRequest("Transaction not found", 404)
    return tx


async def stk_status(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    checkout_request_id = body.get("checkoutRequestId")
    if not isinstance(checkout_request_id, str) or not checkout_request_id.strip():
        return failure("checkoutRequestId is required", 400, field="checkoutRequestId")
    tx = await _find_or_fail(request, checkout_request_id)
    answer = status_json(tx, token_matches(tx, body.get("paymentToken")))
    return web.Response(body=answer, content_type="application/json", charset="utf-8")


async def health(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        database = "ok" if await request.app[PAYMENTS].store.ping() else "error"
    except Exception:  # noqa: BLE001 - health reports, it does not raise
        database = "error"
    now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"status": "ok" if database == "ok" else "degraded", "timestamp": now,
            "service": f"{settings.business_name} M-Pesa Payment Server", "mode": settings.mpesa_env,
            "database": database}
    return web.json_response(body, status=200 if database == "ok" else 503)


def is_final(tx: Transaction) -> bool:
    return tx.status != "pending"


async def stk_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events for one payment: `status` (the /stkpush/status body) now and on every
    change, until the payment is settled or the page's polling window is over."""
    checkout_request_id = request.match_info["checkout_request_id"]
    tx = await _find_or_fail(request, checkout_request_id)
    return await stream_payment(request, tx, token_matches(tx, request.query.get("paymentToken")))


async def stream_payment(request: web.Request, tx: Transaction, detailed: bool) -> web.StreamResponse:
    """The `status` events of one payment (the status body, `detailed` or not)."""
    payments = request.app[PAYMENTS]
    window = request.app[SETTINGS].poll_timeout
    deadline = asyncio.get_running_loop().time() + window + min(window, 30.0)  # a little longer than the page listens
    with request.app[STREAM_LIMITS].hold(client_address(request)) as allowed:
        if not allowed:
            raise too_many("Too many live updates open. Please close other checkout tabs; this page will "
                           "check by polling.", 10)
        if _gone(request):  # the browser left while the payment was read: nobody to stream to
            return web.Response(status=204)
        with tracked_stream(request), payments.events.subscribe(tx.checkout_request_id) as changes:
            async with sse_response(request, ping_interval=15) as stream:  # (no await since the check)
                with contextlib.suppress(ConnectionResetError):  # the browser left while an event was on its way
                    await _follow(request, stream, changes, tx.checkout_request_id, detailed, deadline)
                return stream


def _gone(request: web.Request) -> bool:
    return request.transport is None or request.transport.is_closing()


async def _follow(request: web.Request, stream: Any, changes: asyncio.Queue[Transaction], checkout_request_id: str,
                  detailed: bool, deadline: float) -> None:
    loop = asyncio.get_running_loop()
    current = await request.app[PAYMENTS].get(checkout_request_id)  # after subscribing: no change slips by
    if current is None:
        return
    await stream.send(status_json(current, detailed).decode(), event="status")
    while not is_final(current) and loop.time() < deadline:
        try:
            # Wake every few seconds to notice a browser that left (and free its slot); not
            # wait_for: see the simulator's runner.
            async with asyncio.timeout(min(5.0, max(0.0, deadline - loop.time()))):
                current = await changes.get()
        except TimeoutError:
            if _gone(request) or not stream.is_connected():
                return
            continue
        await stream.send(status_json(current, detailed).decode(), event="status")


def callback_ack(code: int, desc: str, status: int = 200) -> web.Response:
    return web.json_response({"ResultCode": code, "ResultDesc": desc}, status=status)


async def daraja_callback(request: web.Request) -> web.Response:
    payments = request.app[PAYMENTS]
    try:
        raw = await request.read()
    except (web.RequestPayloadError, ConnectionResetError):
        return callback_ack(1, "Rejected: body could not be read", 400)
    try:
        body = loads_json(raw)
    except (ValueError, RecursionError):
        request.app[METRICS].callbacks.labels("malformed").inc()
        log.warning("callback body is not JSON: rejected (kept in the callback log)", extra={"outcome": "malformed"})
        async with payments.store.transaction() as t:  # kept, capped: it may still be a money trail
            await t.log_callback(None, "malformed", raw.decode("utf-8", "replace"), note="not JSON")
        return callback_ack(1, "Rejected: body is not JSON", 400)
    counted = request.app[METRICS].callbacks
    try:
        result = await payments.apply_callback(body, raw.decode("utf-8", "replace"))
    except MalformedCallback as exc:
        counted.labels("malformed").inc()
        log.warning("malformed callback rejected: %s", exc, extra={"outcome": "malformed"})
        return callback_ack(1, f"Rejected: {exc}", 400)
    except UNAVAILABLE:
        # Daraja sends a callback once: with the database away, it is kept in memory and applied as
        # soon as the database is back (the reconciler's query settles the payment if this process dies first).
        counted.labels("deferred").inc()
        payments.defer_callback(body, raw.decode("utf-8", "replace"))
        return callback_ack(0, "Accepted")
    counted.labels(result.outcome).inc()
    payment_id = result.transaction.checkout_request_id if result.transaction else None
    log.info("callback %s: %s", payment_id or "-", result.outcome,
             extra={"payment_id": payment_id, "outcome": result.outcome})
    return callback_ack(0, "Accepted")
