"""Idempotent requests: the `Idempotency-Key` header on the POSTs that do something (a push, an order).

A request with a key is claimed in `idempotency_keys` (scope, key) before its work starts, in one
store transaction, with the SHA-256 of its raw body. Then:

- the same key with the same body gets the first answer again (same status, same body bytes, and
  the header `Idempotent-Replayed: true`), without the work being done twice;
- the same key with another body gets 409, and nothing is done;
- a request that comes while the first is still at work waits for its answer (bounded by the
  Daraja time-outs) and replays it: concurrent retries with one key send one push;
- an answer that did nothing and may be retried (429 limits, 503 M-Pesa not reachable or busy, a 500)
  is not kept: the row is released, so a retry with the key does the work;
- a key is kept for 24 hours (`KEY_LIFETIME`), then it is as if it had never been used; old rows
  are purged as new keys are claimed.

The scope is the method, the path and who is asking (the API key's hash for the shop's own calls,
"public" for the pages'), so one key on two endpoints are two independent keys. The kept answer
of a push carries its `paymentToken`: the table holds it for the key's lifetime, for the replay.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from .handlers import BadRequest, check_json_request, failure, read_body
from .keys import PAYMENTS, SETTINGS
from .storage import SqliteTransactionStore

log = logging.getLogger("gateway.idempotency")

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
KEY_LIFETIME = 24 * 3600.0
MAX_KEY_LENGTH = 255
PURGE_EVERY = 600.0  # seconds between purges of expired rows
POLL_EVERY = 0.25  # a waiting request looks at the row at least this often (and at once when told)
BAD_KEY = f"{HEADER} must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
OTHER_REQUEST = f"{HEADER} was used with another request"
STILL_RUNNING = f"A request with this {HEADER} is still being processed. Please try again shortly."

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Who is asking, for the key's scope; None: the request is not one to make idempotent (its handler
# answers it, e.g. 401 for a wrong API key).
Who = Callable[[web.Request], "str | None"]


def kept(status: int) -> bool:
    """Whether an answer is kept for replays: not one that did nothing and invites a retry."""
    return status not in (429, 500, 503)


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


IDEMPOTENCY: web.AppKey[Idempotency] = web.AppKey("idempotency", Idempotency)


def protect(app: web.Application, method: str, path: str, who: Who) -> None:
    """Make `method path` (a route's canonical path) honour the Idempotency-Key header."""
    if IDEMPOTENCY not in app:
        app[IDEMPOTENCY] = Idempotency()
        app.middlewares.append(idempotent_requests)  # innermost: it sees the handler's own answer
    app[IDEMPOTENCY].routes[(method, path)] = who


def public(request: web.Request) -> str:
    return "public"


@web.middleware
async def idempotent_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    state = request.app[IDEMPOTENCY]
    resource = request.match_info.route.resource
    path = resource.canonical if resource is not None else ""
    who = state.routes.get((request.method, path))
    key = request.headers.get(HEADER)
    if who is None or key is None:
        return await handler(request)
    whom = who(request)
    if whom is None:
        return await handler(request)
    check_json_request(request)  # refusals that depend on who sends it (Origin) are not kept
    if not valid_key(key):
        raise BadRequest(BAD_KEY, field=HEADER)
    digest = hashlib.sha256(await read_body(request)).hexdigest()
    scope = f"{request.method} {path} {whom}"
    return await _once(request, handler, state, scope, key, digest)


async def _once(request: web.Request, handler: Handler, state: Idempotency, scope: str, key: str,
                digest: str) -> web.StreamResponse:
    store = request.app[PAYMENTS].store
    answer_within = request.app[SETTINGS].daraja_timeout * 3 + 10  # a push, a token refresh and a retry
    deadline = time.monotonic() + answer_within
    while True:
        row = await _claim(store, state, scope, key, digest, answer_within)
        if row is None:  # ours: do the work
            return await _work(request, handler, state, store, scope, key)
        request_hash, status, body = row
        if request_hash != digest:
            return failure(OTHER_REQUEST, 409, field=HEADER)
        if status is not None:
            return _replay(status, body or "")
        if not await _wait(store, state, scope, key, deadline):
            return failure(STILL_RUNNING, 409, headers={"Retry-After": "5"}, field=HEADER)


async def _claim(store: SqliteTransactionStore, state: Idempotency, scope: str, key: str, digest: str,
                 answer_within: float) -> tuple[str, int | None, str | None] | None:
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
            and row["created_epoch"] <= now - answer_within
        if row is not None and row["created_epoch"] > now - KEY_LIFETIME and not orphan:
            return row["request_hash"], row["status"], row["response"]
        if row is not None:  # expired: as if it had never been used
            await t.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ?", (scope, key))
        await t.execute("INSERT INTO idempotency_keys (scope, key, request_hash, created_epoch) VALUES (?, ?, ?, ?)",
                        (scope, key, digest, now))
    state.running[(scope, key)] = asyncio.Event()
    return None


async def _work(request: web.Request, handler: Handler, state: Idempotency, store: SqliteTransactionStore,
                scope: str, key: str) -> web.StreamResponse:
    keep = False
    try:
        try:
            response = await handler(request)
        except BadRequest as exc:  # answered here, so that it can be kept like any other answer
            response = failure(exc.message, exc.status, headers=exc.headers, **exc.extra)
        body = response.body if isinstance(response, web.Response) else None
        keep = isinstance(body, bytes) and kept(response.status)
        if keep:
            assert isinstance(body, bytes)
            async with store.transaction() as t:
                await t.execute("UPDATE idempotency_keys SET status = ?, response = ? WHERE scope = ? AND key = ?",
                                (response.status, body.decode("utf-8"), scope, key))
        return response
    finally:
        if not keep:  # nothing kept (an answer to retry, or an error): the key is free again
            try:
                async with store.transaction() as t:
                    await t.execute("DELETE FROM idempotency_keys WHERE scope = ? AND key = ? AND status IS NULL",
                                    (scope, key))
            except RuntimeError:  # the store closed under us (shut-down): the row expires with its key
                log.warning("idempotency key could not be released (the store is closed)")
        event = state.running.pop((scope, key), None)
        if event is not None:
            event.set()


async def _wait(store: SqliteTransactionStore, state: Idempotency, scope: str, key: str, deadline: float) -> bool:
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
