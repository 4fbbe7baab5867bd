"""Daraja's wire format: requests in, exact Daraja bodies out. No business rules in here."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qsl

from aiohttp import web

from .exceptions import (
    DarajaException,
    InternalServerError,
    InvalidAccessToken,
    InvalidAuthentication,
    InvalidField,
    InvalidGrantType,
    InvalidRequestPayload,
    MethodNotAllowed,
    ResourceNotFound,
    SpikeArrestViolation,
    TransactionBeingProcessed,
)
from .journal import parse_body
from .keys import SIMULATOR
from .models import SimulatedDaraja
from .profiles import CURRENT, Profile
from .result_codes import QUERY_ACCEPTED, query_desc

log = logging.getLogger("simulator.daraja")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
HINT_HEADER = "X-Simulator-Hint"
ACCEPTED = "Success. Request accepted for processing"
# A request's JSON body as the handler read it, and an answer's as the handler built it, kept on the
# request and the answer so that the journal does not parse either again.
REQUEST_BODY: web.RequestKey[dict[str, Any]] = web.RequestKey("simulator_request_body")
ANSWER_BODY: web.ResponseKey[dict[str, Any]] = web.ResponseKey("simulator_answer_body")


def answer(body: dict[str, Any]) -> web.Response:
    """Daraja's JSON answer; the journal records `body` as it is."""
    response = web.json_response(body)
    response[ANSWER_BODY] = body
    return response


def render_error(exc: DarajaException, request_id: str, profile: Profile = CURRENT) -> web.Response:
    headers = {HINT_HEADER: exc.hint} if exc.hint else {}
    if exc.empty_body:
        return web.Response(status=exc.http_status, headers=headers)
    if isinstance(exc, SpikeArrestViolation) and profile.spike_arrest == "apigee":
        # Apigee, in front of Daraja, refuses before Daraja sees the request, in its own shape.
        return web.json_response({"fault": {"faultstring": exc.apigee_faultstring,
                                            "detail": {"errorcode": "policies.ratelimit.SpikeArrestViolation"}}},
                                 status=429, headers=headers)
    body = {"requestId": exc.request_id or request_id, "errorCode": exc.error_code, "errorMessage": exc.error_message}
    if isinstance(exc, InvalidAccessToken):  # as captured: this exact Content-Type, and no caching
        headers.update({"Content-Type": "application/json;charset=UTF-8", "Cache-Control": "no-store"})
        return web.Response(body=json.dumps(body).encode(), status=exc.http_status, reason=exc.reason,
                            headers=headers)
    return web.json_response(body, status=exc.http_status, reason=exc.reason, headers=headers)


@web.middleware
async def daraja_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every failure leaves in Daraja's envelope, including aiohttp's own 404/405."""
    sim = request.app[SIMULATOR]
    try:
        return await handler(request)
    except DarajaException as exc:
        if exc.hint:
            log.warning("%s %s -> %s (%s)", request.method, request.path, exc.error_message, exc.hint)
        return render_error(exc, sim.new_request_id(), sim.settings.daraja)
    except web.HTTPMethodNotAllowed as exc:
        refused = render_error(MethodNotAllowed(request.method), sim.new_request_id())
        refused.headers["Allow"] = exc.headers["Allow"]  # the methods the path takes (RFC 9110: required)
        return refused
    except web.HTTPNotFound:
        return render_error(ResourceNotFound(), sim.new_request_id())
    except web.HTTPRequestEntityTooLarge:
        return render_error(InvalidRequestPayload(), sim.new_request_id())


@web.middleware
async def journal_requests(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Record every Daraja request and its answer (secrets masked) in the simulator's journal."""
    if request.path.startswith("/simulator/"):  # standalone: the control API is not Daraja
        return await handler(request)
    sim = request.app[SIMULATOR]
    started = time.perf_counter()
    at = sim.clock()
    try:
        raw = await request.read() if request.can_read_body else b""
    except web.HTTPRequestEntityTooLarge:
        refused = render_error(InvalidRequestPayload(), sim.new_request_id())
        sim.record_request(at=at, method=request.method, url=request.path_qs, status=refused.status,
                           duration_ms=0.0, request_headers=dict(request.headers),
                           request_body="(body over the size limit, not kept)")
        return refused
    response = await handler(request)
    body = response.body if isinstance(response, web.Response) else None
    request_body: Any = request[REQUEST_BODY] if REQUEST_BODY in request else parse_body(raw)
    response_body: Any = response.get(ANSWER_BODY)
    if response_body is None and isinstance(body, bytes):
        response_body = parse_body(body)
    sim.record_request(at=at, method=request.method, url=request.path_qs, status=response.status,
                       duration_ms=round((time.perf_counter() - started) * 1000, 1),
                       request_headers=dict(request.headers), request_body=request_body,
                       response_body=response_body, checkout_request_id=_checkout_id(request_body, response_body))
    return response


