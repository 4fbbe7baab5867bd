"""The gateway's HTTP contract: /stkpush, /stkpush/status, /health and Daraja's callback."""

from __future__ import annotations

import asyncio
import json
import logging
from datetime import datetime, timezone
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from .checkout import CheckoutError, is_clean_text, parse_checkout
from .config import Settings
from .daraja.errors import DarajaAuthError, DarajaError, DarajaUnavailable
from .daraja.wire import MalformedCallback
from .payments import PaymentService
from .result_messages import customer_message
from .storage import Transaction
from .limits import SlidingWindowLimiter
from .streams import tracked_stream

log = logging.getLogger("gateway.http")

SETTINGS: web.AppKey[Settings] = web.AppKey("settings", Settings)
PAYMENTS: web.AppKey[PaymentService] = web.AppKey("payments", PaymentService)
PUSH_LIMITER: web.AppKey[SlidingWindowLimiter] = web.AppKey("push_limiter", SlidingWindowLimiter)


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400, **extra: Any) -> None:
        super().__init__(message)
        self.message, self.status, self.extra = message, status, extra


def failure(message: str, status: int, **extra: Any) -> web.Response:
    return web.json_response({"success": False, "message": message, **extra}, status=status)


async def read_json_object(request: web.Request) -> dict[str, Any]:
    try:
        raw = await request.read()  # aiohttp enforces client_max_size (413) before this returns
    except web.RequestPayloadError:
        raise BadRequest("Request body could not be read") from None
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: absurdly deep nesting
        raise BadRequest("Request body must be valid JSON") from None
    if not isinstance(body, dict):
        raise BadRequest("Request body must be a JSON object")
    return body


def daraja_failure(exc: DarajaError | DarajaUnavailable) -> web.Response:
    """One table from Daraja's failures to what the shop's customer is told."""
    if isinstance(exc, DarajaUnavailable):
        log.error("Daraja unavailable: %s", exc)
        if exc.maybe_sent:  # the prompt may reach the phone: a blind retry could charge twice
            return failure("We could not confirm the payment request with M-Pesa. If a prompt appears on your "
                           "phone you can complete it, and it will be recorded. Please check your phone before "
                           "trying again.", 504)
        return failure("M-Pesa is not reachable right now. Please try again in a moment.", 503)
    if isinstance(exc, DarajaAuthError):
        log.error("Daraja OAuth refused: %s %s", exc.error_code, exc.error_message)
        return failure("Payment service is not configured correctly. Please contact the shop.", 502)
    if exc.subscriber_locked:
        return failure("A payment request is already waiting on this phone. Complete or cancel it, "
                       "then try again in a minute.", 409, errorCode=exc.error_code)
    if exc.rate_limited:
        return web.json_response({"success": False, "message": "M-Pesa is busy. Please try again shortly.",
                                  "errorCode": exc.error_code}, status=503, headers={"Retry-After": "5"})
    if exc.error_code == "400.002.02" and exc.error_message.endswith(("PhoneNumber", "PartyA")):
        return failure("Invalid phone number format", 400, field="phone")
    if exc.error_code == "400.002.02" and exc.error_message.endswith("Amount"):
        return failure("M-Pesa does not accept this amount", 400, field="amount")
    log.error("Daraja refused the request: %s %s (HTTP %s)", exc.error_code, exc.error_message, exc.http_status)
    return failure("M-Pesa refused the payment request. Please try again or contact the shop.", 502,
                   errorCode=exc.error_code)


