"""Orders priced on the server, idempotent requests and the demo catalogue (being built)."""

from __future__ import annotations

from aiohttp import web


def install_orders(app: web.Application) -> None:
    """Add the orders API, idempotency and (in simulator mode) the demo catalogue to the gateway."""
