"""Idempotent requests: the `Idempotency-Key` header on the POSTs that do something (a push, an order).

A request with a key is claimed in `idempotency_keys` (scope, key) before its work starts, in one
store transaction, with the SHA-256 of its raw body. Then:

- the same key with the same body gets the first answer again (same status, same body bytes, and
  the header `Idempotent-Replayed: true`), without the work being done twice;
- the same key with another body gets 409, and nothing is done;
- a request that comes while the first is still at work waits for its answer (bounded by the
  Daraja time-outs) and replays it: concurrent retries with one key send one push;
- an answer that did nothing and may be retried (429 limits, 503 M-Pesa not reachable or busy:
  no prompt went out) is not kept: the row is released, so a retry with the key does the work;
- an answer that may have done something is kept, whatever it says: a 504 (Daraja's answer was
  lost, the prompt may be on the phone) replays as a 504, never as a second push; and so does a
  500 (an error in the gateway, e.g. the store failing after Daraja took the push: how far the
  work went is unknown, so a retry must not do it again; a new attempt takes a new key);
- a request cut short (the process stopping) leaves its key at work: it is free again once its
  answer is long overdue (`answer_within`), like a key left by a crash;
- a key is kept for 24 hours (`KEY_LIFETIME`), then it is as if it had never been used; old rows
  are purged as new keys are claimed.

The scope is the method, the path and who is asking, so one key on two endpoints, or from two
askers, are independent keys:
- the shop's own calls (`POST /orders`): the API key's hash;
- the pages' calls, which carry no credential (`POST /stkpush`, `POST /catalogue/orders`): the
  client's address (`clients.client_address`: the socket's peer, or X-Forwarded-For from a
  trusted proxy only), which a client cannot choose. A key is not a secret a browser can be
  trusted to keep, nor one that cannot be guessed when a client picks it ("order-1042"): scoped
  globally, anyone who knew or guessed another client's key could take it first and have that
  client's request refused (409), and anyone who also knew its body (a phone and an amount, an
  orderId) would be replayed its answer, and with it the `paymentToken` of someone else's payment
  (or the orderId of someone else's demo order). Scoped by address, they can only reach their
  own. The price: a retry that comes from another address (a phone that moved from Wi-Fi to
  mobile data between the two) is a new request. For an order that is still one prompt (the
  order refuses a second push while the first is open: 409 with its checkoutRequestId, which the
  pay page follows); for a free-amount push (FREE_AMOUNT_PUSHES, for demos) it may be a second.

The kept answer of a push carries its `paymentToken`: the table holds it for the key's lifetime,
for the replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from .clients import client_address
from .handlers import BadRequest, check_json_request, failure, read_body
from .keys import PAYMENTS, SETTINGS
from .storage import TransactionStore

log = logging.getLogger("gateway.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_LIFETIME = 24 * 3600.0
MAX_KEY_LENGTH = 255
PURGE_EVERY = 600.0  # seconds between purges of expired rows
POLL_EVERY = 0.25  # a waiting request looks at the row at least this often (and at once when told)
BAD_KEY = f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
ONE_KEY = f"Send one {HEADER} header"
INTERNAL_ERROR = "Internal server error"  # as middlewares.json_errors answers an unhandled error
OTHER_REQUEST = f"{HEADER} was used with another request"
STILL_RUNNING = f"A request with this {HEADER} is still being processed. Please try again shortly."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Who is asking, for the key's scope; None: the request is not one to make idempotent (its handler
# answers it, e.g. 401 for a wrong API key).
Who = Callable[[web.Request], "str | None"]


def kept(status: int) -> bool:
    """Whether an answer is kept for replays: not one that did nothing and invites a retry (a
    limit, M-Pesa not reachable or busy: no prompt went out). A 504 (the prompt may have gone out)
    and a 500 (how far the work went is unknown) are kept."""
    return status not in (429, 503)


def valid_key(key: str) -> bool:
    return 0 < len(key) <= MAX_KEY_LENGTH and all(" " <= c <= "~" for c in key)


@dataclass
class Idempotency:
    """The routes made idempotent, and this process's requests at work (their waiters are woken
    when they end)."""

    routes: dict[tuple[str, str], Who] = field(default_factory=dict)
    running: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)
    clock: Callable[[], float] = time.time
    last_purge: float = float("-inf")
    # How long a request waits for the one at work with its key, and after how long a key left at
    # work by a stopped process is free again; None: from DARAJA_TIMEOUT_SECONDS (`answer_within`).
    wait_limit: float | None = None


IDEMPOTENCY: web.AppKey[Idempotency] = web.AppKey("idempotency", Idempotency)


def protect(app: web.Application, method: str, path: str, who: Who) -> None:
    """Make `method path` (a route's canonical path) honour the Idempotency-Key header."""
    if IDEMPOTENCY not in app:
        app[IDEMPOTENCY] = Idempotency()
        app.middlewares.append(idempotent_requests)  # innermost: it sees the handler's own answer
    app[IDEMPOTENCY].routes[(method, path)] = who


def public(request: web.Request) -> str:
    """The scope's "who" of calls that carry no credential: the client's address (hashed: the table
    need not hold addresses), which the client cannot choose."""
    return "client:" + hashlib.sha256(client_address(request).encode("utf-8", "surrogateescape")).hexdigest()[:32]


def answer_within(request: web.Request) -> float:
    """The longest a request with a key may take: a push, a token refresh and a retry."""
    limit = request.app[IDEMPOTENCY].wait_limit
    return limit if limit is not None else request.app[SETTINGS].daraja_timeout * 3 + 10


@web.middleware
async def idempotent_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    keys = request.headers.getall(HEADER, ())
    if not keys:  # most requests (every status poll): nothing more to look up
        return await handler(request)
    state = request.app[IDEMPOTENCY]
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    who = state.routes.get((request.method, path))
    if who is None:
        return await handler(request)
    whom = who(request)
    if whom is None:
        return await handler(request)
    check_json_request(request)  # refusals that depend on who sends it (Origin) are not kept
    if len(keys) > 1:  # which one would a proxy or a cache have looked at?
        raise BadRequest(ONE_KEY, field=HEADER)
    key = keys[0]
    if not valid_key(key):
        raise BadRequest(BAD_KEY, field=HEADER)
    digest = hashlib.sha256(await read_body(request)).hexdigest()
    scope = f"{request.method} {path} {whom}"
    return await _once(request, handler, state, scope, key, digest)


async def _once(request: web.Request, handler: Handler, state: Idempotency, scope: str, key: str,
                digest: str) -> web.StreamResponse:
    store = request.app[PAYMENTS].store
    within = answer_within(request)
    deadline = time.monotonic() + within
    while True:
        row = await _claim(store, state, scope, key, digest, within)
        if row is None:  # ours: do the work
            return await _work(request, handler, state, store, scope, key)
        request_hash, status, body = row
        if request_hash != digest:
            return failure(OTHER_REQUEST, 409, field=HEADER)
        if status is not None:
            return _replay(status, body or "")
        if not await _wait(store, state, scope, key, deadline):
            return failure(STILL_RUNNING, 409, headers={"Retry-After": "5"}, field=HEADER)


async def _claim(store: TransactionStore, state: Idempotency, scope: str, key: str, digest: str,
                 within: float) -> tuple[str, int | None, str | None] | None:
    """Claim the key for this request (None), or the row another request holds."""
    now = state.clock()
    async with store.transaction() as t:
        if now - state.last_purge >= PURGE_EVERY:
            state.last_purge = now
            await t.execute("DELETE FROM idempotency_keys WHERE created_epoch <= ?", (now - KEY_LIFETIME,))
        row = await t.fetch_one("SELECT request_hash, status, response, created_epoch FROM idempotency_keys "
                                "WHERE scope = ? AND key = ?", (scope, key))
        # A row still at work that no request of this process holds, long after its answer was due,
        # was left by a process that stopped mid-request: its key is free again, like an expired one.
        orphan = row is not None and row["status"] is None and (scope, key) not in state.running \
            and row["created_epoch"] <= now - within
        if row is not None and row["created_epoch"] > now - KEY_LIFETIME and not orphan:
            return row["request_hash"], row["status"], row["response"]
        if row is not None:  # expired: as if it had never been used
            await t.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))
        await t.execute("INSERT INTO idempotency_keys (scope, key, request_hash, created_epoch) VALUES (?, ?, ?, ?)",
                        (scope, key, digest, now))
    state.running[(scope, key)] = asyncio.Event()
    return None


