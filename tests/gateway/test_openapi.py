"""The gateway's published contract (gateway/openapi.py): a valid OpenAPI 3.1 document, in step with
the app's routes, true of real answers, naming no secret; and /docs rendering it from local files."""

from __future__ import annotations

import json
import re
from typing import Any

import jsonschema
import pytest
from aiohttp import web
from openapi_spec_validator import validate
from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from gateway.openapi import document
from run import build_app, load
from tests.conftest import Running, app_env

SHOP_KEY = "openapi-tests-shop-key-0123456789abcdef"
ADMIN = "openapi-tests-admin-token-0123456789"
SECRETS = {"SHOP_API_KEY": SHOP_KEY, "ADMIN_TOKEN": ADMIN,
           "CALLBACK_URL": "http://127.0.0.1:3001/mpesa/callback/openapi-secret-path-5f0c8a8e"}
DOC_URI = "urn:gateway-openapi"
# Routes of the built app that are not the gateway's public API: the operator's pages, the shop's
# pages, /docs' own files (Swagger UI's), and the simulator mounted in simulator mode.
NOT_API = re.compile(r"^/admin(/|$)|^/$|^/pay\.html$|^/confirmation\.html$|^/docs/assets/|^/(simulator|daraja)(/|$)")
IGNORED_METHODS = {"HEAD", "OPTIONS", "*"}


def routes_of(app: web.Application) -> set[tuple[str, str]]:
    """(method, path) of the app's own routes, in OpenAPI's form ({name}); static files and mounted
    sub-applications (prefixed resources) left out."""
    found = set()
    for route in app.router.routes():
        resource = route.resource
        if resource is None or "prefix" in resource.get_info() or route.method in IGNORED_METHODS:
            continue
        found.add((route.method, resource.canonical))
    return found


def documented(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item
            if method in ("get", "post", "put", "delete", "patch")}


def openapi_form(path: str) -> str:
    """aiohttp's {checkout_request_id} and {order_id} are the document's {checkoutRequestId}, {orderId}."""
    return re.sub(r"\{(\w+)\}", lambda m: "{" + re.sub(r"_(\w)", lambda c: c.group(1).upper(), m.group(1)) + "}",
                  path)


def test_the_document_is_valid_openapi_3_1() -> None:
    doc = document()
    assert doc["openapi"] == "3.1.0"
    validate(doc)


def test_the_validator_refuses_a_broken_document() -> None:
    """The check above can fail: a response without its description is not OpenAPI."""
    broken = json.loads(json.dumps(document()))
    del broken["paths"]["/health"]["get"]["responses"]["200"]["description"]
    with pytest.raises(OpenAPIValidationError):
        validate(broken)


def test_every_public_route_is_documented_and_every_documented_operation_is_a_route(tmp_path: Any) -> None:
    settings, simulator = load(app_env(tmp_path, **SECRETS))
    app = build_app(settings, simulator)
    routes = {(method, openapi_form(path)) for method, path in routes_of(app)
              if path != settings.callback_path and not NOT_API.search(path)}
    assert ("POST", settings.callback_path) in routes_of(app)  # (the exclusion above is of a real route)
    assert routes == documented(document())
    assert len(routes) >= 13


def test_the_document_names_no_secret_nor_the_callback_path(tmp_path: Any) -> None:
    settings, _ = load(app_env(tmp_path, **SECRETS))
    text = json.dumps(document())
    for secret in (settings.shop_api_key, settings.admin_token, settings.consumer_key, settings.consumer_secret,
                   settings.passkey, settings.callback_path, settings.callback_url):
        assert secret and secret not in text
    assert "/admin" not in text and "callback" not in json.dumps(list(document()["paths"]))


# -- real answers against the document --------------------------------------------------------

def _pointer(*parts: str) -> str:
    return "/".join(p.replace("~", "~0").replace("/", "~1") for p in parts)


def check_answer(path: str, method: str, status: int, body: Any, headers: Any = None) -> None:
    """Raise unless `status` is documented for the operation, with a JSON body its schema accepts
    and (given the answer's `headers`) the headers the document names for it."""
    doc = document()
    responses = doc["paths"][path][method]["responses"]
    assert str(status) in responses, f"{method.upper()} {path} answered {status}, not in the document"
    answer = responses[str(status)]
    if "content" in answer:
        pointer = _pointer("paths", path, method, "responses", str(status), "content", "application/json",
                           "schema")
        registry: Registry[Any] = Registry().with_resource(DOC_URI, Resource(doc, DRAFT202012))
        jsonschema.Draft202012Validator({"$ref": f"{DOC_URI}#/{pointer}"}, registry=registry).validate(body)
    for name, header in answer.get("headers", {}).items() if headers is not None else ():
        header = doc["components"]["headers"][header["$ref"].rsplit("/", 1)[1]] if "$ref" in header else header
        if header.get("required"):
            assert name in headers, f"{status} without {name}"
            jsonschema.validate(headers[name], header["schema"])


