"""Every error leaves the gateway as JSON with a clear message, and never with internals."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from .handlers import BadRequest, failure
from .storage_pg import UNAVAILABLE

log = logging.getLogger("gateway.http")

DATABASE_RETRY_AFTER = 5
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


SECURITY_HEADERS = {
    # Pages load only their own scripts; only this site may frame them (the pay page frames the phone).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'self'; object-src 'none'; base-uri 'self'; form-action 'self'",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """On every answer, before its headers go out (errors, streams and static files too): the
    security headers the handler did not set itself. A signal (`on_response_prepare`), not a
    middleware: a stream's headers are sent before its handler returns."""
    headers = response.headers
    for name, value in SECURITY_HEADERS.items():
        if name not in headers:
            headers[name] = value


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except BadRequest as exc:
        return failure(exc.message, exc.status, headers=exc.headers, **exc.extra)
    except web.HTTPRequestEntityTooLarge:
        return failure("Request body is too large", 413)
    except web.HTTPNotFound:
        return failure("Not found", 404)
    except web.HTTPMethodNotAllowed as exc:
        allowed = sorted(exc.allowed_methods)
        return failure(f"Method {request.method} not allowed", 405, headers={"Allow": ", ".join(allowed)},
                       allowed=allowed)
    except web.HTTPException:
        raise
    except UNAVAILABLE as exc:
        log.warning("database unavailable on %s %s: %s", request.method, request.path, type(exc).__name__)
        return failure("The payment service cannot reach its database just now. Please try again in a moment.",
                       503, headers={"Retry-After": str(DATABASE_RETRY_AFTER)})
    except Exception:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return failure("Internal server error", 500)
