"""Long-lived responses (server-sent events) that end promptly when the server shuts down."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Iterator

from aiohttp import web

STREAMS: web.AppKey[set[asyncio.Task[object]]] = web.AppKey("streams", set)


async def _close_streams(app: web.Application) -> None:
    for task in list(app[STREAMS]):
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