async def answer(running: Running, method: str, url: str, doc_path: str, **kwargs: Any) -> tuple[int, Any]:
    resp = await running.client.request(method, url, **kwargs)
    assert resp.content_type == "application/json", await resp.text()
    body = await resp.json()
    check_answer(doc_path, method.lower(), resp.status, body, resp.headers)
    return resp.status, body


def test_the_answer_check_can_fail() -> None:
    with pytest.raises(jsonschema.ValidationError):
        check_answer("/stkpush", "post", 200, {"success": True, "message": "STK push sent successfully"})
    with pytest.raises(jsonschema.ValidationError):
        check_answer("/stkpush", "post", 400, {"success": True, "message": "Invalid phone number format"})
    with pytest.raises(AssertionError):
        check_answer("/health", "get", 404, {"success": False, "message": "Not found"})
    with pytest.raises(AssertionError):  # every answer carries its request id
        check_answer("/health", "get", 200, {"status": "ok", "timestamp": "2026-12-01T00:00:00.000Z",
                                             "service": "Demo Shop M-Pesa Payment Server", "mode": "simulator",
                                             "database": "ok"}, {})
    with pytest.raises(AssertionError):  # a 429 must say when to come back
        check_answer("/stkpush/status", "post", 429, {"success": False, "message": "Too many"}, {})
    with pytest.raises(jsonschema.ValidationError):  # in seconds
        check_answer("/stkpush/status", "post", 429, {"success": False, "message": "Too many"},
                     {"Retry-After": "soon"})


