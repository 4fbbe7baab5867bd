"""The gateway's application factory: its API, Daraja's callback endpoint, and the resources
with a lifetime (store, Daraja client, reconciler). It knows no pages and no simulator: run.py
composes those around it, then calls `add_callback_route` last."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import aiohttp_cors
from aiohttp import hdrs, web
from aiohttp.typedefs import Middleware

from .clients import TrustedProxies, own_origin
from .config import ConfigError, Settings
from .daraja.client import DarajaClient
from .handlers import daraja_callback, health, stk_events, stk_push, stk_status
from .keys import CLIENT_PUSH_LIMITER, LOOKUP_LIMITER, PAYMENTS, PUSH_LIMITER, SETTINGS, STREAM_LIMITS
from .middlewares import add_security_headers, json_errors
from .observability import METRICS, Metrics, install_observability, request_ids, stamp_request_id
from .openapi import install_openapi
from .orders import install_orders
from .payments import PROCESS_LEASE, PaymentService, reconcile_forever
from .shared import Leases, SharedTokens, limiter_for
from .storage_pg import UNAVAILABLE, open_store
from .streams import StreamLimits, enable_streams
from .webhooks import install_webhooks

RECONCILE_TICK = 0.5


async def payments_ctx(app: web.Application) -> AsyncIterator[None]:
    """The store, the Daraja client's HTTP session and the reconciler: opened and closed together."""
    settings = app[SETTINGS]
    store = open_store(settings.database_url)
    await store.open()
    # Per-host connection limit keeps a burst of pushes from opening hundreds of sockets to Daraja.
    connector = aiohttp.TCPConnector(limit=100, limit_per_host=50)
    async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": "mpesa-gateway/0.1"}) as session:
        daraja = DarajaClient(
            session, base_url=settings.base_url, consumer_key=settings.consumer_key,
            consumer_secret=settings.consumer_secret, shortcode=settings.shortcode, passkey=settings.passkey,
            transaction_type=settings.transaction_type, party_b=settings.party_b, timeout=settings.daraja_timeout)
        daraja.observer = app[METRICS].daraja_call
        app[PAYMENTS] = PaymentService(store, daraja, settings)
        app[PAYMENTS].lag_observer = app[METRICS].reconciled
        leases = None
        if store.shared:  # other processes may serve from this database: share what they must agree on
            leases = app[PAYMENTS].leases = Leases(lambda: store)
            await leases.claim("process", leases.holder, PROCESS_LEASE)  # alive before its first push
            daraja.tokens.source = SharedTokens(lambda: store, leases)
            await store.watch_changes(app[PAYMENTS].heard)
        reconciler = asyncio.create_task(reconcile_forever(app[PAYMENTS], RECONCILE_TICK, leases))
        try:
            yield
        finally:
            reconciler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reconciler
            await app[PAYMENTS].close()
            if leases is not None:
                with contextlib.suppress(*UNAVAILABLE):  # gone: it will run out by itself
                    await leases.release("process", leases.holder)
            await store.close()


def route_taking(app: web.Application, path: str) -> str | None:
    """The route already serving `path`, if any (the callback must not shadow one, nor hide behind one)."""
    for resource in app.router.resources():
        info = resource.get_info()
        prefix = info.get("prefix")
        if prefix is not None:  # static files, mounted sub-applications
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                return str(prefix)
        elif resource.canonical == path or "pattern" in info and info["pattern"].fullmatch(path):
            return resource.canonical
    return None


