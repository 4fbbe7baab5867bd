"""Page routes: the pay page and the confirmation page (jinja2 through aiohttp-jinja2).

The pages use only the gateway's public surface (`gateway.public`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.public import SETTINGS, LookupLimited, find_payment, receipt

from .keys import SIMULATOR_PIN

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
    return {"settings": settings, "config": config, "simulator_pin": request.app[SIMULATOR_PIN]}


async def confirmation_page(request: web.Request) -> web.Response:
    """The receipt, read from the store by CheckoutRequestID; nothing else is taken from the URL."""
    settings = request.app[SETTINGS]
    checkout_request_id = request.query.get("checkoutRequestId", "")[:100]
    context: dict[str, Any] = {"settings": settings, "payment": None, "checkout_request_id": checkout_request_id}
    try:
        tx = await find_payment(request, checkout_request_id) if checkout_request_id else None
    except LookupLimited as exc:
        context["limited"] = True
        response = aiohttp_jinja2.render_template("confirmation.html", request, context, status=429)
        response.headers["Retry-After"] = str(max(1, round(exc.retry_after)))
        return response
    if tx is not None:
        context["payment"] = receipt(tx, request.query.get("paymentToken", ""))
    return aiohttp_jinja2.render_template("confirmation.html", request, context, status=200 if tx else 404)


def setup_web(app: web.Application, *, simulator_pin: str | None = None) -> None:
    """The pages; `simulator_pin` is the virtual phone's PIN when the simulator is mounted."""
    app[SIMULATOR_PIN] = simulator_pin or ""
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    app.router.add_get("/", home)
    app.router.add_get("/pay.html", pay_page)
    app.router.add_get("/confirmation.html", confirmation_page)
    app.router.add_static("/static/", HERE / "static", name="static")
