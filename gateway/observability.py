"""What the gateway tells its operator while it runs: a request id on every answer and every log
line the request writes, logs as text or JSON, and Prometheus metrics.

* **Request ids.** `X-Request-Id` is taken from the request when a trusted proxy (TRUSTED_PROXIES)
  sent it and it is a plain token (letters, digits, `._:-`, at most 128); otherwise a new one is
  made. It is on every answer (streams and errors too) and, through a context variable, on every
  log line written while the request is handled, including by tasks it starts.
* **Logs.** `LOG_FORMAT=text` (the default) or `json`: one object per line with the time, level,
  logger, message, request id and, where the line carries them, the payment id, the phone
  (masked), the outcome and timings.
* **Metrics.** `GET /metrics` in Prometheus' text format (prometheus-client) when
  METRICS_ENABLED=true, behind `Authorization: Bearer METRICS_TOKEN` when that is set. With several
  workers (`run.py --workers N`) the processes write to PROMETHEUS_MULTIPROC_DIR, and any worker's
  answer sums them all (the reconciler's gauges: the worst lag and the latest pass of the live
  workers).
"""

from __future__ import annotations

import hmac
import os
import random
import re
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Middleware
from multidict import istr
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client import multiprocess as prometheus_multiprocess

from .clients import peer_trusted
from .config import Settings
from .keys import SETTINGS
from .logs import REQUEST_ID

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

HEADER = istr("X-Request-Id")
_PLAIN_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Label values come from a fixed set or a fixed shape, so that no client (or odd answer) can make
# the metrics grow without bound.
_DARAJA_CODE = re.compile(r"[0-9][0-9.]{0,19}|ResponseCode [0-9]{1,6}|HTTP [0-9]{3}|unavailable|pending|settled")
_METHODS = frozenset({"GET", "POST", "HEAD", "OPTIONS"})
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def new_request_id() -> str:
    """16 hex digits. Not a secret (it is in every answer and log line), so not from the OS's
    random source: a system call per request showed in the status polls' throughput."""
    return f"{_ids.getrandbits(64):016x}"


def request_id_of(request: web.Request, trusted_proxies: tuple[str, ...]) -> str:
    """The request's id: its trusted proxy's, if that one is plain, else a new one."""
    if trusted_proxies:
        given = request.headers.get(HEADER, "")
        if given and _PLAIN_ID.fullmatch(given) and peer_trusted(request, trusted_proxies):
            return given
    return new_request_id()


class Metrics:
    """The gateway's counters and histograms, in a registry of their own (one per app)."""

    def __init__(self, *, time_requests: bool = True) -> None:
        # With metrics off nothing reads the endpoints' histogram: requests are not timed at all.
        self.time_requests = time_requests
        self.registry = CollectorRegistry()
        r = self.registry
        self.pushes = Counter("mpesa_stk_pushes", "STK pushes asked for, by outcome (accepted, limited, refused "
                              "by Daraja, unavailable: nothing sent, unknown: the answer was lost)", ["outcome"],
                              registry=r)
        self.callbacks = Counter("mpesa_callbacks", "Daraja callbacks received, by outcome", ["outcome"], registry=r)
        self.queries = Counter("mpesa_stk_queries", "STK queries sent to Daraja, by result (pending, settled, or "
                               "the error)", ["result"], registry=r)
        self.webhooks = Counter("mpesa_webhook_deliveries", "Webhook delivery attempts to the shop, by result",
                                ["result"], registry=r)
        self.daraja_errors = Counter("mpesa_daraja_errors", "Errors from Daraja, by call and errorCode (or "
                                     "unavailable)", ["call", "code"], registry=r)
        self.daraja_seconds = Histogram("mpesa_daraja_request_seconds", "Time of each call to Daraja", ["call"],
                                        buckets=LATENCY_BUCKETS, registry=r)
        self.reconcile_lag = Gauge("mpesa_reconcile_lag_seconds", "How long past its time the longest-waiting due "
                                   "STK query of this process's reconciler was at its last pass, by kind (pending; "
                                   "given_up: given up locally, still checked for a day); 0 when none was waiting",
                                   ["kind"], registry=r, multiprocess_mode="livemax")  # workers: the worst
        self.reconcile_pass = Gauge("mpesa_reconcile_last_pass_timestamp_seconds", "When this process's reconciler "
                                    "last looked for payments due for an STK query (Unix time)", registry=r,
                                    multiprocess_mode="livemax")  # workers: the latest of any live one
        self._timers: dict[tuple[str, str, str], Any] = {}  # labels() looked up once per series
        self.http_seconds = Histogram("mpesa_http_request_seconds", "Time to answer each request to the public "
                                      "endpoints, by route, method and status", ["route", "method", "status"],
                                      buckets=LATENCY_BUCKETS, registry=r)

    def answered(self, route: str, method: str, status: int, seconds: float) -> None:
        key = (route, method, str(status))
        timer = self._timers.get(key)
        if timer is None:
            timer = self._timers[key] = self.http_seconds.labels(*key)
        timer.observe(seconds)

    def daraja_call(self, call: str, seconds: float, error: str | None, query_result: str | None) -> None:
        """The Daraja client's observer: one call's time, its error if any, a query's result."""
        self.daraja_seconds.labels(call).observe(seconds)
        if error is not None:
            self.daraja_errors.labels(call, bounded(error)).inc()
        if query_result is not None:
            self.queries.labels(bounded(query_result)).inc()

    def reconciled(self, pending_lag: float, given_up_lag: float) -> None:
        """The reconciler's observer: a pass's lags (see PaymentService._note_lag)."""
        self.reconcile_lag.labels("pending").set(pending_lag)
        self.reconcile_lag.labels("given_up").set(given_up_lag)
        self.reconcile_pass.set_to_current_time()


