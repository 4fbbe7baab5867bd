"""The simulator's JSON control API: the handset's buttons and a live feed, for the pages and tests."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp_sse import sse_response

from .exceptions import DarajaException
from .keys import SIMULATOR
from .models import Prompt, PromptClosed, SimulatedDaraja
from .phones import msisdn as safaricom_msisdn
from .scenarios import BEHAVIOUR_FIELDS, CatalogueError, parse_behaviour
from .streams import tracked_stream
from .validation import MAX_AMOUNT

STREAM_LIFETIME = 600.0  # an open page reconnects after this; no stream lives forever
BAD_MSISDN = "msisdn must be a Safaricom number like 254708374149"


def _sim(request: web.Request) -> SimulatedDaraja:
    return request.app[SIMULATOR]


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


async def _json(request: web.Request) -> dict[str, Any] | None:
    try:
        body = json.loads(await request.read() or b"{}")
    except (ValueError, RecursionError):
        return None
    return body if isinstance(body, dict) else None


async def list_scenarios(request: web.Request) -> web.Response:
    return web.json_response([s.to_json() for s in _sim(request).catalogue.values()])


def _limit(request: web.Request, default: int | None) -> int | None:
    raw = request.query.get("limit")
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 9 or int(raw) < 1:
        raise web.HTTPBadRequest(text=json.dumps({"error": "limit must be a whole number above 0"}),
                                 content_type="application/json")
    return int(raw)


async def list_prompts(request: web.Request) -> web.Response:
    sim = _sim(request)
    return web.json_response(sim.prompts_json(request.query.get("msisdn"), request.query.get("state"),
                                              _limit(request, None)))


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


async def ignore(request: web.Request) -> web.Response:
    return _answer(request, lambda sim, cid: sim.ignore(cid))


async def trigger(request: web.Request) -> web.Response:
    """Put a prompt on a handset without going through OAuth and STK push (for testing a receiver)."""
    body = await _json(request)
    if body is None:
        return _error(400, "body must be a JSON object")
    msisdn, amount, url = body.get("msisdn"), body.get("amount", 1), body.get("callbackUrl")
    msisdn = safaricom_msisdn(msisdn)
    if msisdn is None:
        return _error(400, BAD_MSISDN)
    if not isinstance(amount, int) or isinstance(amount, bool) or not 1 <= amount <= MAX_AMOUNT:
        return _error(400, f"amount must be a whole number from 1 to {MAX_AMOUNT}")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        return _error(400, "callbackUrl must be an http(s) URL")
    reference = body.get("accountReference", "TEST")
    sim = _sim(request)
    try:
        prompt = sim.trigger(msisdn, amount, url, str(reference)[:12] or "TEST")
    except DarajaException as exc:
        return _error(409, exc.error_message)
    return web.json_response(sim.prompt_json(prompt), status=201)


async def journal(request: web.Request) -> web.Response:
    sim = _sim(request)
    limit = min(_limit(request, 200) or 200, 2000)
    entries = sim.journal_entries(request.query.get("kind"), request.query.get("checkoutRequestId"), limit)
    return web.json_response([e.to_json() for e in entries])


async def resend_callback(request: web.Request) -> web.Response:
    sim = _sim(request)
    try:
        job = sim.resend(int(request.match_info["journal_id"]))
    except (KeyError, ValueError):
        return _error(404, "no such callback in the journal")
    return web.json_response({"checkoutRequestId": job.checkout_request_id, "url": job.url, "queued": True},
                             status=202)


def _behaviour(body: dict[str, Any]) -> dict[str, Any] | web.Response:
    unknown = set(body) - set(BEHAVIOUR_FIELDS)
    if unknown:
        return _error(400, f"unknown field(s) {', '.join(sorted(unknown))}: use any of {', '.join(BEHAVIOUR_FIELDS)}")
    try:
        behaviour = parse_behaviour(body, "fault")
    except CatalogueError as exc:
        return _error(400, str(exc))
    if not behaviour:
        return _error(400, f"say what to change: any of {', '.join(BEHAVIOUR_FIELDS)}")
    return behaviour


async def list_faults(request: web.Request) -> web.Response:
    return web.json_response(_sim(request).faults_json())


async def add_faults(request: web.Request) -> web.Response:
    """The next `count` pushes (to `msisdn`, or to any number) behave as the body says."""
    body = await _json(request)
    if body is None:
        return _error(400, "body must be a JSON object")
    count, msisdn = body.pop("count", 1), body.pop("msisdn", None)
    if not isinstance(count, int) or isinstance(count, bool) or not 1 <= count <= 10_000:
        return _error(400, "count must be a whole number from 1 to 10000")
    if msisdn is not None and safaricom_msisdn(msisdn) is None:
        return _error(400, BAD_MSISDN)
    behaviour = _behaviour(body)
    if isinstance(behaviour, web.Response):
        return behaviour
    return web.json_response(_sim(request).add_faults(behaviour, count, msisdn).to_json(), status=201)


async def clear_faults(request: web.Request) -> web.Response:
    sim = _sim(request)
    sim.clear_faults()
    return web.json_response(sim.faults_json())


async def set_subscriber_faults(request: web.Request) -> web.Response:
    msisdn = request.match_info["msisdn"]
    if safaricom_msisdn(msisdn) is None:
        return _error(400, BAD_MSISDN)
    body = await _json(request)
    if body is None:
        return _error(400, "body must be a JSON object")
    behaviour = _behaviour(body)
    if isinstance(behaviour, web.Response):
        return behaviour
    _sim(request).set_subscriber_faults(msisdn, behaviour)
    return web.json_response(behaviour)


async def clear_subscriber_faults(request: web.Request) -> web.Response:
    _sim(request).lift_subscriber_faults(request.match_info["msisdn"])
    return web.Response(status=204)


async def reset(request: web.Request) -> web.Response:
    _sim(request).reset()
    return web.json_response({"reset": True})


async def clock(request: web.Request) -> web.Response:
    """GET: the simulator's time. POST {"advanceSeconds": N}: move it forward."""
    sim = _sim(request)
    if request.method == "POST":
        body = await _json(request)
        seconds = body.get("advanceSeconds") if body else None
        if not isinstance(seconds, (int, float)) or isinstance(seconds, bool) or not 0 < seconds <= 86_400 * 30:
            return _error(400, "advanceSeconds must be a number of seconds from 0 to 2592000")
        sim.advance_clock(float(seconds))
    return web.json_response({"now": sim.clock(), "offsetSeconds": sim.clock_offset})


