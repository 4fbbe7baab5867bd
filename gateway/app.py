"""The application factory: gateway routes, the web pages and, in simulator mode, the simulator."""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import aiohttp
import aiohttp_cors
from aiohttp import web

from .config import Settings, sqlite_path
from .daraja.client import DarajaClient
from .handlers import PAYMENTS, PUSH_LIMITER, SETTINGS, daraja_callback, health, stk_events, stk_push, stk_status
from .limits import SlidingWindowLimiter
from .middlewares import json_errors, security_headers
from .payments import PaymentService, reconcile_forever
from .storage import SqliteTransactionStore
from .streams import enable_streams

RECONCILE_TICK = 0.5


async def payments_ctx(app: web.Application) -> AsyncIterator[None]:
    """The store, the Daraja client's HTTP session and the reconciler: opened and closed together."""
    settings = app[SETTINGS]
    store = SqliteTransactionStore(sqlite_path(settings.database_url))
    await store.open()
    # Per-host connection limit keeps a burst of pushes from opening hundreds of sockets to Daraja.
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=50)
    async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": "mpesa-gateway/0.1"}) as session:
        daraja = DarajaClient(
            session, base_url=settings.base_url, consumer_key=settings.consumer_key,
            consumer_secret=settings.consumer_secret, shortcode=settings.shortcode, passkey=settings.passkey,
            transaction_type=settings.transaction_type, party_b=settings.party_b, timeout=settings.daraja_timeout)
        app[PAYMENTS] = PaymentService(store, daraja, settings)
        reconciler = asyncio.create_task(reconcile_forever(app[PAYMENTS], RECONCILE_TICK))
        try:
            yield
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
            await store.close()


def create_app(settings: Settings) -> web.Application:
    app = web.Application(middlewares=[security_headers, json_errors], client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    app[PUSH_LIMITER] = SlidingWindowLimiter(settings.push_limit_per_phone, settings.push_limit_window)
    enable_streams(app)
    app.cleanup_ctx.append(payments_ctx)
    api = [
        app.router.add_post("/stkpush", stk_push),
        app.router.add_post("/stkpush/status", stk_status),
        app.router.add_get("/health", health),
        app.router.add_get("/stkpush/{checkout_request_id}/events", stk_events),
    ]
    app.router.add_post(settings.callback_path, daraja_callback)
    cors = aiohttp_cors.setup(app, defaults={settings.frontend_url: aiohttp_cors.ResourceOptions(
        allow_headers=("Content-Type",), allow_methods=("GET", "POST"), max_age=600)})
    for route in api:
        cors.add(route)
    from web.routes import setup_web  # the pages are part of every mode
    setup_web(app)
    if settings.simulator_mounted:
        from simulator.app import mount_simulator
        mount_simulator(app, settings)
    return app
