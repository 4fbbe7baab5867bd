"""The gateway's published contract: an OpenAPI 3.1 document of its public API (`GET /openapi.json`),
and Swagger UI rendering it (`GET /docs`), served from this machine (the `swagger-ui-bundle` package)
under the same Content-Security-Policy as every page: its start-up script is a file, not inline.

The document is built here, and only here (tests/gateway/test_openapi.py keeps it in step with the
app's routes and checks real answers against it). It names no secret and no setting's value: not
Daraja's callback path (its path is a secret), nor the operator's pages.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any

from aiohttp import web
from swagger_ui_bundle import swagger_ui_path

from .catalogue import MAX_NAME, MAX_QUANTITY
from .idempotency import HEADER as IDEMPOTENCY_HEADER
from .idempotency import MAX_KEY_LENGTH, REPLAYED_HEADER
from .orders import MAX_DESCRIPTION, MAX_LINES, MAX_REFERENCE

DOCS_DIR = Path(__file__).with_name("docs")
DOCUMENT_CACHE = "public, max-age=300"  # changes only with a new release: a few minutes' staleness at most
ASSET_CACHE = "public, max-age=86400"
# The files of Swagger UI the page loads (the package's own index.html and initializer are not served).
SWAGGER_FILES = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
}

JSON = "application/json"
Schema = dict[str, Any]


def ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: Schema, description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": description, "content": {JSON: {"schema": schema}}}
    if headers:
        answer["headers"] = headers
    return answer


def _failure(description: str, *, retry_after: bool = False, replayed: bool = False, always: bool = False,
             extra_headers: dict[str, Any] | None = None) -> dict[str, Any]:
    """A failure's answer; `retry_after`: it may carry Retry-After (`always`: it always does)."""
    headers: dict[str, Any] = dict(extra_headers or {})
    if retry_after or always:
        headers["Retry-After"] = {"$ref": "#/components/headers/" + ("RetryAfterAlways" if always else "RetryAfter")}
    if replayed:
        headers[REPLAYED_HEADER] = {"$ref": "#/components/headers/IdempotentReplayed"}
    return _json(ref("Failure"), description, headers)


def _sse(description: str, data: Schema) -> dict[str, Any]:
    """A stream of server-sent events; its schema is of one event (its fields, as read from the stream),
    each a `status` event whose data is the JSON `data` schema."""
    return {"description": description,
            "content": {"text/event-stream": {"schema": {
                "type": "object", "required": ["event", "data"], "description": (
                    "One server-sent event: `status`, its data the JSON status body (the /stkpush/status answer, "
                    "schema PaymentStatus, or CheckoutStatus with `status: none`); comments keep the connection "
                    "alive every 15 s."),
                "properties": {"event": {"const": "status"},
                               "data": {"type": "string", "contentMediaType": JSON, "contentSchema": data}}}}}}


BAD_BODY = ("Bad input, with `field` naming it where there is one: body not JSON, not an object, a field named "
            "twice, NaN/Infinity, a field out of its rules")
CROSS_ORIGIN = "Cross-origin request refused: a page on another origin than this site or FRONTEND_URL"
TOO_LARGE = "Request body is too large (MAX_BODY_BYTES, 64 KiB by default)"
NOT_JSON = "Content-Type must be application/json"
DATABASE = "The gateway cannot reach its database just now (Retry-After)"
LOOKUPS = "Too many lookups of ids that do not exist from this client (LOOKUP_LIMIT_PER_CLIENT; Retry-After)"
STREAMS = "Too many live-update streams open from this client (Retry-After)"
REPLAY_NOTE = (f"With an `{IDEMPOTENCY_HEADER}`, a kept answer (any but 429 and 503) is replayed for the same key "
               f"and body with `{REPLAYED_HEADER}: true`.")


def _idempotent_post(summary: str, description: str, body: Schema, answers: dict[str, Any], *,
                     tag: str, security: list[dict[str, list[str]]] | None = None) -> dict[str, Any]:
    operation: dict[str, Any] = {
        "tags": [tag], "summary": summary, "description": f"{description}\n\n{REPLAY_NOTE}",
        "parameters": [{"$ref": "#/components/parameters/IdempotencyKey"}],
        "requestBody": {"required": True, "content": {JSON: {"schema": body}}},
        "responses": answers,
    }
    if security is not None:
        operation["security"] = security
    return operation