def _checkout_id(*bodies: Any) -> str | None:
    for body in bodies:
        value = body.get("CheckoutRequestID") if isinstance(body, dict) else None
        if isinstance(value, str):
            return value
    return None


async def behave(sim: SimulatedDaraja, behaviour: str, delay: float | None) -> None:
    """A slow or hanging Daraja: wait before answering (the prompt is already on the handset)."""
    if behaviour == "slow":
        await asyncio.sleep(sim.settings.slow_seconds if delay is None else delay)
    elif behaviour == "timeout":
        await asyncio.sleep(sim.settings.timeout_seconds if delay is None else delay)


async def json_body(request: web.Request) -> dict[str, Any]:
    # A form-encoded body is reported as a bad BusinessShortCode, as Daraja does.
    if request.content_type != "application/json":
        raise InvalidField("BusinessShortCode")
    raw = await request.read()
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        if _looks_like_form(raw):  # a form body labelled as JSON: Daraja still reads it as a form
            raise InvalidField("BusinessShortCode") from None
        raise InvalidRequestPayload() from None
    if not isinstance(body, dict):
        raise InvalidRequestPayload()
    request[REQUEST_BODY] = body
    return body


def _looks_like_form(raw: bytes) -> bool:
    try:
        pairs = parse_qsl(raw.decode("utf-8"), strict_parsing=True)
    except (ValueError, UnicodeDecodeError):
        return False
    return bool(pairs)


def bearer_token(request: web.Request) -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


async def oauth_generate(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    if request.query.get("grant_type") != "client_credentials":
        raise InvalidGrantType()
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":  # HTTP auth schemes are case-insensitive
        raise InvalidAuthentication()
    try:
        key, sep, secret = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        raise InvalidAuthentication() from None
    if not sep:
        raise InvalidAuthentication()
    token, lifetime = sim.issue_token(key, secret)
    # expires_in is a string on the real wire
    return answer({"access_token": token, "expires_in": str(lifetime)})


async def stk_push(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    sim.check_token(bearer_token(request))
    sim.check_rate()
    prompt = sim.push(await json_body(request))
    await behave(sim, prompt.scenario.push, prompt.scenario.delay)
    log.info("STK push %s to %s for KES %s", prompt.checkout_request_id, prompt.msisdn, prompt.amount)
    return answer({
        "MerchantRequestID": prompt.merchant_request_id,
        "CheckoutRequestID": prompt.checkout_request_id,
        "ResponseCode": "0",
        "ResponseDescription": ACCEPTED,
        "CustomerMessage": ACCEPTED,
    })


async def stk_query(request: web.Request) -> web.Response:
    sim = request.app[SIMULATOR]
    sim.check_token(bearer_token(request))
    sim.check_rate()
    prompt = sim.query(await json_body(request))
    if prompt.scenario.query == "error":
        raise InternalServerError()
    await behave(sim, prompt.scenario.query, prompt.scenario.delay)
    sim.catch_up()
    base = {
        "ResponseCode": "0",
        "ResponseDescription": QUERY_ACCEPTED,
        "MerchantRequestID": prompt.merchant_request_id,
        "CheckoutRequestID": prompt.checkout_request_id,
    }
    if prompt.open:
        if sim.settings.pending_style == "4999":
            return answer({**base, "ResultCode": "4999",
                                      "ResultDesc": "The transaction is still under processing"})
        raise TransactionBeingProcessed(request_id=prompt.checkout_request_id)
    code = prompt.result_code or ""
    return answer({**base, "ResultCode": code, "ResultDesc": query_desc(code, sim.settings.daraja)})
