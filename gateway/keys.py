"""The typed keys under which the gateway keeps its parts on the aiohttp application."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from aiohttp import web

from .config import Settings

if TYPE_CHECKING:  # the classes are only annotations here: no import cycle at run time
    from .payments import PaymentService
    from .shared import Limiter
    from .streams import StreamLimits

SETTINGS = web.AppKey("settings", Settings)
PAYMENTS: web.AppKey[PaymentService] = web.AppKey("payments")
PUSH_LIMITER: web.AppKey[Limiter] = web.AppKey("push_limiter")  # per phone
CLIENT_PUSH_LIMITER: web.AppKey[Limiter] = web.AppKey("client_push_limiter")
LOOKUP_LIMITER: web.AppKey[Limiter] = web.AppKey("lookup_limiter")  # unknown ids, per client
STREAM_LIMITS: web.AppKey[StreamLimits] = web.AppKey("stream_limits")
STREAMS: web.AppKey[set[asyncio.Task[object]]] = web.AppKey("streams")  # live responses, ended at shut-down