async def expire_tokens(request: web.Request) -> web.Response:
    return web.json_response({"expired": _sim(request).revoke_tokens()})


def _answer(request: web.Request, action: Callable[[SimulatedDaraja, str], Prompt]) -> web.Response:
    sim = _sim(request)
    try:
        prompt = action(sim, request.match_info["checkout_request_id"])
    except KeyError:
        return _error(404, "no such prompt")
    except PromptClosed as closed:
        return _error(409, f"the prompt is already {closed.prompt.state} ({closed.prompt.result_desc})")
    return web.json_response(sim.prompt_json(prompt))


async def list_subscribers(request: web.Request) -> web.Response:
    return web.json_response([s.to_json() for s in _sim(request).list_subscribers()])


async def get_subscriber(request: web.Request) -> web.Response:
    msisdn = request.match_info["msisdn"]
    if safaricom_msisdn(msisdn) is None:
        return _error(400, BAD_MSISDN)
    return web.json_response(_sim(request).subscriber(msisdn).to_json())


async def events(request: web.Request) -> web.StreamResponse:
    """Server-sent events: `prompts` (the list, as GET /api/prompts gives it) after every change."""
    sim = _sim(request)
    msisdn = request.query.get("msisdn")
    if msisdn is not None and safaricom_msisdn(msisdn) is None:
        return _error(400, BAD_MSISDN)
    limit = _limit(request, None if msisdn else 200)  # the overview needs the newest, not all of a load test
    changed = asyncio.Event()
    sim.subscribe(changed.set)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + STREAM_LIFETIME
    try:
        with tracked_stream(request):
            async with sse_response(request, ping_interval=15) as stream:
                last = None
                while stream.is_connected() and loop.time() < deadline:
                    changed.clear()
                    current = json.dumps(sim.prompts_json(msisdn, limit=limit), default=str)
                    if current != last:
                        await stream.send(current, event="prompts")
                        last = current
                    # Open prompts count down: refresh at least once a second while any is open.
                    timeout = 1.0 if sim.has_open_prompts() else 15.0
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(timeout):  # not wait_for: it can swallow a cancel
                            await changed.wait()
                return stream
    finally:
        sim.unsubscribe(changed.set)
