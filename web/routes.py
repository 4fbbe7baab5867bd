"""Page routes and the template set-up (jinja2 through aiohttp-jinja2)."""

from __future__ import annotations

from pathlib import Path

import aiohttp_jinja2
import jinja2
from aiohttp import web

from gateway.handlers import SETTINGS

HERE = Path(__file__).parent


@aiohttp_jinja2.template("index.html")
async def index(request: web.Request) -> dict[str, object]:
    settings = request.app[SETTINGS]
    catalogue = []
    if settings.simulator_mounted:
        from simulator.responses import SIMULATOR
        catalogue = list(request.app[SIMULATOR].catalogue.values())
    return {"settings": settings, "catalogue": catalogue}


def setup_web(app: web.Application) -> None:
    aiohttp_jinja2.setup(app, loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True)
    app.router.add_get("/", index)
    app.router.add_static("/static/", HERE / "static", name="static")
