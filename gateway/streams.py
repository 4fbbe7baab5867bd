"""Long-lived responses (server-sent events): capped per client and in all, and ended promptly
when the server shuts down."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator

from aiohttp import web

from .keys import STREAMS


class StreamLimits:
    """How many streams are open, per client address and in all; refuses one past either cap."""

    def __init__(self, per_client: int, total: int) -> None:
        self.per_client = per_client
        self.total = total
        self._open: Counter[str] = Counter()
        self.open_count = 0

    @contextlib.contextmanager
    def hold(self, client: str) -> Iterator[bool]:
        """Yields whether a stream may open for `client`; counts it until the block ends if so."""
        allowed = self._open[client] < self.per_client and self.open_count < self.total
        if allowed:
            self._open[client] += 1
            self.open_count += 1
        try:
            yield allowed
        finally:
            if allowed:
                self._open[client] -= 1
                self.open_count -= 1
                if not self._open[client]:
                    del self._open[client]


async def _close_streams(app: web.Application) -> None:
    streams: set[asyncio.Task[object]] = app[STREAMS]
    for task in list(streams):
        task.cancel()


def enable_streams(app: web.Application) -> None:
    app[STREAMS] = set()
    app.on_shutdown.append(_close_streams)


@contextlib.contextmanager
def tracked_stream(request: web.Request) -> Iterator[None]:
    """Register the handler's task so shutdown can end it instead of waiting for it."""
    task = asyncio.current_task()
    assert task is not None
    streams = request.app[STREAMS]
    streams.add(task)
    try:
        yield
    finally:
        streams.discard(task)
