"""The operator's pages under /admin: payments and orders (search, filters, totals per day, CSV), what
went wrong (callbacks that matched nothing or were not confirmed, pushes whose answer was lost, late
successes, double payments) and the webhooks to the shop (deliveries, failures, Resend).

Only when ADMIN_TOKEN is set: otherwise no route exists (404). Every page asks for HTTP Basic
credentials: any user name, the token as the password, compared in constant time; a wrong password
is 401 with `WWW-Authenticate: Basic realm="M-Pesa gateway operator"`, and a client that keeps
guessing (an address; an IPv6 client by its /64) is stopped for a while (429). The token is never
written into a page or a log line.

The one action, Resend (a POST), is refused unless it comes from these pages: its Origin (or
Sec-Fetch-Site, or Referer) must be this site, and the form must carry a token signed with a key
derived from ADMIN_TOKEN, valid for a few hours (a cross-site form can send neither).

The pages read the store through gateway.public (gateway/reports.py), as `python run.py payments …`
does; they are plain HTML forms and tables (no inline script: the Content-Security-Policy forbids
it), usable on a phone: tables reflow into cards on narrow screens.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from aiohttp import web

from gateway.public import (
    ORDER_STATUSES,
    PAYMENT_STATUSES,
    SETTINGS,
    WEBHOOK_STATES,
    Filters,
    ReportError,
    SlidingWindowLimiter,
    attention,
    callbacks_of,
    daily_totals,
    double_payments,
    events_about,
    late_successes,
    lost_answers,
    nairobi_time,
    operator_store,
    order,
    order_payments,
    orders,
    overdue_checks,
    payment,
    payments,
    payments_csv,
    resend_webhook,
    retry_after_header,
    unmatched_callbacks,
    webhook_event,
    webhook_events,
    webhooks_enabled,
)

from .routes import kes

log = logging.getLogger("web.admin")

HERE = Path(__file__).parent
REALM = 'Basic realm="M-Pesa gateway operator"'
FORM_TOKEN_LIFETIME = 12 * 3600.0  # seconds a page's Resend form stays valid
FORM_TOKEN_SKEW = 60.0
WRONG_PASSWORDS = 20  # per client and window, then 429
WRONG_PASSWORDS_WINDOW = 300.0
MAX_ID = 100
MAX_OFFSET_DIGITS = 9
SIGN_IN = "The operator's pages need the operator's password (ADMIN_TOKEN)."
NO_STORE = {"Cache-Control": "no-store", "X-Robots-Tag": "noindex, nofollow"}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class AdminState:
    """What the pages keep: their templates, the key of the form tokens, the wrong-password counter."""

    def __init__(self, token: str) -> None:
        self.token = token.encode()
        self.token_digest = hashlib.sha256(self.token).digest()
        self.form_key = hmac.new(self.token, b"mpesa-gateway operator forms", hashlib.sha256).digest()
        self.wrong_passwords = SlidingWindowLimiter(WRONG_PASSWORDS, WRONG_PASSWORDS_WINDOW)
        self.templates = jinja2.Environment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                            autoescape=True)
        self.templates.filters["eat"] = nairobi_time
        self.templates.filters["kes"] = kes  # as the pay pages write it
        self.templates.globals["query"] = lambda values, **more: urlencode({**values, **more})

    # -- the form token ------------------------------------------------------------------------

    def form_token(self, now: float | None = None) -> str:
        issued = str(int(time.time() if now is None else now))
        return issued + "." + hmac.new(self.form_key, issued.encode(), hashlib.sha256).hexdigest()

    def password_ok(self, password: bytes) -> bool:
        """Whether `password` is the token, in constant time (both hashed first, so that not even
        the token's length shows in the time taken)."""
        return hmac.compare_digest(hashlib.sha256(password).digest(), self.token_digest)

    def form_token_ok(self, value: str, now: float | None = None) -> bool:
        issued, _, signature = value.partition(".")
        if not (issued.isascii() and issued.isdigit()) or len(issued) > 12:  # "²".isdigit() is True
            return False
        expected = hmac.new(self.form_key, issued.encode(), hashlib.sha256).hexdigest()
        age = (time.time() if now is None else now) - int(issued)
        return hmac.compare_digest(expected.encode(), signature.encode()) and \
            -FORM_TOKEN_SKEW <= age <= FORM_TOKEN_LIFETIME


ADMIN: web.AppKey[AdminState] = web.AppKey("web_admin", AdminState)


# -- who may see the pages ---------------------------------------------------------------------

def basic_password(request: web.Request) -> bytes | None:
    """The password of an `Authorization: Basic …` header (the user name is not checked)."""
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    _, colon, password = decoded.partition(b":")
    return password if colon else None


def client_key(request: web.Request) -> str:
    """Whom the wrong-password limit counts: the client's address (behind TRUSTED_PROXIES, the one
    the proxy saw), an IPv6 client by its /64 (one subscriber's addresses: a guesser must not get
    20 more tries from each of its 2**64 addresses)."""
    remote = request.remote or "unknown"
    try:
        address = ipaddress.ip_address(remote)
    except ValueError:
        return remote
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _text_answer(text: str, status: int, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(text=text, status=status, headers={**NO_STORE, **(headers or {})})


def guarded(handler: Handler) -> Handler:
    """The handler, for the operator only (HTTP Basic, the token as password)."""

    async def check(request: web.Request) -> web.StreamResponse:
        state = request.app[ADMIN]
        client = client_key(request)
        password = basic_password(request)
        if password is None:  # a browser's first visit: ask for the password
            return _text_answer(SIGN_IN, 401, {"WWW-Authenticate": REALM})
        wait = state.wrong_passwords.retry_after(client)
        if wait:  # even the right password: a guesser must not learn that it guessed right
            return _text_answer("Too many wrong passwords. Try again later.", 429,
                                {"Retry-After": retry_after_header(wait)})
        if not state.password_ok(password):
            state.wrong_passwords.record(client)
            log.warning("operator pages: wrong password from %s", client)
            return _text_answer(SIGN_IN, 401, {"WWW-Authenticate": REALM})
        response = await handler(request)
        if not response.prepared:
            response.headers.update(NO_STORE)
        return response

    return check


def same_origin(request: web.Request) -> bool:
    """Whether a POST comes from this site's own pages (a request without any of these headers
    is not a browser's: it still needs the form token)."""
    origin = request.headers.get("Origin")
    if origin is not None:
        parts = urlsplit(origin)
        return parts.scheme in ("http", "https") and parts.netloc.lower() == request.host.lower()
    site = request.headers.get("Sec-Fetch-Site")
    if site is not None:
        return site == "same-origin"
    referer = request.headers.get("Referer")
    if referer:
        return urlsplit(referer).netloc.lower() == request.host.lower()
    return True


# -- rendering ---------------------------------------------------------------------------------

def _static(request: web.Request, name: str) -> str:
    """The (versioned, when the pages serve it so) URL of one of web/static's files."""
    try:
        resource = request.app.router["static"]
    except KeyError:
        return "/static/" + name
    return str(resource.url_for(filename=name))


async def render(request: web.Request, template: str, status: int = 200, *, now: float | None = None,
                 **context: Any) -> web.Response:
    """`template` with the pages' common context; the counts in the navigation as of `now` (the
    time the page's own lists were read at, where they depend on it)."""
    state = request.app[ADMIN]
    settings = request.app[SETTINGS]
    counts = await attention(operator_store(request.app), now)
    text = state.templates.get_template(template).render(
        business_name=settings.business_name, mode=settings.mpesa_env, attention=counts,
        css=_static(request, "css/admin.css"), js=_static(request, "js/admin.js"),
        form_token=state.form_token(), webhooks_on=webhooks_enabled(settings), **context)
    return web.Response(text=text, status=status, content_type="text/html", charset="utf-8")


async def problem(request: web.Request, status: int, title: str, message: str) -> web.Response:
    return await render(request, "admin_error.html", status, page="", title=title, message=message)


def _offset(request: web.Request) -> int:
    raw = request.query.get("offset", "0").strip() or "0"
    if not (raw.isascii() and raw.isdigit()) or len(raw) > MAX_OFFSET_DIGITS:
        raise ReportError("offset must be a whole number", "offset")
    return int(raw)


def _ident(request: web.Request, name: str) -> str:
    return request.match_info[name].strip()[:MAX_ID]


# -- payments ----------------------------------------------------------------------------------

async def payments_page(request: web.Request) -> web.Response:
    store = operator_store(request.app)
    try:
        filters = Filters.parse(request.query)
        offset = _offset(request)
    except ReportError as exc:
        return await render(request, "admin_payments.html", 400, page="payments", filters=request.query,
                            error=exc.message, error_field=exc.field, found=None, totals=[],
                            statuses=PAYMENT_STATUSES, keep={})
    found = await payments(store, filters, offset=offset)
    ranged = filters.since is not None or filters.until is not None
    totals = await daily_totals(store, filters, days=366 if ranged else 31)
    return await render(request, "admin_payments.html", page="payments", filters=request.query, error=None,
                        error_field=None, found=found, totals=totals, statuses=PAYMENT_STATUSES,
                        keep=filters.query(), ranged=ranged)


async def payments_export(request: web.Request) -> web.StreamResponse:
    try:
        filters = Filters.parse(request.query)
    except ReportError as exc:
        return _text_answer(exc.message, 400)
    name = "payments" + "".join(f"-{v}" for v in (filters.since, filters.until) if v) + ".csv"
    chunks = payments_csv(operator_store(request.app), filters)
    # The header and the first rows are read before anything is sent: a query that fails is then a
    # plain error answer, not a 200 cut off after its headers.
    first = [chunk async for chunk in _take(chunks, 2)]
    response = web.StreamResponse(headers={
        "Content-Type": "text/csv; charset=utf-8", "Content-Disposition": f'attachment; filename="{name}"',
        **NO_STORE})
    await response.prepare(request)
    for chunk in first:
        await response.write(chunk.encode("utf-8"))
    async for chunk in chunks:
        await response.write(chunk.encode("utf-8"))
    await response.write_eof()
    return response


async def _take(chunks: AsyncIterator[str], count: int) -> AsyncIterator[str]:
    for _ in range(count):
        chunk = await anext(chunks, None)
        if chunk is None:
            return
        yield chunk


async def payment_page(request: web.Request) -> web.Response:
    store = operator_store(request.app)
    found = await payment(store, _ident(request, "checkout_request_id"))
    if found is None:
        return await problem(request, 404, "No such payment",
                             "No payment has this CheckoutRequestID or receipt. Search for it on the Payments page.")
    return await render(request, "admin_payment.html", page="payments", p=found,
                        callbacks=await callbacks_of(store, found.checkout_request_id),
                        events=await events_about(store, found.checkout_request_id))


# -- orders ------------------------------------------------------------------------------------

async def orders_page(request: web.Request) -> web.Response:
    try:
        filters = Filters.parse(request.query, ORDER_STATUSES)
        offset = _offset(request)
    except ReportError as exc:
        return await render(request, "admin_orders.html", 400, page="orders", filters=request.query,
                            error=exc.message, error_field=exc.field, found=None, statuses=ORDER_STATUSES, keep={})
    found = await orders(operator_store(request.app), filters, offset=offset)
    return await render(request, "admin_orders.html", page="orders", filters=request.query, error=None,
                        found=found, statuses=ORDER_STATUSES, keep=filters.query())


async def order_page(request: web.Request) -> web.Response:
    store = operator_store(request.app)
    found = await order(store, _ident(request, "order_id"))
    if found is None:
        return await problem(request, 404, "No such order", "No order has this id.")
    return await render(request, "admin_order.html", page="orders", o=found,
                        payments=await order_payments(store, found.order_id),
                        events=await events_about(store, found.order_id))


# -- what went wrong ---------------------------------------------------------------------------

async def attention_page(request: web.Request) -> web.Response:
    store = operator_store(request.app)
    now = time.time()  # the list of checks running late and their count, as of one moment
    return await render(request, "admin_attention.html", page="attention", now=now,
                        unverified=await unmatched_callbacks(store, ("unverified",)),
                        unknown=await unmatched_callbacks(store, ("unknown",)),
                        lost=await lost_answers(store), late=await late_successes(store),
                        overdue=await overdue_checks(store, now),
                        doubles=await double_payments(store))


# -- webhooks ----------------------------------------------------------------------------------

async def webhooks_page(request: web.Request) -> web.Response:
    state = request.query.get("state", "").strip().lower()
    search = request.query.get("q", "").strip()
    try:
        found = await webhook_events(operator_store(request.app), state=state, search=search,
                                     offset=_offset(request))
    except ReportError as exc:
        return await render(request, "admin_webhooks.html", 400, page="webhooks", error=exc.message, found=None,
                            state=state, search=search, states=WEBHOOK_STATES, keep={})
    keep = {k: v for k, v in (("state", state), ("q", search)) if v}
    return await render(request, "admin_webhooks.html", page="webhooks", error=None, found=found, state=state,
                        search=search, states=WEBHOOK_STATES, keep=keep)


async def webhook_page(request: web.Request) -> web.Response:
    event = await webhook_event(operator_store(request.app), _ident(request, "event_id"))
    if event is None:
        return await problem(request, 404, "No such webhook event", "No event in the outbox has this id.")
    return await render(request, "admin_webhook.html", page="webhooks", e=event,
                        resent=request.query.get("resent") == "1")


async def webhook_state(request: web.Request) -> web.Response:
    """The event's state for the page's script (it follows a resent event until it is delivered)."""
    event = await webhook_event(operator_store(request.app), _ident(request, "event_id"))
    if event is None:
        return web.json_response({"success": False, "message": "No such webhook event"}, status=404)
    return web.json_response({"success": True, "eventId": event.event_id, "state": event.state,
                              "attempts": event.attempts, "lastStatus": event.last_status,
                              "lastError": event.last_error, "deliveredAt": event.delivered_at})


async def webhook_resend(request: web.Request) -> web.Response:
    event_id = _ident(request, "event_id")
    if not same_origin(request):
        log.warning("operator pages: a cross-site Resend of %r was refused", event_id)
        return await problem(request, 403, "Refused", "This request did not come from the operator's pages.")
    if request.content_type not in ("application/x-www-form-urlencoded", "multipart/form-data"):
        return await problem(request, 415, "Not a form", "Resend is sent by the button on the operator's pages.")
    form = await request.post()
    token = form.get("form_token")
    if not isinstance(token, str) or not request.app[ADMIN].form_token_ok(token):
        return await problem(request, 403, "This form has expired",
                             "Go back, reload the page, and press Resend again.")
    if not await resend_webhook(request.app, event_id):
        return await problem(request, 404, "No such webhook event", "No event in the outbox has this id.")
    log.info("operator resent webhook event %r", event_id)
    raise web.HTTPSeeOther(f"/admin/webhooks/{event_id}?resent=1", headers=NO_STORE)


# -- installing them ---------------------------------------------------------------------------

def setup_admin(app: web.Application) -> None:
    """The operator's pages under /admin, when ADMIN_TOKEN is set (else none: /admin is 404)."""
    token = app[SETTINGS].admin_token
    if not token:
        return
    app[ADMIN] = AdminState(token)
    routes: list[tuple[str, str, Handler]] = [
        ("GET", "/admin", payments_page),
        ("GET", "/admin/", payments_page),
        ("GET", "/admin/payments.csv", payments_export),
        ("GET", "/admin/payments/{checkout_request_id}", payment_page),
        ("GET", "/admin/orders", orders_page),
        ("GET", "/admin/orders/{order_id}", order_page),
        ("GET", "/admin/attention", attention_page),
        ("GET", "/admin/webhooks", webhooks_page),
        ("GET", "/admin/webhooks/{event_id}", webhook_page),
        ("GET", "/admin/api/webhooks/{event_id}", webhook_state),
        ("POST", "/admin/webhooks/{event_id}/resend", webhook_resend),
    ]
    for method, path, handler in routes:
        app.router.add_route(method, path, guarded(handler))