async def _work(request: web.Request, handler: Handler, state: Idempotency, store: TransactionStore,
                scope: str, key: str) -> web.StreamResponse:
    try:
        try:
            response = await handler(request)
        except BadRequest as exc:  # answered here, so that it can be kept like any other answer
            response = failure(exc.message, exc.status, headers=exc.headers, **exc.extra)
        except web.HTTPException:  # aiohttp's own refusals (a body too large, …): nothing was done
            await _release(store, scope, key)
            raise
        except Exception:
            # How far the work went is unknown (a push may have gone out before the store failed):
            # the 500 that json_errors answers is kept, so that a retry does not do it again.
            await _settle(store, scope, key, 500, failure(INTERNAL_ERROR, 500).body)
            raise
        body = response.body if isinstance(response, web.Response) else None
        if isinstance(body, bytes) and kept(response.status):
            await _settle(store, scope, key, response.status, body)
        else:  # nothing done, and a retry is invited: the key is free again
            await _release(store, scope, key)
        return response
    finally:
        # Cut short (cancelled: the process is stopping), the row stays at work: it is free again
        # once its answer is long overdue, as if left by a crash.
        event = state.running.pop((scope, key), None)
        if event is not None:
            event.set()


async def _settle(store: TransactionStore, scope: str, key: str, status: int, body: Any) -> None:
    """Keep the answer for replays. If the store cannot, the key stays at work (a retry waits, then
    hears 409) until its answer is long overdue."""
    assert isinstance(body, bytes)
    try:
        async with store.transaction() as t:
            await t.execute("UPDATE idempotency_keys SET status = ?, response = ? WHERE scope = ? AND key = ?",
                            (status, body.decode("utf-8"), scope, key))
    except Exception:  # noqa: BLE001 - the answer still goes out; the key is left at work
        log.exception("idempotency: the answer (HTTP %d) could not be kept", status)


async def _release(store: TransactionStore, scope: str, key: str) -> None:
    try:
        async with store.transaction() as t:
            await t.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status IS NULL",
                            (scope, key))
    except Exception:  # noqa: BLE001 - e.g. the store closed under us (shut-down): it expires with its key
        log.warning("idempotency key could not be released", exc_info=True)


async def _wait(store: TransactionStore, state: Idempotency, scope: str, key: str, deadline: float) -> bool:
    """Wait until the request holding the key has answered or let go of it; False at the deadline."""
    while time.monotonic() < deadline:
        event = state.running.get((scope, key))
        if event is not None:  # at work in this process: woken when it ends
            try:
                async with asyncio.timeout(min(POLL_EVERY, max(0.0, deadline - time.monotonic()))):
                    await event.wait()
            except TimeoutError:
                continue
            return True
        row = await store.fetch_one("SELECT status FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))
        if row is None or row["status"] is not None:
            return True
        await asyncio.sleep(POLL_EVERY)
    return False


def _replay(status: int, body: str) -> web.Response:
    return web.Response(text=body, status=status, content_type="application/json",
                        headers={REPLAYED_HEADER: "true"})
