"""Application factories: the simulator mounted beside the gateway, or standing alone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import aiohttp_jinja2
import jinja2
from aiohttp import web

from .keys import RUNNER, SIMULATOR
from .models import SimulatedDaraja
from .openapi import DARAJA_PREFIX
from .responses import daraja_errors, journal_requests
from .runner import SimulatorRunner
from .scenarios import CatalogueError, load_catalogue
from .settings import SimulatorConfigError, SimulatorSettings
from .streams import enable_streams
from .urls import CONTROL_ROUTES, DARAJA_ROUTES

# The simulator's pages and their scripts and styles are its own package data.
STATIC = Path(__file__).resolve().parent / "static"


def build_simulator(settings: SimulatorSettings) -> SimulatedDaraja:
    """The Daraja world for these settings: the sandbox merchant, the configured one, any extras."""
    try:
        catalogue = load_catalogue(settings.scenarios_file)
    except CatalogueError as exc:
        raise SimulatorConfigError(str(exc)) from None
    return SimulatedDaraja(settings, catalogue=catalogue)


def _runtime(sim: SimulatedDaraja) -> Callable[[web.Application], AsyncIterator[None]]:
    async def runtime(app: web.Application) -> AsyncIterator[None]:
        async with aiohttp.ClientSession() as session:
            runner = SimulatorRunner(sim, session)
            app[RUNNER] = runner
            task = asyncio.create_task(runner.run())
            yield
            runner.stop()
            try:
                async with asyncio.timeout(5):
                    await task
            except TimeoutError:
                task.cancel()
            await runner.close()
    return runtime


def create_daraja_app(sim: SimulatedDaraja) -> web.Application:
    app = web.Application(middlewares=[journal_requests, daraja_errors])
    app[SIMULATOR] = sim
    app.add_routes(DARAJA_ROUTES)
    return app


def create_control_app(sim: SimulatedDaraja, daraja_prefix: str = "") -> web.Application:
    """The control API and pages; `daraja_prefix`: where Daraja's paths are, for its OpenAPI document."""
    app = web.Application()
    app[SIMULATOR] = sim
    app[DARAJA_PREFIX] = daraja_prefix
    app.add_routes(CONTROL_ROUTES)
    enable_streams(app)
    aiohttp_jinja2.setup(app, loader=jinja2.PackageLoader("simulator", "templates"), autoescape=True)
    app.router.add_static("/static/", STATIC, name="static")
    return app


def mount_simulator(app: web.Application, settings: SimulatorSettings) -> SimulatedDaraja:
    """Daraja's paths under /daraja and the control API under /simulator, in the gateway's process."""
    sim = build_simulator(settings)
    app[SIMULATOR] = sim
    app.add_subapp("/daraja", create_daraja_app(sim))
    app.add_subapp("/simulator", create_control_app(sim, "/daraja"))
    app.cleanup_ctx.append(_runtime(sim))
    return sim


def create_standalone_app(settings: SimulatorSettings) -> web.Application:
    """Daraja's paths at the root, so any Daraja client can use this base URL instead of Safaricom's."""
    sim = build_simulator(settings)
    app = web.Application(middlewares=[journal_requests, daraja_errors], client_max_size=settings.max_body_bytes)
    app[SIMULATOR] = sim
    app.add_routes(DARAJA_ROUTES)
    app.add_subapp("/simulator", create_control_app(sim))
    app.cleanup_ctx.append(_runtime(sim))
    return app
