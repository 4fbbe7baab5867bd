"""Every error leaves the gateway as JSON with a clear message, and never with internals."""

from __future__ import annotations

import logging
from typing import Any

from aiohttp import web

from .handlers import BadRequest, failure

log = logging.getLogger("gateway.http")


@web.middleware
async def json_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return failure(exc.message, exc.status, **exc.extra)
    except web.HTTPRequestEntityTooLarge:
        return failure("Request body is too large", 413)
    except web.HTTPNotFound:
        return failure("Not found", 404)
    except web.HTTPMethodNotAllowed as exc:
        return failure(f"Method {request.method} not allowed", 405, allowed=sorted(exc.allowed_methods))
    except web.HTTPException:
        raise
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return failure("Internal server error", 500)