def _order_id_parameter() -> dict[str, Any]:
    return {"$ref": "#/components/parameters/OrderId"}


def paths() -> dict[str, Any]:
    replayed = {REPLAYED_HEADER: {"$ref": "#/components/headers/IdempotentReplayed"}}
    api_key: list[dict[str, list[str]]] = [{"shopApiKey": []}]
    return {
        "/stkpush": {"post": _idempotent_post(
            "Send an STK push (a payment prompt) to a phone",
            "For a shop's order (`orderId` and `phone`: the order sets the amount, reference and description), "
            "or for an `amount` the browser sends, when FREE_AMOUNT_PUSHES is on (simulator and sandbox mode).",
            ref("PushRequest"), {
                "200": _json(ref("PushAccepted"), "The push went out; the prompt is on its way to the phone",
                             replayed),
                "400": _failure(BAD_BODY + "; an Idempotency-Key that is not 1 to 255 printable ASCII characters, "
                                "or sent twice; `orderId is required` with FREE_AMOUNT_PUSHES off; an amount that "
                                "is not the order's; a phone or amount M-Pesa refused", replayed=True),
                "403": _failure(CROSS_ORIGIN),
                "404": _failure("Order not found (an `orderId` that is not an order)", replayed=True),
                "409": _failure(
                    "The order is already paid, or a payment for it is waiting on the phone (`orderStatus`, "
                    "`checkoutRequestId`), or its last push's answer was lost (`retryAfterSeconds`, Retry-After); "
                    "a prompt is already open on that phone (`errorCode`); the Idempotency-Key was used with "
                    "another body, or its first request is still at work (Retry-After)",
                    retry_after=True, replayed=True),
                "413": _failure(TOO_LARGE),
                "415": _failure(NOT_JSON),
                "429": _failure("Too many pushes to this phone (PUSH_LIMIT_PER_PHONE) or from this client "
                                "(PUSH_LIMIT_PER_CLIENT), or too many lookups of unknown orders", always=True),
                "502": _failure("M-Pesa refused the request or the credentials (`errorCode`)", replayed=True),
                "503": _failure("M-Pesa is not reachable or busy (Retry-After when busy): no prompt went out; or "
                                "the database is unreachable", retry_after=True),
                "504": _failure("The push went out but M-Pesa's answer was lost: the prompt may still reach the "
                                "phone; check it before trying again", replayed=True),
            }, tag="payments")},
        "/stkpush/status": {"post": {
            "tags": ["payments"], "summary": "A payment's status",
            "description": "The id alone gets the status fields; with the push's `paymentToken` the answer also "
                           "carries `amount`, `phoneMasked`, `accountReference` and `description`.",
            "requestBody": {"required": True, "content": {JSON: {"schema": ref("StatusRequest")}}},
            "responses": {
                "200": _json(ref("PaymentStatus"), "pending, completed or failed (a failed payment has "
                                                   "`success: false`)"),
                "400": _failure(BAD_BODY + "; checkoutRequestId is required"),
                "403": _failure(CROSS_ORIGIN),
                "404": _failure("Transaction not found"),
                "413": _failure(TOO_LARGE),
                "415": _failure(NOT_JSON),
                "429": _failure(LOOKUPS, always=True),
                "503": _failure(DATABASE, always=True),
            }}},
        "/stkpush/{checkoutRequestId}/events": {"get": {
            "tags": ["payments"], "summary": "Live updates of a payment (server-sent events)",
            "description": "A `status` event now and on every change, until the payment is settled or the page's "
                           "polling window is over.",
            "parameters": [
                {"name": "checkoutRequestId", "in": "path", "required": True, "schema": {"type": "string"}},
                {"$ref": "#/components/parameters/PaymentTokenQuery"},
            ],
            "responses": {
                "200": _sse("The stream of `status` events", ref("PaymentStatus")),
                "204": {"description": "The client left before the stream started"},
                "404": _failure("Transaction not found"),
                "429": _failure(LOOKUPS + "; or " + STREAMS, always=True),
                "503": _failure(DATABASE, always=True),
            }}},
        "/health": {"get": {
            "tags": ["service"], "summary": "Is the gateway up, and can it reach its database?",
            "responses": {
                "200": _json(ref("Health"), "Up, with its database"),
                "503": _json(ref("Health"), "Up, without its database (`status: degraded`)"),
            }}},
        "/orders": {"post": _idempotent_post(
            "Create an order (the shop's backend)",
            "The server prices the order (`items` or `amount`); send the customer to `checkoutUrl`.",
            ref("OrderRequest"), {
                "201": _json(ref("Order"), "The order, open", replayed),
                "400": _failure(BAD_BODY + "; a bad or repeated Idempotency-Key", replayed=True),
                "401": _failure("Missing or wrong API key", extra_headers={
                    "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="orders"'}}),
                "403": _failure(CROSS_ORIGIN),
                "409": _failure("The Idempotency-Key was used with another body, or its first request is still at "
                                "work (Retry-After)", retry_after=True),
                "413": _failure(TOO_LARGE),
                "415": _failure(NOT_JSON),
                "503": _failure("Orders need SHOP_API_KEY (the setting is empty); or the database is unreachable",
                                retry_after=True),
            }, tag="orders", security=api_key)},
        "/orders/{orderId}": {"get": {
            "tags": ["orders"], "summary": "An order, its payments and its unconfirmed pushes (the shop's backend)",
            "security": api_key, "parameters": [_order_id_parameter()],
            "responses": {
                "200": _json(ref("OrderDetail"), "The order"),
                "401": _failure("Missing or wrong API key", extra_headers={
                    "WWW-Authenticate": {"schema": {"type": "string"}, "description": 'Bearer realm="orders"'}}),
                "404": _failure("Order not found"),
                "503": _failure("Orders need SHOP_API_KEY; or the database is unreachable", retry_after=True),
            }}},
        "/checkout/{orderId}": {"get": {
            "tags": ["checkout"], "summary": "The order as its checkout page shows it",
            "description": "Public: the orderId (128 random bits) is the capability. No metadata, no payment token.",
            "parameters": [_order_id_parameter()],
            "responses": {
                "200": _json(ref("CheckoutOrder"), "The order, with the payment the page follows (or null)"),
                "404": _failure("Order not found"),
                "429": _failure(LOOKUPS, always=True),
                "503": _failure(DATABASE, always=True),
            }}},
        "/checkout/{orderId}/status": {"post": {
            "tags": ["checkout"], "summary": "The status of the payment the order's checkout follows",
            "description": "No body needed (any body is ignored).",
            "parameters": [_order_id_parameter()],
            "responses": {
                "200": _json(ref("CheckoutStatus"), "That payment's status with details, or `status: none`"),
                "404": _failure("Order not found"),
                "429": _failure(LOOKUPS, always=True),
                "503": _failure(DATABASE, always=True),
            }}},
        "/checkout/{orderId}/events": {"get": {
            "tags": ["checkout"], "summary": "Live updates of the payment the order's checkout follows",
            "description": "As /stkpush/{checkoutRequestId}/events, with details; with no payment yet, one "
                           "`status` event `{\"status\": \"none\", …}` and the end of the stream.",
            "parameters": [_order_id_parameter()],
            "responses": {
                "200": _sse("The stream of `status` events", {"anyOf": [ref("PaymentStatus"), ref("CheckoutStatus")]}),
                "204": {"description": "The client left before the stream started"},
                "404": _failure("Order not found"),
                "429": _failure(LOOKUPS + "; or " + STREAMS, always=True),
                "503": _failure(DATABASE, always=True),
            }}},
        "/catalogue": {"get": {
            "tags": ["catalogue"], "summary": "The demo catalogue (DEMO_CATALOGUE, on in simulator mode)",
            "responses": {
                "200": _json(ref("Catalogue"), "The items, priced on the server"),
                "404": _failure("There is no demo catalogue here (DEMO_CATALOGUE is off)"),
            }}},
        "/catalogue/orders": {"post": _idempotent_post(
            "Order from the demo catalogue (the pay page; no API key)",
            "Item ids and quantities only: names and prices are the catalogue's. Limited per client like pushes.",
            ref("CatalogueOrderRequest"), {
                "201": _json(ref("Order"), "The order, open, with a generated reference", replayed),
                "400": _failure(BAD_BODY + "; a bad or repeated Idempotency-Key", replayed=True),
                "403": _failure(CROSS_ORIGIN),
                "404": _failure("There is no demo catalogue here (DEMO_CATALOGUE is off)"),
                "409": _failure("The Idempotency-Key was used with another body, or its first request is still at "
                                "work (Retry-After)", retry_after=True),
                "413": _failure(TOO_LARGE),
                "415": _failure(NOT_JSON),
                "429": _failure("Too many orders from this client (PUSH_LIMIT_PER_CLIENT)", always=True),
                "503": _failure(DATABASE, always=True),
            }, tag="catalogue")},
        "/openapi.json": {"get": {
            "tags": ["service"], "summary": "This document",
            "responses": {"200": {"description": "The OpenAPI document",
                                  "content": {JSON: {"schema": {"type": "object"}}}}}}},
        "/docs": {"get": {
            "tags": ["service"], "summary": "This document, rendered (Swagger UI, served from here)",
            "responses": {"200": {"description": "The page",
                                  "content": {"text/html": {"schema": {"type": "string"}}}}}}},
    }


def _nullable(kind: str, **more: Any) -> Schema:
    return {"type": [kind, "null"], **more}


def schemas() -> dict[str, Schema]:
    line = {"type": "object", "required": ["name", "quantity", "unitPrice", "total"], "properties": {
        "name": {"type": "string"}, "quantity": {"type": "integer"}, "unitPrice": {"type": "integer"},
        "total": {"type": "integer"}}}
    amount = {"description": "Whole KES from 1 to MPESA_MAX_AMOUNT (150,000 by default): a number, or a string of "
                             "digits; decimals are refused, not rounded",
              "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^\\s*[0-9]{1,15}\\s*$"}]}
    order_fields = {
        "success": {"const": True}, "orderId": {"type": "string", "pattern": "^ord_[A-Za-z0-9_-]{22}$"},
        "amount": {"type": "integer"}, "currency": {"const": "KES"},
        "status": {"enum": ["open", "paid"]}, "reference": {"type": "string"},
        "description": _nullable("string"), "items": {"type": "array", "items": line},
    }
    return {
        "Failure": {"type": "object", "required": ["success", "message"], "properties": {
            "success": {"const": False}, "message": {"type": "string", "description": "For the customer or the shop"},
            "field": {"type": "string", "description": "The input at fault (`phone`, `items[1].quantity`, "
                                                       f"`{IDEMPOTENCY_HEADER}`)"},
            "errorCode": {"type": "string", "description": "Daraja's errorCode"},
            "orderStatus": {"enum": ["open", "paid"]},
            "checkoutRequestId": _nullable("string"),
            "retryAfterSeconds": {"type": "integer"},
            "allowed": {"type": "array", "items": {"type": "string"}, "description": "405: the methods allowed"},
        }},
        "PushRequest": {"type": "object", "properties": {
            "orderId": {"type": "string", "description": "An order's id: the order sets the amount"},
            "phone": {"type": "string", "examples": ["0712345678"], "description": (
                "07XXXXXXXX, 01XXXXXXXX, 2547…, 2541…, +254…; spaces and dashes tolerated")},
            "amount": amount,
            "accountReference": {"type": "string", "description": "Trimmed to 12 characters"},
            "description": {"type": "string", "description": "Trimmed to 13 characters"},
        }, "required": ["phone"]},
        "PushAccepted": {"type": "object", "required": ["success", "checkoutRequestId", "message", "paymentToken"],
                         "properties": {
                             "success": {"const": True}, "checkoutRequestId": {"type": "string"},
                             "message": {"type": "string"},
                             "paymentToken": {"type": "string", "description": (
                                 "Shown once: send it with status polls, live updates and the confirmation "
                                 "page to see the payment's details")}}},
        "StatusRequest": {"type": "object", "required": ["checkoutRequestId"], "properties": {
            "checkoutRequestId": {"type": "string"}, "paymentToken": {"type": "string"}}},
        "PaymentStatus": {"type": "object", "required": ["success", "status", "message", "checkoutRequestId"],
                          "properties": {
                              "success": {"type": "boolean"}, "status": {"enum": ["pending", "completed", "failed"]},
                              "message": {"type": "string"}, "checkoutRequestId": {"type": "string"},
                              "transaction_id": _nullable("string"), "MpesaReceiptNumber": _nullable("string"),
                              "resultCode": _nullable("string"),
                              "amount": {"type": "integer", "description": "With the paymentToken only"},
                              "phoneMasked": {"type": "string", "description": "With the paymentToken only"},
                              "accountReference": {"type": "string", "description": "With the paymentToken only"},
                              "description": {"type": "string", "description": "With the paymentToken only"}}},
        "Health": {"type": "object", "required": ["status", "timestamp", "service", "mode", "database"],
                   "properties": {
                       "status": {"enum": ["ok", "degraded"]}, "timestamp": {"type": "string"},
                       "service": {"type": "string"}, "mode": {"enum": ["simulator", "sandbox", "production"]},
                       "database": {"enum": ["ok", "error"]}}},
        "OrderRequest": {"type": "object", "required": ["reference"], "additionalProperties": False, "properties": {
            "items": {"type": "array", "minItems": 1, "maxItems": MAX_LINES, "items": {
                "type": "object", "required": ["name", "quantity", "unitPrice"], "additionalProperties": False,
                "properties": {"name": {"type": "string", "minLength": 1, "maxLength": MAX_NAME},
                               "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY},
                               "unitPrice": {"type": "integer", "minimum": 1}}}},
            "amount": amount,
            "reference": {"type": "string", "minLength": 1, "maxLength": MAX_REFERENCE},
            "description": {"type": "string", "maxLength": MAX_DESCRIPTION},
            "metadata": {"type": "object", "description": "Yours: up to 4 KiB and 5 levels, kept and returned"},
            "currency": {"const": "KES"},
        }, "description": "`items` or `amount`, not both",
            "oneOf": [{"required": ["items"]}, {"required": ["amount"]}]},
        "Order": {"type": "object", "required": [
            "success", "orderId", "amount", "currency", "status", "reference", "description", "items", "metadata",
            "checkoutUrl", "createdAt", "paidAt", "checkoutRequestId"], "properties": {
            **order_fields, "metadata": _nullable("object"), "checkoutUrl": {"type": "string"},
            "createdAt": {"type": "string"}, "paidAt": _nullable("string"),
            "checkoutRequestId": _nullable("string")}},
        "OrderDetail": {"allOf": [ref("Order"), {"type": "object", "required": ["payments", "unconfirmedPushes"],
                                                 "properties": {
            "payments": {"type": "array", "items": {"type": "object", "required": [
                "checkoutRequestId", "status", "amount", "receipt", "resultCode", "message", "late", "createdAt",
                "settledAt"], "properties": {
                "checkoutRequestId": {"type": "string"}, "status": {"enum": ["pending", "completed", "failed"]},
                "amount": {"type": "integer"}, "receipt": _nullable("string"), "resultCode": _nullable("string"),
                "message": {"type": "string"}, "late": {"type": "boolean"}, "createdAt": {"type": "string"},
                "settledAt": _nullable("string")}}},
            "unconfirmedPushes": {"type": "array", "items": {"type": "object", "properties": {
                "state": {"enum": ["sending", "unknown"]}, "amount": {"type": "integer"},
                "phoneMasked": {"type": "string"}, "message": {"type": "string"}, "createdAt": {"type": "string"}}}},
        }}]},
        "CheckoutOrder": {"type": "object", "required": [
            "success", "orderId", "amount", "currency", "reference", "description", "items", "status", "businessName",
            "payment"], "properties": {
            **order_fields, "businessName": {"type": "string"},
            "payment": {"oneOf": [ref("PaymentStatus"), {"type": "null"}]}}},
        "CheckoutStatus": {"oneOf": [
            {"allOf": [ref("PaymentStatus"), {"type": "object", "required": ["orderId", "orderStatus"]}]},
            {"type": "object", "required": ["success", "status", "orderId", "orderStatus"], "properties": {
                "success": {"const": True}, "status": {"const": "none"}, "message": {"type": "string"}}},
        ], "properties": {"orderId": {"type": "string"}, "orderStatus": {"enum": ["open", "paid"]}}},
        "Catalogue": {"type": "object", "required": ["success", "currency", "maxQuantity", "maxAmount", "items"],
                      "properties": {
                          "success": {"const": True}, "currency": {"const": "KES"},
                          "maxQuantity": {"type": "integer"}, "maxAmount": {"type": "integer"},
                          "items": {"type": "array", "items": {"type": "object", "required": [
                              "id", "name", "unitPrice", "description", "defaultQuantity"], "properties": {
                              "id": {"type": "string"}, "name": {"type": "string"}, "unitPrice": {"type": "integer"},
                              "description": {"type": "string"}, "defaultQuantity": {"type": "integer"}}}}}},
        "CatalogueOrderRequest": {"type": "object", "required": ["items"], "additionalProperties": False,
                                  "properties": {"items": {
                                      "type": "array", "minItems": 1, "maxItems": MAX_LINES, "items": {
                                          "type": "object", "required": ["id", "quantity"],
                                          "additionalProperties": False, "properties": {
                                              "id": {"type": "string"},
                                              "quantity": {"type": "integer", "minimum": 0,
                                                           "maximum": MAX_QUANTITY}}}}}},
    }


