"""The typed keys under which the pages keep their settings on the aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:
    from .assets import StaticBuild

SIMULATOR_PIN = web.AppKey("web_simulator_pin", str)  # shown on the pay page in simulator mode ("" otherwise)
STATIC_BUILD: web.AppKey[StaticBuild] = web.AppKey("web_static_build")  # the served copy of web/static
