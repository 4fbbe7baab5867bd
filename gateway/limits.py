"""Per-key sliding-window limits: at most N events per key in any window of W seconds.

The gateway uses one to stop a checkout being used to bombard a customer's phone with prompts.
In-process: each worker counts its own requests.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable


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
