"""Page routes: the pay page and the confirmation page (jinja2 through aiohttp-jinja2)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.checkout import mask_phone
from gateway.daraja.wire import NAIROBI, TIMESTAMP_FORMAT
from gateway.handlers import SETTINGS, LookupLimited, find_payment, status_body
from gateway.payments import epoch, token_matches
from gateway.storage import Transaction

HERE = Path(__file__).parent


async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/pay.html")


@aiohttp_jinja2.template("pay.html")
async def pay_page(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    config = {
        "pollIntervalMs": int(settings.poll_interval * 1000),
        "pollTimeoutMs": int(settings.poll_timeout * 1000),
        "maxAmount": settings.max_amount,
        "usdToKes": settings.usd_to_kes,
        "simulator": settings.simulator_mounted,
        "phonePageBase": "/simulator/phone/" if settings.simulator_mounted else None,
        "businessName": settings.business_name,
    }
    return {"settings": settings, "config": config}


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


def receipt_context(tx: Transaction, detailed: bool) -> dict[str, Any]:
    """What the page shows: the outcome and receipt for anyone with the id; amount, phone,
    reference and description only with the payment's token (the browser that paid)."""
    context: dict[str, Any] = {
        "checkoutRequestId": tx.checkout_request_id,
        "requestIdMasked": masked_request_id(tx),
        "status": tx.status,
        "receipt": tx.receipt,
        "paidAt": paid_at(tx),
        "message": status_body(tx)["message"],
        "detailed": detailed,
    }
    if detailed:
        context.update(amount=tx.amount, phoneMasked=mask_phone(tx.phone), accountReference=tx.account_reference,
                       description=tx.description)
    return context


async def confirmation_page(request: web.Request) -> web.Response:
    """The receipt, read from the store by CheckoutRequestID; nothing else is taken from the URL."""
    settings = request.app[SETTINGS]
    checkout_request_id = request.query.get("checkoutRequestId", "")[:100]
    token = request.query.get("paymentToken", "")
    context: dict[str, Any] = {"settings": settings, "payment": None, "checkout_request_id": checkout_request_id}
    try:
        tx = await find_payment(request, checkout_request_id) if checkout_request_id else None
    except LookupLimited as exc:
        context["limited"] = True
        response = aiohttp_jinja2.render_template("confirmation.html", request, context, status=429)
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    if tx is not None:
        context["payment"] = receipt_context(tx, token_matches(tx, token))
        context["payment_token"] = token if token_matches(tx, token) else ""
    return aiohttp_jinja2.render_template("confirmation.html", request, context, status=200 if tx else 404)


def setup_web(app: web.Application) -> None:
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    app.router.add_get("/", home)
    app.router.add_get("/pay.html", pay_page)
    app.router.add_get("/confirmation.html", confirmation_page)
    app.router.add_static("/static/", HERE / "static", name="static")