def create_app(settings: Settings) -> web.Application:
    metrics = Metrics(time_requests=settings.metrics_enabled)  # with metrics off, requests are not timed
    middlewares: list[Middleware] = [json_errors]
    if settings.trusted_proxies:
        middlewares.insert(0, TrustedProxies(settings.trusted_proxies).middleware)
    # First: every answer and every log line of a request carry its id.
    middlewares.insert(0, request_ids(settings, metrics))
    app = web.Application(middlewares=middlewares, client_max_size=settings.max_body_bytes)
    app[SETTINGS] = settings
    install_observability(app, metrics)  # metrics, GET /metrics when enabled
    app[PUSH_LIMITER] = limiter_for(app, "push-phone", settings.push_limit_per_phone, settings.push_limit_window)
    app[CLIENT_PUSH_LIMITER] = limiter_for(app, "push-client", settings.push_limit_per_client,
                                           settings.push_limit_window)
    app[LOOKUP_LIMITER] = limiter_for(app, "lookup", settings.lookup_limit_per_client, settings.lookup_limit_window)
    app[STREAM_LIMITS] = StreamLimits(settings.stream_limit_per_client, settings.stream_limit_total)
    enable_streams(app)
    app.cleanup_ctx.append(payments_ctx)
    browser_routes = install_orders(app)  # the shop's orders, idempotent requests, the demo catalogue
    install_webhooks(app)  # the outbox and its delivery to the shop (gateway/webhooks.py)
    install_openapi(app)  # the contract: /openapi.json, rendered at /docs (gateway/openapi.py)
    api = [
        app.router.add_post("/stkpush", stk_push),
        app.router.add_post("/stkpush/status", stk_status),
        app.router.add_get("/health", health),
        app.router.add_get("/stkpush/{checkout_request_id}/events", stk_events),
    ]
    # A pay page served from FRONTEND_URL: it sends Idempotency-Key and reads Retry-After (429s).
    # /orders is not here: the shop's backend calls it, never a browser.
    if app.on_response_prepare:  # (it would be taken for one of aiohttp-cors's hooks below)
        raise RuntimeError(ONE_HOOK)
    app.on_startup.append(_one_answer_hook)  # and none added later (by web/, the simulator)
    cors = aiohttp_cors.setup(app, defaults={settings.frontend_url: aiohttp_cors.ResourceOptions(  # type: ignore[no-untyped-call]
        allow_headers=("Content-Type", "Idempotency-Key"), expose_headers=("Retry-After", "Idempotent-Replayed"),
        allow_methods=("GET", "POST"), max_age=600)})
    for route in api:
        cors.add(route)
    for route in browser_routes:
        cors.add(route)
    cors_hooks = tuple(app.on_response_prepare)
    app.on_response_prepare[:] = [answer_headers(cors_hooks)]
    return app


Hook = Callable[[web.Request, web.StreamResponse], Awaitable[object]]
ONE_HOOK = "the gateway's answers have one hook, answer_headers: add to it instead"


async def _one_answer_hook(app: web.Application) -> None:
    if len(app.on_response_prepare) != 1:
        raise RuntimeError(ONE_HOOK)


def answer_headers(cors_hooks: tuple[Hook, ...]) -> Callable[[web.Request, web.StreamResponse], Awaitable[None]]:
    """The gateway's one hook on every answer, before its headers go out (errors, streams and
    static files too): its request id, the security headers and, for a cross-origin request only,
    aiohttp-cors's headers. One hook, not one per concern: each hook aiohttp awaits costs every
    answer, status polls most of all.

    aiohttp-cors's hooks look up every answer's route configuration before they find that there is
    nothing to add. They run only with an Origin that is not the request's own scheme and host (as
    a trusted proxy tells them). A request without one (a server, a same-origin GET) or from the
    gateway's own pages (a browser sends Origin with every POST, same-origin too: most status
    polls) needs no CORS header. Anything that does not match exactly runs them, as before."""
    async def answer_headers(request: web.Request, response: web.StreamResponse) -> None:
        stamp_request_id(request, response)
        add_security_headers(response.headers)
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and origin != own_origin(request):
            for hook in cors_hooks:
                await hook(request, response)
    return answer_headers


def add_callback_route(app: web.Application) -> None:
    """Daraja's callback at the path of CALLBACK_URL: added last, once every other route is known,
    so that a path that would shadow one (or hide behind one) is refused."""
    path = app[SETTINGS].callback_path
    taken = route_taking(app, path)
    if taken is not None:
        raise ConfigError(f"CALLBACK_URL's path collides with the route {taken}: give the callback a path of its own "
                          "(e.g. /mpesa/callback/<random>)")
    app.router.add_post(path, daraja_callback)
