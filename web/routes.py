"""Page routes: the pay page and the confirmation page (jinja2 through aiohttp-jinja2), and the
static files they load (web/assets.py).

The pages use only the gateway's public surface (`gateway.public`)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web
from markupsafe import Markup, escape

from gateway.public import (
    SETTINGS,
    LookupLimited,
    Settings,
    find_payment,
    order_of,
    receipt,
    retry_after_header,
)

from . import outcomes
from .assets import setup_static
from .keys import SIMULATOR_PIN

HERE = Path(__file__).parent
ORDER_ID = re.compile(r"ord_[A-Za-z0-9_-]{1,64}")


def nobreak(text: Any) -> Markup:
    """Text with every "M-Pesa" kept on one line (it must never break at its hyphen); escaped first,
    so the shop's words (item names, references) stay text. None is no text."""
    if text is None:
        return Markup("")
    return Markup(str(escape(text)).replace("M-Pesa", '<span class="nb">M-Pesa</span>'))


def kes(amount: Any) -> str:
    """12900 → "KES 12,900" (as format.js writes it)."""
    return f"KES {int(amount):,}"


async def home(request: web.Request) -> web.Response:
    raise web.HTTPFound("/pay.html")


def pay_mode(settings: Settings, order_id: str | None) -> str:
    """What /pay.html shows: an order (the shop's checkout link), the demo catalogue, the
    free-amount form, or (none of them possible) a note to use the shop's link."""
    if order_id is not None:
        return "order"
    if settings.demo_catalogue:
        return "catalogue"
    if settings.free_amount_pushes:
        return "free"
    return "none"


@aiohttp_jinja2.template("pay.html")
async def pay_page(request: web.Request) -> dict[str, Any]:
    settings = request.app[SETTINGS]
    order_id = request.query.get("orderId")
    poll_ms = int(settings.poll_interval * 1000)
    window_ms = int(settings.poll_timeout * 1000)
    config = {
        "mode": pay_mode(settings, order_id),
        "orderId": order_id if order_id is not None and ORDER_ID.fullmatch(order_id) else None,
        "pollIntervalMs": poll_ms,
        "pollTimeoutMs": window_ms,
        # After the window: a poll every 5 intervals, until the gateway has surely settled the
        # payment (it gives up locally after PAYMENT_TIMEOUT_SECONDS) and a minute more.
        "slowPollIntervalMs": poll_ms * 5,
        "watchLimitMs": max(window_ms, int((settings.payment_timeout + 60) * 1000)),
        "maxAmount": settings.max_amount,
        "simulator": settings.simulator_mounted,
        "phonePageBase": "/simulator/phone/" if settings.simulator_mounted else None,
        "businessName": settings.business_name,
        "catalogue": bool(settings.demo_catalogue),
        "outcomes": outcomes.table(),
    }
    return {"settings": settings, "config": config, "simulator_pin": request.app[SIMULATOR_PIN]}


async def confirmation_page(request: web.Request) -> web.Response:
    """The receipt, read from the store by CheckoutRequestID; nothing else is taken from the URL.
    The payment's token, or the id of its order (the checkout link's capability), shows the details
    and the order's items."""
    settings = request.app[SETTINGS]
    checkout_request_id = request.query.get("checkoutRequestId", "")[:100]
    context: dict[str, Any] = {"settings": settings, "payment": None, "checkout_request_id": checkout_request_id,
                               "order": None, "failure": None}
    try:
        tx = await find_payment(request, checkout_request_id) if checkout_request_id else None
    except LookupLimited as exc:
        context["limited"] = True
        response = aiohttp_jinja2.render_template("confirmation.html", request, context, status=429)
        response.headers["Retry-After"] = retry_after_header(exc.retry_after)
        return response
    if tx is not None:
        payment = receipt(tx, request.query.get("paymentToken", ""), request.query.get("orderId", ""))
        context["payment"] = payment
        if payment["detailed"]:
            context["order"] = await order_of(request, tx)
        if payment["status"] == "failed":
            context["failure"] = outcomes.describe(payment.get("resultCode"), payment["message"])
    return aiohttp_jinja2.render_template("confirmation.html", request, context, status=200 if tx else 404)


def setup_web(app: web.Application, *, simulator_pin: str | None = None) -> None:
    """The pages; `simulator_pin` is the virtual phone's PIN when the simulator is mounted."""
    app[SIMULATOR_PIN] = simulator_pin or ""
    build = setup_static(app, HERE / "static")
    env = aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    env.globals["static_url"] = build.url  # the versioned URL of a static file
    env.filters["nb"] = nobreak
    env.filters["kes"] = kes
    app.router.add_get("/", home)
    app.router.add_get("/pay.html", pay_page)
    app.router.add_get("/confirmation.html", confirmation_page)
