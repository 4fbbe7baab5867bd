"""The simulator's published contract (simulator/openapi.py): a valid OpenAPI 3.1 document of Daraja's
paths and the control API, in step with the routes standalone and mounted, true of real answers."""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from openapi_spec_validator import validate
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from run import build_app, load
from simulator.app import create_standalone_app
from simulator.openapi import document
from simulator.settings import DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET, load_simulator_settings
from tests.conftest import app_env

PAGES = re.compile(r"^/simulator/?$|^/simulator/phone(/|$)")
DOC_URI = "urn:simulator-openapi"


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or "prefix" in resource.get_info() or route.method in ("HEAD", "OPTIONS"):
            continue
        found.add((route.method, re.sub(r"\{(\w+)\}", _camel, resource.canonical)))
    return found


def _camel(match: re.Match[str]) -> str:
    return "{" + re.sub(r"_(\w)", lambda c: c.group(1).upper(), match.group(1)) + "}"


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    found = set()
    for path, item in doc["paths"].items():
        prefix = item["servers"][0]["url"] if "servers" in item else ""
        found |= {(method.upper(), prefix + path) for method in item if method in ("get", "post", "put", "delete")}
    return found


@pytest.mark.parametrize("prefix", ["", "/daraja"])
def test_the_document_is_valid_openapi_3_1(prefix: str) -> None:
    assert document(prefix)["openapi"] == "3.1.0"
    validate(document(prefix))


def test_standalone_routes_and_the_document_agree(tmp_path: Any) -> None:
    app = create_standalone_app(load_simulator_settings(app_env(tmp_path)))
    routes = {r for r in routes_of(app) if not PAGES.search(r[1])}
    assert ("POST", "/mpesa/stkpush/v1/processrequest") in routes
    assert routes == documented(document(""))


def test_mounted_routes_and_the_document_agree(tmp_path: Any) -> None:
    settings, simulator = load(app_env(tmp_path))
    app = build_app(settings, simulator)
    routes = {r for r in routes_of(app) if r[1].startswith(("/daraja/", "/simulator/")) and not PAGES.search(r[1])}
    assert ("POST", "/daraja/mpesa/stkpush/v1/processrequest") in routes
    assert routes == documented(document("/daraja"))


def check_answer(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, not in the document"
    if "content" not in responses[str(status)]:
        return
    pointer = "/".join(p.replace("~", "~0").replace("/", "~1") for p in (
        "paths", path, method, "responses", str(status), "content", "application/json", "schema"))
    registry: Registry[Any] = Registry().with_resource(DOC_URI, Resource(doc, DRAFT202012))
    jsonschema.Draft202012Validator({"$ref": f"{DOC_URI}#/{pointer}"}, registry=registry).validate(body)


def test_the_answer_check_can_fail() -> None:
    with pytest.raises(jsonschema.ValidationError):
        check_answer(document(""), "/oauth/v1/generate", "get", 200, {"access_token": "x", "expires_in": 3599})
    with pytest.raises(AssertionError):
        check_answer(document(""), "/simulator/api/reset", "post", 404, {"error": "x"})


async def test_real_answers_match_the_document(tmp_path: Any, aiohttp_client: Any) -> None:
    settings = load_simulator_settings(app_env(tmp_path))
    client = await aiohttp_client(create_standalone_app(settings))
    doc = await (await client.get("/simulator/openapi.json")).json()
    assert doc == json.loads(json.dumps(document("")))

    async def answer(method: str, url: str, path: str, **kwargs: Any) -> tuple[int, Any]:
        resp = await client.request(method, url, **kwargs)
        body = await resp.json() if resp.content_type == "application/json" else None
        check_answer(doc, path, method.lower(), resp.status, body)
        return resp.status, body

    basic = base64.b64encode(f"{DEMO_CONSUMER_KEY}:{DEMO_CONSUMER_SECRET}".encode()).decode()
    status, token = await answer("GET", "/oauth/v1/generate?grant_type=client_credentials", "/oauth/v1/generate",
                                 headers={"Authorization": f"Basic {basic}"})
    assert status == 200
    status, _ = await answer("GET", "/oauth/v1/generate?grant_type=password", "/oauth/v1/generate",
                             headers={"Authorization": f"Basic {basic}"})
    assert status == 400
    push = "/mpesa/stkpush/v1/processrequest"
    status, body = await answer("POST", push, push, json={})
    assert status == 404 and body["errorCode"] == "404.001.03"
    status, body = await answer("POST", push, push, json={"BusinessShortCode": "x"},
                                headers={"Authorization": f"Bearer {token['access_token']}"})
    assert status == 400 and body["errorCode"].startswith("400.002")
    status, _ = await answer("GET", "/simulator/api/prompts/ws_CO_none", "/simulator/api/prompts/{checkoutRequestId}")
    assert status == 404
    status, _ = await answer("GET", "/simulator/api/clock", "/simulator/api/clock")
    assert status == 200
    status, _ = await answer("POST", "/simulator/api/clock", "/simulator/api/clock", json={"advanceSeconds": -1})
    assert status == 400
    status, _ = await answer("GET", "/simulator/api/subscribers/254708374149", "/simulator/api/subscribers/{msisdn}")
    assert status == 200
    status, _ = await answer("GET", "/simulator/api/faults", "/simulator/api/faults")
    assert status == 200


async def test_mounted_document_places_darajas_paths_under_daraja(start_app: Any) -> None:
    running = await start_app()
    resp = await running.client.get("/simulator/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json"
    doc = await resp.json()
    assert doc["paths"]["/oauth/v1/generate"]["servers"] == [
        {"url": "/daraja", "description": "Daraja's paths, mounted beside the gateway"}]
    for secret in (running.settings.consumer_secret, running.settings.passkey, running.settings.callback_path):
        assert secret not in await resp.text()
