"""The typed keys under which the simulator keeps its parts on an aiohttp application."""

from __future__ import annotations

from typing import TYPE_CHECKING

from aiohttp import web

if TYPE_CHECKING:  # the classes are only annotations here: no import cycle at run time
    from .models import SimulatedDaraja
    from .runner import SimulatorRunner
    from .streams import OpenStreams

SIMULATOR: web.AppKey[SimulatedDaraja] = web.AppKey("simulator")
RUNNER: web.AppKey[SimulatorRunner] = web.AppKey("simulator_runner")
OPEN_STREAMS: web.AppKey[OpenStreams] = web.AppKey("simulator_open_streams")  # ended at shut-down