def bounded(code: str) -> str:
    """A Daraja code or result as a label: itself if it has a code's shape, else "other"."""
    return code if _DARAJA_CODE.fullmatch(code) else "other"


METRICS: web.AppKey[Metrics] = web.AppKey("metrics", Metrics)
REQUEST_ID_KEY = web.RequestKey("request_id", str)
_ids = random.Random()
PUBLIC_ROUTES = frozenset((
    "/stkpush", "/stkpush/status", "/stkpush/{checkout_request_id}/events", "/health", "/orders", "/orders/{order_id}",
    "/checkout/{order_id}", "/checkout/{order_id}/status", "/checkout/{order_id}/events", "/catalogue",
    "/catalogue/orders"))


def request_ids(settings: Settings, metrics: Metrics) -> Middleware:
    """The middleware that gives each request its id (the answer carries it: see
    `stamp_request_id`) and times the public endpoints. Bound to its app's settings and metrics:
    nothing to look up in the app on every request."""
    trusted_proxies = settings.trusted_proxies

    @web.middleware
    async def request_ids(request: web.Request, handler: Handler) -> web.StreamResponse:
        rid = request_id_of(request, trusted_proxies)
        request[REQUEST_ID_KEY] = rid
        token = REQUEST_ID.set(rid)
        timed = metrics.time_requests
        started = time.perf_counter() if timed else 0.0
        status = 500
        try:
            response = await handler(request)
            status = response.status
            return response
        except web.HTTPException as exc:
            status = exc.status
            exc.headers[HEADER] = rid
            raise
        finally:
            REQUEST_ID.reset(token)
            if timed:
                route = request.match_info.route.resource.canonical if request.match_info.route.resource else ""
                if route in PUBLIC_ROUTES:
                    method = request.method if request.method in _METHODS else "other"
                    metrics.answered(route, method, status, time.perf_counter() - started)

    return request_ids


def stamp_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """Before any answer's headers go out (streams and static files too: see gateway/app.py
    `answer_headers`): its request id."""
    rid = request.get(REQUEST_ID_KEY)
    if rid:
        response.headers[HEADER] = rid


def metrics_text(app: web.Application) -> bytes:
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:  # several workers: each wrote its own files; sum them all
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
        return bytes(generate_latest(registry))
    return bytes(generate_latest(app[METRICS].registry))


async def metrics(request: web.Request) -> web.Response:
    token = request.app[SETTINGS].metrics_token
    if token:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            return web.json_response({"success": False, "message": "This needs the metrics token: "
                                      "Authorization: Bearer <METRICS_TOKEN>"}, status=401,
                                     headers={"WWW-Authenticate": 'Bearer realm="metrics"'})
    return web.Response(body=metrics_text(request.app), headers={"Content-Type": CONTENT_TYPE_LATEST,
                                                                  "Cache-Control": "no-store"})


def install_observability(app: web.Application, counted: Metrics) -> None:
    """The request-id middleware goes first in the app's list and the answers' stamp is in its one
    answer hook (see create_app); this keeps the metrics and, when enabled, serves GET /metrics."""
    app[METRICS] = counted
    if app[SETTINGS].metrics_enabled:
        app.router.add_get("/metrics", metrics)
