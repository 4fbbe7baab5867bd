"""The simulator's JSON control API: the handset's buttons, for the phone page and for tests."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from .models import PromptClosed, SimulatedDaraja
from .responses import SIMULATOR


def _sim(request: web.Request) -> SimulatedDaraja:
    return request.app[SIMULATOR]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json(request: web.Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.read() or b"{}")
    except ValueError:
        raise web.HTTPBadRequest(text=json.dumps({"error": "body must be JSON"}),
                                 content_type="application/json") from None
    if not isinstance(body, dict):
        raise web.HTTPBadRequest(text=json.dumps({"error": "body must be a JSON object"}),
                                 content_type="application/json")
    return body


async def list_scenarios(request: web.Request) -> web.Response:
    return web.json_response([s.to_json() for s in _sim(request).catalogue.values()])


async def list_prompts(request: web.Request) -> web.Response:
    sim = _sim(request)
    now = sim.catch_up()
    msisdn = request.query.get("msisdn")
    prompts = [p for p in sim.prompts.values() if msisdn is None or p.msisdn == msisdn]
    if request.query.get("state"):
        prompts = [p for p in prompts if p.state == request.query["state"]]
    return web.json_response([p.to_json(now) for p in sorted(prompts, key=lambda p: -p.created_at)])


async def get_prompt(request: web.Request) -> web.Response:
    sim = _sim(request)
    prompt = sim.prompt(request.match_info["checkout_request_id"])
    if prompt is None:
        return _error(404, "no such prompt")
    return web.json_response(prompt.to_json(sim.clock()))


async def enter_pin(request: web.Request) -> web.Response:
    body = await _json(request)
    pin = body.get("pin")
    if not isinstance(pin, str):
        return _error(400, "pin must be a string")
    return _answer(request, lambda sim, cid: sim.enter_pin(cid, pin))


async def cancel(request: web.Request) -> web.Response:
    return _answer(request, lambda sim, cid: sim.cancel(cid))


def _answer(request: web.Request, action: Any) -> web.Response:
    sim = _sim(request)
    try:
        prompt = action(sim, request.match_info["checkout_request_id"])
    except KeyError:
        return _error(404, "no such prompt")
    except PromptClosed as closed:
        return _error(409, f"the prompt is already {closed.prompt.state} ({closed.prompt.result_desc})")
    return web.json_response(prompt.to_json(sim.clock()))


async def get_subscriber(request: web.Request) -> web.Response:
    msisdn = request.match_info["msisdn"]
    if not msisdn.isdigit() or len(msisdn) != 12 or not msisdn.startswith("254"):
        return _error(400, "msisdn must be 12 digits starting with 254")
    return web.json_response(_sim(request).subscriber(msisdn).to_json())
