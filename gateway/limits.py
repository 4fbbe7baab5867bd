"""Per-key sliding-window limits: at most N events per key in any window of W seconds.

The gateway uses them to stop a checkout being used to bombard a customer's phone with prompts
(per phone), to fire pushes at many phones (per client address), and to guess payment ids (per
client address, unknown ids only). In-process: each worker counts its own requests.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable


def retry_after_seconds(wait: float) -> int:
    """A wait in seconds as a client is told it: whole seconds, rounded up (a client that waits that
    long finds the limit open again), at least 1."""
    return max(1, math.ceil(wait))


def retry_after_header(wait: float) -> str:
    """The same, as the `Retry-After` header's value."""
    return str(retry_after_seconds(wait))


class SlidingWindowLimiter:
    def __init__(self, limit: int, window: float, *, clock: Callable[[], float] = time.monotonic,
                 max_keys: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._max_keys = max_keys
        self._events: dict[str, deque[float]] = {}

    def retry_after(self, key: str) -> float:
        """0 if another event for `key` is allowed now, else seconds until it will be. Records nothing."""
        if self.limit <= 0:
            return 0.0
        now = self._clock()
        events = self._events.get(key)
        if not events:
            return 0.0
        while events and now - events[0] >= self.window:
            events.popleft()
        if len(events) >= self.limit:
            return self.window - (now - events[0])
        return 0.0

    def acquire(self, key: str) -> float:
        """Reserve an event for `key` now if the limit allows it (0.0), else the seconds to wait
        (nothing reserved). Check and reservation are one step, so concurrent callers cannot all
        pass a check that only one of them should."""
        wait = self.retry_after(key)
        if wait:
            return wait
        self.record(key)
        return 0.0

    def release(self, key: str) -> None:
        """Give back one reserved event (the thing it stood for did not happen after all)."""
        events = self._events.get(key)
        if events:
            events.pop()

    def record(self, key: str) -> None:
        """Count an event that happened (callers record only what really went out)."""
        if self.limit <= 0:
            return
        now = self._clock()
        self._events.setdefault(key, deque()).append(now)
        if len(self._events) > self._max_keys:
            self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        for key in [k for k, e in self._events.items() if not e or now - e[-1] >= self.window]:
            del self._events[key]


class RateBudget:
    """At most `rate` events a second on average, and never more than one second's worth at once
    (at least one): a token bucket. The reconciler spends it on its STK queries, so that however
    many payments are due, it never asks Daraja faster than that (Daraja's per-second spike
    arrest is counted per app, and the pushes share it)."""

    def __init__(self, rate: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = max(1.0, rate)
        self._clock = clock
        self._tokens = self.burst
        self._at = clock()

    def set_rate(self, rate: float) -> None:
        """From now on, `rate` events a second (what was earned at the old rate is kept, up to the
        new burst)."""
        self.available()
        self.rate = rate
        self.burst = max(1.0, rate)
        self._tokens = min(self._tokens, self.burst)

    def available(self) -> int:
        """How many events may happen now."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + max(0.0, now - self._at) * self.rate)
        self._at = now
        return int(self._tokens)

    def spend(self, n: int) -> None:
        self._tokens -= n