def _with_request_ids(all_paths: dict[str, Any]) -> dict[str, Any]:
    """Every answer carries X-Request-Id (gateway/observability.py)."""
    for operations in all_paths.values():
        for operation in operations.values():
            if isinstance(operation, dict) and "responses" in operation:
                for answer in operation["responses"].values():
                    answer.setdefault("headers", {})["X-Request-Id"] = {"$ref": "#/components/headers/RequestId"}
    return all_paths


@cache
def document() -> dict[str, Any]:
    """The OpenAPI 3.1 document of the gateway's public API."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "M-Pesa gateway",
            "version": "0.1.0",
            "description": (
                "STK push payments, the shop's orders and their checkout. Every error is JSON "
                "`{\"success\": false, \"message\": …}`; unknown paths answer 404 and wrong methods 405 in the "
                "same shape. The Daraja callback endpoint and the operator's pages are not part of this contract."),
        },
        "tags": [{"name": n} for n in ("payments", "orders", "checkout", "catalogue", "service")],
        "paths": _with_request_ids(paths()),
        "components": {
            "schemas": schemas(),
            "parameters": {
                "IdempotencyKey": {"name": IDEMPOTENCY_HEADER, "in": "header", "required": False, "description": (
                    "1 to 255 printable ASCII characters, kept 24 hours: the same key and body get the first "
                    "answer again; another body with the key gets 409"),
                    "schema": {"type": "string", "minLength": 1, "maxLength": MAX_KEY_LENGTH}},
                "OrderId": {"name": "orderId", "in": "path", "required": True,
                            "schema": {"type": "string", "examples": ["ord_Jq3v0c1x8PZlq8Xh2Gm4kA"]}},
                "PaymentTokenQuery": {"name": "paymentToken", "in": "query", "required": False,
                                      "description": "The push's paymentToken: the events carry the details",
                                      "schema": {"type": "string"}},
            },
            "headers": {
                "RequestId": {"description": "This request's id, as the gateway's log lines carry it: a trusted "
                              "proxy's (TRUSTED_PROXIES) if it sent a plain one, else 16 hex digits",
                              "required": True, "schema": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"}},
                "RetryAfter": {"description": "Seconds to wait before trying again (on some answers of this status)",
                               "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                "RetryAfterAlways": {"description": "Seconds to wait before trying again", "required": True,
                                     "schema": {"type": "string", "pattern": "^[0-9]+$"}},
                "IdempotentReplayed": {"description": "`true` on an answer replayed for an Idempotency-Key",
                                       "schema": {"const": "true"}},
            },
            "securitySchemes": {
                "shopApiKey": {"type": "http", "scheme": "bearer",
                               "description": "`Authorization: Bearer <SHOP_API_KEY>`, for the shop's backend"},
            },
        },
    }


@cache
def _document_bytes() -> tuple[bytes, str]:
    body = json.dumps(document(), ensure_ascii=False, indent=1).encode("utf-8")
    return body, '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


async def openapi_json(request: web.Request) -> web.Response:
    body, etag = _document_bytes()
    headers = {"Cache-Control": DOCUMENT_CACHE, "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(body=body, content_type=JSON, charset="utf-8", headers=headers)


async def docs_page(request: web.Request) -> web.Response:
    return web.Response(body=(DOCS_DIR / "index.html").read_bytes(), content_type="text/html", charset="utf-8",
                        headers={"Cache-Control": "no-cache"})


async def docs_asset(request: web.Request) -> web.Response:
    """Swagger UI's files (from swagger-ui-bundle) and the page's own start-up script."""
    name = request.match_info["name"]
    if name == "init.js":
        path, kind = DOCS_DIR / "init.js", "text/javascript"
    elif name in SWAGGER_FILES:
        path, kind = Path(str(swagger_ui_path)) / name, SWAGGER_FILES[name]
    else:
        raise web.HTTPNotFound()
    return web.Response(body=path.read_bytes(), content_type=kind, headers={"Cache-Control": ASSET_CACHE})


def install_openapi(app: web.Application) -> None:
    app.router.add_get("/openapi.json", openapi_json)
    app.router.add_get("/docs", docs_page)
    app.router.add_get("/docs/assets/{name}", docs_asset)
