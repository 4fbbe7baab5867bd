"""Every error leaves the gateway as JSON with a clear message, and never with internals."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web
from multidict import CIMultiDict, istr

from .handlers import BadRequest, failure
from .storage_pg import UNAVAILABLE

log = logging.getLogger("gateway.http")

DATABASE_RETRY_AFTER = 5
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


SECURITY_HEADERS = tuple((istr(name), value) for name, value in {
    # Pages load only their own scripts; only this site may frame them (the pay page frames the phone).
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                               "frame-ancestors 'self'; object-src 'none'; base-uri 'self'; form-action 'self'",
    "X-Frame-Options": "SAMEORIGIN",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
}.items())  # istr: the header map need not fold each name's case again on every answer


def add_security_headers(headers: CIMultiDict[str]) -> None:
    """The security headers an answer's handler did not set itself. Called on every answer, before
    its headers go out (errors, streams and static files too: see gateway/app.py `answer_headers`)."""
    for name, value in SECURITY_HEADERS:
        headers.setdefault(name, value)


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