async def test_payment_answers_match_the_document(start_app: Any) -> None:
    running = await start_app(PUSH_LIMIT_PER_PHONE="1", **SECRETS)
    status, pushed = await answer(running, "POST", "/stkpush", "/stkpush", json={"phone": "0700000000", "amount": 10})
    assert status == 200
    status, body = await answer(running, "POST", "/stkpush", "/stkpush", json={"phone": "0700000000", "amount": 10})
    assert status == 429 and "phone" in body["message"]
    status, body = await answer(running, "POST", "/stkpush", "/stkpush", json={"phone": "12345", "amount": 10})
    assert (status, body["field"]) == (400, "phone")
    status, _ = await answer(running, "POST", "/stkpush", "/stkpush", data=b"phone=0700000000",
                             headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415
    status, _ = await answer(running, "POST", "/stkpush/status", "/stkpush/status",
                             json={"checkoutRequestId": "ws_CO_000000000000000000000000"})
    assert status == 404
    for with_token in (False, True):
        query = {"checkoutRequestId": pushed["checkoutRequestId"]}
        if with_token:
            query["paymentToken"] = pushed["paymentToken"]
        status, body = await answer(running, "POST", "/stkpush/status", "/stkpush/status", json=query)
        assert status == 200 and ("amount" in body) is with_token
    completed = await running.wait_status(pushed["checkoutRequestId"], "completed")
    check_answer("/stkpush/status", "post", 200, {k: v for k, v in completed.items() if k != "http"})
    status, body = await answer(running, "GET", "/health", "/health")
    assert status == 200 and body["database"] == "ok"


async def test_lookup_limit_answers_match_the_document(start_app: Any) -> None:
    running = await start_app(LOOKUP_LIMIT_PER_CLIENT="2", **SECRETS)
    statuses = []
    for n in range(4):
        status, _ = await answer(running, "POST", "/stkpush/status", "/stkpush/status",
                                 json={"checkoutRequestId": f"ws_CO_unknown_{n}"})
        statuses.append(status)
    assert statuses[:2] == [404, 404] and statuses[-1] == 429


async def test_order_answers_match_the_document(start_app: Any) -> None:
    running = await start_app(**SECRETS)
    auth = {"Authorization": f"Bearer {SHOP_KEY}"}
    status, _ = await answer(running, "POST", "/orders", "/orders", json={"amount": 10, "reference": "X"})
    assert status == 401
    status, body = await answer(running, "POST", "/orders", "/orders", headers=auth,
                                json={"items": [{"name": "Kitenge", "quantity": 0, "unitPrice": 5}],
                                      "reference": "INV-1"})
    assert (status, body["field"]) == (400, "items[0].quantity")
    status, order = await answer(running, "POST", "/orders", "/orders", headers={**auth, "Idempotency-Key": "k-1"},
                                 json={"items": [{"name": "Kitenge", "quantity": 2, "unitPrice": 5}],
                                       "reference": "INV-1", "metadata": {"customerId": 77}})
    assert status == 201
    order_id = order["orderId"]
    path = f"/checkout/{order_id}"
    status, _ = await answer(running, "GET", path, "/checkout/{orderId}")
    assert status == 200
    status, body = await answer(running, "POST", f"{path}/status", "/checkout/{orderId}/status")
    assert status == 200 and body["status"] == "none"
    status, pushed = await answer(running, "POST", "/stkpush", "/stkpush", json={"orderId": order_id,
                                                                                  "phone": "0700000000"})
    assert status == 200
    status, body = await answer(running, "POST", "/stkpush", "/stkpush", json={"orderId": order_id,
                                                                                "phone": "0700000000"})
    assert status == 409
    await running.wait_status(pushed["checkoutRequestId"], "completed")
    status, body = await answer(running, "POST", f"{path}/status", "/checkout/{orderId}/status")
    assert status == 200 and body["status"] == "completed" and body["orderStatus"] == "paid"
    status, body = await answer(running, "GET", path, "/checkout/{orderId}")
    assert body["payment"]["status"] == "completed"
    status, body = await answer(running, "GET", f"/orders/{order_id}", "/orders/{orderId}", headers=auth)
    assert status == 200 and body["status"] == "paid" and len(body["payments"]) == 1
    status, _ = await answer(running, "GET", "/orders/ord_0000000000000000000000", "/orders/{orderId}", headers=auth)
    assert status == 404
    status, _ = await answer(running, "GET", "/checkout/ord_0000000000000000000000", "/checkout/{orderId}")
    assert status == 404
    status, catalogue = await answer(running, "GET", "/catalogue", "/catalogue")
    assert status == 200
    item = catalogue["items"][0]["id"]
    status, _ = await answer(running, "POST", "/catalogue/orders", "/catalogue/orders",
                             json={"items": [{"id": item, "quantity": 1}]})
    assert status == 201
    status, _ = await answer(running, "POST", "/catalogue/orders", "/catalogue/orders",
                             json={"items": [{"id": item, "quantity": 1, "unitPrice": 1}]})
    assert status == 400
    resp = await running.client.post("/orders", headers={**auth, "Idempotency-Key": "k-1"},
                                     json={"items": [{"name": "Kitenge", "quantity": 2, "unitPrice": 5}],
                                           "reference": "INV-1", "metadata": {"customerId": 77}})
    assert resp.status == 201 and resp.headers["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" in document()["paths"]["/orders"]["post"]["responses"]["201"]["headers"]


async def test_openapi_json_is_served_as_json_with_a_cache_policy(start_app: Any) -> None:
    running = await start_app(**SECRETS)
    resp = await running.client.get("/openapi.json")
    assert resp.status == 200 and resp.content_type == "application/json" and resp.charset == "utf-8"
    assert resp.headers["Cache-Control"] == "public, max-age=300"
    assert await resp.json() == document()
    text = await resp.text()
    for secret in (SHOP_KEY, ADMIN, "openapi-secret-path"):
        assert secret not in text
    again = await running.client.get("/openapi.json", headers={"If-None-Match": resp.headers["ETag"]})
    assert again.status == 304 and await again.read() == b""


async def test_docs_is_a_page_of_local_files_only_and_no_inline_script(start_app: Any) -> None:
    running = await start_app(**SECRETS)
    resp = await running.client.get("/docs")
    assert resp.status == 200 and resp.content_type == "text/html"
    assert "default-src 'self'" in resp.headers["Content-Security-Policy"]
    html = await resp.text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts and all("src=" in attributes and not body.strip() for attributes, body in scripts)
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert "docs/assets/init.js" in assets and "docs/assets/swagger-ui-bundle.js" in assets
    kinds = {"js": "text/javascript", "css": "text/css", "png": "image/png", "json": "application/json"}
    for asset in assets:
        assert not re.match(r"^[a-z]+:|^//", asset), asset  # no other host, no scheme
        got = await running.client.get("/" + asset)
        assert got.status == 200, asset
        assert got.content_type == kinds[asset.rsplit(".", 1)[1]], asset
    assert (await running.client.get("/docs/assets/index.html")).status == 404
    assert (await running.client.get("/docs/assets/..%2Fopenapi.py")).status == 404
