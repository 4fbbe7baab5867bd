"""Signed webhooks to the shop's backend from a durable outbox (being built)."""

from __future__ import annotations

from aiohttp import web


def install_webhooks(app: web.Application) -> None:
    """Write an event for every change the shop hears of, and deliver them, signed, until they land."""