async def stk_push(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    body = await read_json_object(request)
    try:
        checkout = parse_checkout(body, settings.max_amount)
    except CheckoutError as exc:
        return failure(exc.message, 400, field=exc.field)
    wait = request.app[PUSH_LIMITER].retry_after(checkout.phone)
    if wait:
        # Stops a checkout being used to bombard someone's phone with payment prompts.
        return web.json_response(
            {"success": False, "message": "Too many payment requests to this phone. Please wait a few minutes "
                                          "and try again."},
            status=429, headers={"Retry-After": str(max(1, round(wait)))})
    try:
        tx = await request.app[PAYMENTS].start(checkout)
    except (DarajaError, DarajaUnavailable) as exc:
        return daraja_failure(exc)
    # Only prompts that reached the phone count: refused attempts cannot lock a customer out.
    request.app[PUSH_LIMITER].record(checkout.phone)
    return web.json_response({"success": True, "checkoutRequestId": tx.checkout_request_id,
                              "message": "STK push sent successfully"})


def status_body(tx: Transaction) -> dict[str, Any]:
    common = {"checkoutRequestId": tx.checkout_request_id, "amount": tx.amount}
    if tx.status == "pending":
        return {"success": True, "status": "pending", "message": "Waiting for user to complete payment", **common}
    if tx.status == "completed":
        message = "Payment completed" if tx.receipt else \
            "Payment confirmed by M-Pesa; the receipt number has not arrived yet"
        return {"success": True, "status": "completed", "transaction_id": tx.receipt,
                "MpesaReceiptNumber": tx.receipt, "message": message, **common}
    return {"success": False, "status": "failed", "message": customer_message(tx.result_code, tx.result_desc or ""),
            "resultCode": tx.result_code, **common}


async def stk_status(request: web.Request) -> web.Response:
    body = await read_json_object(request)
    checkout_request_id = body.get("checkoutRequestId")
    if not isinstance(checkout_request_id, str) or not checkout_request_id.strip():
        return failure("checkoutRequestId is required", 400, field="checkoutRequestId")
    if len(checkout_request_id) > 100 or not is_clean_text(checkout_request_id):
        return failure("Transaction not found", 404)
    tx = await request.app[PAYMENTS].get(checkout_request_id.strip())
    if tx is None:
        return failure("Transaction not found", 404)
    return web.json_response(status_body(tx))


async def health(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    try:
        database = "ok" if await request.app[PAYMENTS].store.ping() else "error"
    except Exception:  # noqa: BLE001 - health reports, it does not raise
        database = "error"
    now = datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    body = {"status": "ok" if database == "ok" else "degraded", "timestamp": now,
            "service": f"{settings.business_name} M-Pesa Payment Server", "mode": settings.mpesa_env,
            "database": database}
    return web.json_response(body, status=200 if database == "ok" else 503)


def is_final(tx: Transaction) -> bool:
    return tx.status != "pending"


async def stk_events(request: web.Request) -> web.StreamResponse:
    """Server-sent events for one payment: `status` (the /stkpush/status body) now and on every
    change, until the payment is settled or the page's polling window is over."""
    payments = request.app[PAYMENTS]
    checkout_request_id = request.match_info["checkout_request_id"]
    if not is_clean_text(checkout_request_id) or await payments.get(checkout_request_id) is None:
        return failure("Transaction not found", 404)
    loop = asyncio.get_running_loop()
    window = request.app[SETTINGS].poll_timeout
    deadline = loop.time() + window + min(window, 30.0)  # a little longer than the page listens
    with tracked_stream(request), payments.events.subscribe(checkout_request_id) as changes:
        async with sse_response(request, ping_interval=15) as stream:
            tx = await payments.get(checkout_request_id)  # read after subscribing: no change can slip by
            if tx is None:
                return stream
            await stream.send(json.dumps(status_body(tx)), event="status")
            while not is_final(tx) and loop.time() < deadline:
                try:
                    # Wake every few seconds to notice a browser that left; not wait_for: see runner.
                    async with asyncio.timeout(min(5.0, max(0.0, deadline - loop.time()))):
                        tx = await changes.get()
                except TimeoutError:
                    if not stream.is_connected():
                        break
                    continue
                await stream.send(json.dumps(status_body(tx)), event="status")
            return stream


def callback_ack(code: int, desc: str, status: int = 200) -> web.Response:
    return web.json_response({"ResultCode": code, "ResultDesc": desc}, status=status)


async def daraja_callback(request: web.Request) -> web.Response:
    try:
        body = json.loads(await request.read())
    except (ValueError, RecursionError, web.RequestPayloadError):
        log.warning("callback body is not JSON: rejected")
        return callback_ack(1, "Rejected: body is not JSON", 400)
    try:
        result = await request.app[PAYMENTS].apply_callback(body)
    except MalformedCallback as exc:
        log.warning("malformed callback rejected: %s", exc)
        return callback_ack(1, f"Rejected: {exc}", 400)
    log.info("callback %s: %s", result.transaction.checkout_request_id if result.transaction else "-",
             result.outcome)
    return callback_ack(0, "Accepted")
