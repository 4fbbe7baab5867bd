"""The simulator's JSON control API: the handset's buttons and a live feed, for the pages and tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any, Callable

from aiohttp import web
from aiohttp_sse import sse_response

from gateway.streams import tracked_stream

from .models import Prompt, PromptClosed, SimulatedDaraja
from .responses import SIMULATOR

STREAM_LIFETIME = 600.0  # an open page reconnects after this; no stream lives forever


def _sim(request: web.Request) -> SimulatedDaraja:
    return request.app[SIMULATOR]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def list_scenarios(request: web.Request) -> web.Response:
    return web.json_response([s.to_json() for s in _sim(request).catalogue.values()])


async def list_prompts(request: web.Request) -> web.Response:
    sim = _sim(request)
    return web.json_response(sim.prompts_json(request.query.get("msisdn"), request.query.get("state")))


async def get_prompt(request: web.Request) -> web.Response:
    sim = _sim(request)
    prompt = sim.prompt(request.match_info["checkout_request_id"])
    if prompt is None:
        return _error(404, "no such prompt")
    return web.json_response(sim.prompt_json(prompt))


async def enter_pin(request: web.Request) -> web.Response:
    body = await _json(request)
    if body is None:
        return _error(400, "body must be a JSON object")
    pin = body.get("pin")
    if not isinstance(pin, str):
        return _error(400, "pin must be a string")
    return _answer(request, lambda sim, cid: sim.enter_pin(cid, pin))


async def cancel(request: web.Request) -> web.Response:
    return _answer(request, lambda sim, cid: sim.cancel(cid))


def _answer(request: web.Request, action: Callable[[SimulatedDaraja, str], Prompt]) -> web.Response:
    sim = _sim(request)
    try:
        prompt = action(sim, request.match_info["checkout_request_id"])
    except KeyError:
        return _error(404, "no such prompt")
    except PromptClosed as closed:
        return _error(409, f"the prompt is already {closed.prompt.state} ({closed.prompt.result_desc})")
    return web.json_response(sim.prompt_json(prompt))


def _valid_msisdn(msisdn: str) -> bool:
    return msisdn.isascii() and msisdn.isdigit() and len(msisdn) == 12 and msisdn.startswith("254")


async def list_subscribers(request: web.Request) -> web.Response:
    return web.json_response([s.to_json() for s in _sim(request).subscribers.values()])


async def get_subscriber(request: web.Request) -> web.Response:
    msisdn = request.match_info["msisdn"]
    if not _valid_msisdn(msisdn):
        return _error(400, "msisdn must be 12 digits starting with 254")
    return web.json_response(_sim(request).subscriber(msisdn).to_json())


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `prompts` (the list, as GET /api/prompts gives it) after every change."""
    sim = _sim(request)
    msisdn = request.query.get("msisdn")
    if msisdn is not None and not _valid_msisdn(msisdn):
        return _error(400, "msisdn must be 12 digits starting with 254")
    changed = asyncio.Event()
    sim.listeners.append(changed.set)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_LIFETIME
    try:
        with tracked_stream(request):
            async with sse_response(request, ping_interval=15) as stream:
                last = None
                while stream.is_connected() and loop.time() < deadline:
                    changed.clear()
                    current = json.dumps(sim.prompts_json(msisdn))
                    if current != last:
                        await stream.send(current, event="prompts")
                        last = current
                    # Open prompts count down: refresh at least once a second while any is open.
                    timeout = 1.0 if any(p.open for p in sim.prompts.values()) else 15.0
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(changed.wait(), timeout)
                return stream
    finally:
        sim.listeners.remove(changed.set)
