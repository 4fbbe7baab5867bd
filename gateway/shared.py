"""What several gateway processes on one database share, kept in that database.

One process on SQLite needs none of this beyond what it does in memory; on PostgreSQL any number
of processes, on one machine or several, behave as one gateway:

* `Leases`: one holder at a time of a named thing, until a time (the OAuth refresh, the periodic
  recovery pass, the push for an order). A holder that dies lets its lease run out.
* `SharedLimiter`: the abuse limits (per phone, per client address) counted in `limit_events`, so
  that N workers allow what one would, not N times as much.
* `SharedTokens`: the OAuth token in `oauth_tokens`; a cold cache or an expired token is refreshed
  by one process (the lease holder) while the others wait for its token.

Every check-and-write runs inside one unit of work (`store.transaction()`), which the stores run
one at a time across every process on the database, so a check cannot be outrun.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from aiohttp import web

from .config import is_postgresql
from .keys import PAYMENTS, SETTINGS
from .limits import SlidingWindowLimiter
from .storage import TransactionStore, utc_now

log = logging.getLogger(__name__)



def process_name() -> str:
    """This process, as the leases it holds name it: host, pid and a random part. Made when asked
    (a lease holder is made after gunicorn forks its workers), never at import: forked workers
    would all inherit one name, and each would take the others' leases for its own."""
    return f"{socket.gethostname()}/{os.getpid()}/{secrets.token_hex(4)}"

TOKEN_NAME = "daraja"
TOKEN_LEASE = "oauth-refresh"
WAIT_STEP = 0.05
T = TypeVar("T")


class Limiter(Protocol):
    """At most N events per key in any window of W seconds (N <= 0: no limit)."""

    limit: int

    async def take(self, key: str) -> float: ...

    async def give_back(self, key: str) -> None: ...

    async def lookup(self, key: str, read: Callable[[], Awaitable[T | None]]) -> tuple[T | None, float]: ...


