"""Server-sent event streams of the simulator's pages, ended promptly when the server shuts down
(an open stream would otherwise hold the shutdown until the browser leaves)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

from aiohttp import web

from .keys import OPEN_STREAMS


class OpenStreams:
    """The tasks of the streams open now."""

    def __init__(self) -> None:
        self.tasks: set[asyncio.Task[Any]] = set()




async def _end_streams(app: web.Application) -> None:
    for task in list(app[OPEN_STREAMS].tasks):
        task.cancel()


def enable_streams(app: web.Application) -> None:
    app[OPEN_STREAMS] = OpenStreams()
    app.on_shutdown.append(_end_streams)


@contextlib.contextmanager
def tracked_stream(request: web.Request) -> Iterator[None]:
    """Within the block, the handler's task is cancelled when the server shuts down."""
    task = asyncio.current_task()
    if task is None:
        raise RuntimeError("tracked_stream needs a running task")
    streams = request.app[OPEN_STREAMS].tasks
    streams.add(task)
    try:
        yield
    finally:
        streams.discard(task)
