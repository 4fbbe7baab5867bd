"""The typed keys under which the pages keep their settings on the aiohttp application."""

from __future__ import annotations

from aiohttp import web

SIMULATOR_PIN = web.AppKey("web_simulator_pin", str)  # shown on the pay page in simulator mode ("" otherwise)