class LocalLimiter:
    """A `SlidingWindowLimiter` behind the `Limiter` interface: one process counts alone."""

    def __init__(self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.counter = SlidingWindowLimiter(limit, window, clock=clock)
        self.limit = limit

    async def take(self, key: str) -> float:
        return self.counter.acquire(key)

    async def give_back(self, key: str) -> None:
        self.counter.release(key)

    async def lookup(self, key: str, read: Callable[[], Awaitable[T | None]]) -> tuple[T | None, float]:
        """`read()` counted as a miss before it runs and given back on a hit: lookups sent all at once
        cannot all pass a check that is only counted once their reads come back. (found, 0) or
        (None, seconds to wait) when the limit is reached."""
        wait = self.counter.acquire(key)
        if wait:
            return None, wait
        found = await read()
        if found is not None:
            self.counter.release(key)
        return found, 0.0


class SharedLimiter:
    """The same rule, counted in the database: every process sees every other one's events."""

    def __init__(self, name: str, limit: int, window: float, store: Callable[[], TransactionStore], *,
                 clock: Callable[[], float] = time.time) -> None:
        self.name = name
        self.limit = limit
        self.window = window
        self._store = store
        self._clock = clock
        self._local = SlidingWindowLimiter(limit, window)  # this process's first gate for lookups

    async def take(self, key: str) -> float:
        """Reserve an event for `key` now if the limit allows (0.0), else the seconds to wait."""
        if self.limit <= 0:
            return 0.0
        now = self._clock()
        async with self._store().transaction() as t:
            await t.execute("DELETE FROM limit_events WHERE name = ? AND key = ? AND at_epoch <= ?",
                            (self.name, key, now - self.window))
            row = await t.fetch_one("SELECT COUNT(*), MIN(at_epoch) FROM limit_events WHERE name = ? AND key = ?",
                                    (self.name, key))
            count, oldest = (int(row[0]), row[1]) if row else (0, None)
            if count >= self.limit and oldest is not None:
                return max(0.001, self.window - (now - float(oldest)))
            await t.execute("INSERT INTO limit_events (event_id, name, key, at_epoch) VALUES (?, ?, ?, ?)",
                            (secrets.token_hex(12), self.name, key, now))
        return 0.0

    async def waiting(self, key: str) -> float:
        """Seconds until `key` may have another event (0: now). Records nothing."""
        if self.limit <= 0:
            return 0.0
        now = self._clock()
        row = await self._store().fetch_one(
            "SELECT COUNT(*), MIN(at_epoch) FROM limit_events WHERE name = ? AND key = ? AND at_epoch > ?",
            (self.name, key, now - self.window))
        if row is None or int(row[0]) < self.limit or row[1] is None:
            return 0.0
        return max(0.001, self.window - (now - float(row[1])))

    async def lookup(self, key: str, read: Callable[[], Awaitable[T | None]]) -> tuple[T | None, float]:
        """`read()` within the limit, in two gates. In this process, as `LocalLimiter.lookup`: each
        lookup reserved before its read and given back on a hit, so a crowd of lookups at once is cut
        exactly. Across processes, the misses counted in the database: checked before the read (a
        read of the count), a miss written after it; a hit writes nothing. Each other process can
        let at most `limit` lookups of its own through before it sees the shared count."""
        wait = self._local.acquire(key)
        if wait:
            return None, wait
        wait = await self.waiting(key)
        if wait:
            self._local.release(key)
            return None, wait
        found = await read()
        if found is not None:
            self._local.release(key)
            return found, 0.0
        wait = await self.take(key)
        return None, wait

    async def give_back(self, key: str) -> None:
        """Give back the newest event for `key` (what it stood for did not happen after all)."""
        if self.limit <= 0:
            return
        async with self._store().transaction() as t:
            await t.execute("DELETE FROM limit_events WHERE event_id = (SELECT event_id FROM limit_events "
                            "WHERE name = ? AND key = ? ORDER BY at_epoch DESC LIMIT 1)", (self.name, key))


class Leases:
    """Named leases in the database: `claim` takes one if it is free or run out, `release` gives it up."""

    def __init__(self, store: Callable[[], TransactionStore], *, holder: str | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self.holder = holder or process_name()
        self._clock = clock

    async def claim(self, name: str, key: str, seconds: float) -> bool:
        now = self._clock()
        async with self._store().transaction() as t:
            row = await t.fetch_one("SELECT holder, until_epoch FROM leases WHERE name = ? AND key = ?", (name, key))
            if row is None:
                await t.execute("INSERT INTO leases (name, key, holder, until_epoch) VALUES (?, ?, ?, ?)",
                                (name, key, self.holder, now + seconds))
                return True
            if row[0] != self.holder and float(row[1]) > now:
                return False
            await t.execute("UPDATE leases SET holder = ?, until_epoch = ? WHERE name = ? AND key = ?",
                            (self.holder, now + seconds, name, key))
            return True

    async def held(self, name: str) -> int:
        """How many leases named `name` are held and not run out (with "process": the processes
        alive on this database)."""
        row = await self._store().fetch_one("SELECT COUNT(*) FROM leases WHERE name = ? AND until_epoch > ?",
                                            (name, self._clock()))
        return int(row[0]) if row else 0

    async def release(self, name: str, key: str) -> None:
        async with self._store().transaction() as t:
            await t.execute("DELETE FROM leases WHERE name = ? AND key = ? AND holder = ?", (name, key, self.holder))

    async def hold(self, name: str, key: str, seconds: float, *, wait: float) -> bool:
        """Claim, trying again every WAIT_STEP for up to `wait` seconds. True once held."""
        deadline = time.monotonic() + wait
        while not await self.claim(name, key, seconds):
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(WAIT_STEP)
        return True


class SharedTokens:
    """The OAuth token, shared through the database (a `TokenSource` for the Daraja client's cache).

    `get()` returns the stored token while it has more than its refresh margin (a fifth of its
    lifetime, at most `max_margin` seconds) to live; otherwise one process (the holder of the refresh
    lease) fetches and stores a new one while the others wait for it. A token Daraja refused
    (`refused`) is never handed out again: the next caller refreshes it."""

    def __init__(self, store: Callable[[], TransactionStore], leases: Leases, *,
                 clock: Callable[[], float] = time.time, lease_seconds: float = 30.0) -> None:
        self._store = store
        self._leases = leases
        self._clock = clock
        self._lease_seconds = lease_seconds
        self._one_at_a_time = asyncio.Lock()  # this process's callers: one asks, the others find its token

    async def _stored(self, max_margin: float, refused: str | None) -> tuple[str, float, float] | None:
        row = await self._store().fetch_one("SELECT token, expires_epoch, lifetime FROM oauth_tokens WHERE name = ?",
                                            (TOKEN_NAME,))
        if row is None or row[0] == refused:
            return None
        left, lifetime = float(row[1]) - self._clock(), float(row[2])
        return (str(row[0]), left, lifetime) if left > min(max_margin, lifetime / 5) else None

    async def get(self, fetch: Callable[[], Awaitable[tuple[str, int]]], *, max_margin: float,
                  refused: str | None = None) -> tuple[str, float, float]:
        """(token, seconds left, lifetime) of a usable token."""
        async with self._one_at_a_time:
            return await self._get(fetch, max_margin, refused)

    async def _get(self, fetch: Callable[[], Awaitable[tuple[str, int]]], max_margin: float,
                   refused: str | None) -> tuple[str, float, float]:
        deadline = time.monotonic() + self._lease_seconds + 5
        while True:
            found = await self._stored(max_margin, refused)
            if found is not None:
                return found
            if await self._leases.claim("token", TOKEN_LEASE, self._lease_seconds):
                try:
                    found = await self._stored(max_margin, refused)  # stored by another process meanwhile?
                    return found if found is not None else await self._refresh(fetch)
                finally:
                    await self._leases.release("token", TOKEN_LEASE)
            if time.monotonic() >= deadline:
                return await self._refresh(fetch)  # the lease holder is gone or stuck: fetch one of our own
            await asyncio.sleep(WAIT_STEP)

    async def _refresh(self, fetch: Callable[[], Awaitable[tuple[str, int]]]) -> tuple[str, float, float]:
        token, lifetime = await fetch()
        async with self._store().transaction() as t:
            await t.execute("DELETE FROM oauth_tokens WHERE name = ?", (TOKEN_NAME,))
            await t.execute("INSERT INTO oauth_tokens (name, token, expires_epoch, lifetime, fetched_at) "
                            "VALUES (?, ?, ?, ?, ?)",
                            (TOKEN_NAME, token, self._clock() + lifetime, lifetime, utc_now()))
        return token, float(lifetime), float(lifetime)


def limiter_for(app: web.Application, name: str, limit: int, window: float) -> Limiter:
    """The limit `name` for this app: counted in the database on PostgreSQL (where other processes
    may serve the same shop), in memory on SQLite (one process)."""
    if is_postgresql(app[SETTINGS].database_url):
        return SharedLimiter(name, limit, window, lambda: app[PAYMENTS].store)
    return LocalLimiter(limit, window)
