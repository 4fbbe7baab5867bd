"""The simulator's published contract: an OpenAPI 3.1 document of Daraja's paths it serves and of its
control API, at `/simulator/openapi.json`.

Daraja's paths are at the root standalone (`run.py simulator`) and under `/daraja` when mounted
beside the gateway: those paths carry a `servers` entry saying so (`document(daraja_prefix)`). The
control API is always under `/simulator`. The document names no credential: the demo consumer key
and the sandbox passkey are in the README, not here.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aiohttp import web

JSON = "application/json"
DARAJA_PREFIX: web.AppKey[str] = web.AppKey("daraja_prefix", str)


def ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {JSON: {"schema": schema}}}


def _daraja_error(description: str) -> dict[str, Any]:
    return _json(ref("DarajaError"), description)


def _control_error(description: str) -> dict[str, Any]:
    return _json(ref("ControlError"), description)


def _body(schema: dict[str, Any], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {JSON: {"schema": schema}}}


def _path(name: str, description: str = "") -> dict[str, Any]:
    parameter: dict[str, Any] = {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
    if description:
        parameter["description"] = description
    return parameter


def _query(name: str, description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": schema or {"type": "string"}}


LIMIT = _query("limit", "At most this many, newest first",
               {"type": "string", "pattern": "^0*[1-9][0-9]*$", "maxLength": 9})
PROMPT_ID = _path("checkoutRequestId", "A prompt's CheckoutRequestID")
MSISDN = _path("msisdn", "A Safaricom number like 254708374149")
PROMPT_ANSWERS = {
    "200": _json(ref("Prompt"), "The prompt, settled"),
    "404": _control_error("no such prompt"),
    "409": _control_error("the prompt is already settled"),
}


def daraja_paths() -> dict[str, Any]:
    daraja_refusals = {
        "400": {"description": "Daraja's refusal (`400.002.02 Bad Request - Invalid <Field>`, "
                               "`400.002.05 Invalid Request Payload`)",
                "content": {JSON: {"schema": ref("DarajaError")}}},
        "404": _daraja_error("`404.001.03 Invalid Access Token` (no token, an unknown or expired one)"),
        "429": _json(ref("ApigeeFault"), "Spike arrest (SIMULATOR_SPIKE_ARREST_PER_SECOND), in Apigee's shape "
                                         "(the current profile)"),
        "500": _daraja_error("Daraja's own 500s, as Daraja sends them: `500.001.1001` (wrong credentials, merchant "
                             "does not exist, a transaction already in process for the subscriber), `500.003.02` "
                             "(system busy, spike arrest in the legacy profile), `500.003.03` (quota), "
                             "`500.003.1001` (an injected error)"),
    }
    return {
        "/oauth/v1/generate": {"get": {
            "tags": ["daraja"], "summary": "An OAuth access token (HTTP Basic: consumer key and secret)",
            "security": [{"consumerCredentials": []}],
            "parameters": [{"name": "grant_type", "in": "query", "required": True,
                            "schema": {"const": "client_credentials"}}],
            "responses": {
                "200": _json(ref("AccessToken"), "A bearer token"),
                "400": {"description": "`400.008.01 Invalid Authentication passed`, `400.008.02 Invalid grant type "
                                       "passed`; wrong credentials: an empty body, as Daraja answers",
                        "content": {JSON: {"schema": ref("DarajaError")}}},
            }}},
        "/mpesa/stkpush/v1/processrequest": {"post": {
            "tags": ["daraja"], "summary": "STK push: a payment prompt on the customer's phone",
            "security": [{"accessToken": []}],
            "requestBody": _body(ref("StkPushRequest")),
            "responses": {"200": _json(ref("StkPushAccepted"), "Accepted: the prompt is on its way"),
                          **daraja_refusals}}},
        "/mpesa/stkpushquery/v1/query": {"post": {
            "tags": ["daraja"], "summary": "STK query: the result of a push",
            "security": [{"accessToken": []}],
            "requestBody": _body(ref("StkQueryRequest")),
            "responses": {"200": _json(ref("StkQueryResult"), "The result (ResultCode 4999 for pending in the "
                                                               "current profile)"),
                          **daraja_refusals}}},
    }


def control_paths() -> dict[str, Any]:
    prompts = {"type": "array", "items": ref("Prompt")}
    return {
        "/simulator/api/scenarios": {"get": {
            "tags": ["control"], "summary": "The catalogue of test numbers",
            "responses": {"200": _json({"type": "array", "items": {"type": "object"}}, "The scenarios")}}},
        "/simulator/api/prompts": {"get": {
            "tags": ["control"], "summary": "Prompts, newest first",
            "parameters": [_query("msisdn", "Only this number's"), _query("state", "open or settled"), LIMIT],
            "responses": {"200": _json(prompts, "The prompts"), "400": _control_error("limit is not a number")}}},
        "/simulator/api/prompts/{checkoutRequestId}": {"get": {
            "tags": ["control"], "summary": "One prompt", "parameters": [PROMPT_ID],
            "responses": {"200": _json(ref("Prompt"), "The prompt"), "404": _control_error("no such prompt")}}},
        "/simulator/api/prompts/{checkoutRequestId}/pin": {"post": {
            "tags": ["control"], "summary": "The customer enters a PIN (a wrong one fails with 2001)",
            "parameters": [PROMPT_ID],
            "requestBody": _body({"type": "object", "required": ["pin"], "properties": {"pin": {"type": "string"}}}),
            "responses": {**PROMPT_ANSWERS, "400": _control_error("body must be a JSON object with a string pin")}}},
        "/simulator/api/prompts/{checkoutRequestId}/cancel": {"post": {
            "tags": ["control"], "summary": "The customer cancels (1032)", "parameters": [PROMPT_ID],
            "responses": PROMPT_ANSWERS}},
        "/simulator/api/prompts/{checkoutRequestId}/ignore": {"post": {
            "tags": ["control"], "summary": "The customer never answers: it times out now (1037)",
            "parameters": [PROMPT_ID], "responses": PROMPT_ANSWERS}},
        "/simulator/api/trigger": {"post": {
            "tags": ["control"], "summary": "A prompt straight onto a handset, without OAuth, to test a receiver",
            "requestBody": _body({"type": "object", "required": ["msisdn", "callbackUrl"], "properties": {
                "msisdn": {"type": "string"}, "amount": {"type": "integer", "minimum": 1},
                "callbackUrl": {"type": "string"}, "accountReference": {"type": "string"}}}),
            "responses": {"201": _json(ref("Prompt"), "The prompt"),
                          "400": _control_error("A bad msisdn, amount or callbackUrl"),
                          "409": _control_error("Daraja would refuse it (a prompt already open on that phone)")}}},
        "/simulator/api/journal": {"get": {
            "tags": ["control"], "summary": "Requests received and callbacks sent (secrets masked)",
            "parameters": [_query("kind", "request or callback"), _query("checkoutRequestId", "One payment's"), LIMIT],
            "responses": {"200": _json({"type": "array", "items": {"type": "object"}}, "Journal entries"),
                          "400": _control_error("limit is not a number")}}},
        "/simulator/api/callbacks/{journalId}/resend": {"post": {
            "tags": ["control"], "summary": "Send a callback again, exactly as it was",
            "parameters": [_path("journalId", "The callback's journal id")],
            "responses": {"202": _json({"type": "object", "required": ["checkoutRequestId", "url", "queued"],
                                        "properties": {"checkoutRequestId": {"type": "string"},
                                                       "url": {"type": "string"}, "queued": {"const": True}}},
                                       "Queued"),
                          "404": _control_error("no such callback in the journal")}}},
        "/simulator/api/faults": {
            "get": {"tags": ["control"], "summary": "The injected faults",
                    "responses": {"200": _json(ref("Faults"), "Queued and standing faults")}},
            "post": {"tags": ["control"], "summary": "The next `count` pushes (to `msisdn`, or any) behave so",
                     "requestBody": _body(ref("FaultRequest")),
                     "responses": {"201": _json({"type": "object"}, "The fault"),
                                   "400": _control_error("An unknown field or a bad value")}},
            "delete": {"tags": ["control"], "summary": "Clear every fault",
                       "responses": {"200": _json(ref("Faults"), "None left")}},
        },
        "/simulator/api/subscribers/{msisdn}/faults": {
            "put": {"tags": ["control"], "summary": "Standing faults for one number", "parameters": [MSISDN],
                    "requestBody": _body(ref("Behaviour")),
                    "responses": {"200": _json(ref("Behaviour"), "The number's behaviour"),
                                  "400": _control_error("A bad msisdn, an unknown field or a bad value")}},
            "delete": {"tags": ["control"], "summary": "Lift a number's standing faults", "parameters": [MSISDN],
                       "responses": {"204": {"description": "Lifted"}}},
        },
        "/simulator/api/reset": {"post": {
            "tags": ["control"], "summary": "Forget all prompts, tokens, customers, faults and the journal",
            "responses": {"200": _json({"type": "object", "properties": {"reset": {"const": True}}}, "Done")}}},
        "/simulator/api/clock": {
            "get": {"tags": ["control"], "summary": "The simulator's time",
                    "responses": {"200": _json(ref("Clock"), "Its time")}},
            "post": {"tags": ["control"], "summary": "Move the simulator's time forward",
                     "requestBody": _body({"type": "object", "required": ["advanceSeconds"], "properties": {
                         "advanceSeconds": {"type": "number", "exclusiveMinimum": 0, "maximum": 2592000}}}),
                     "responses": {"200": _json(ref("Clock"), "Its time, moved"),
                                   "400": _control_error("advanceSeconds out of range")}},
        },
        "/simulator/api/tokens/expire": {"post": {
            "tags": ["control"], "summary": "Expire every OAuth token now",
            "responses": {"200": _json({"type": "object", "properties": {"expired": {"type": "integer"}}},
                                       "How many")}}},
        "/simulator/api/subscribers": {"get": {
            "tags": ["control"], "summary": "The simulated customers",
            "responses": {"200": _json({"type": "array", "items": ref("Subscriber")}, "Name and balance")}}},
        "/simulator/api/subscribers/{msisdn}": {"get": {
            "tags": ["control"], "summary": "One simulated customer", "parameters": [MSISDN],
            "responses": {"200": _json(ref("Subscriber"), "Name and balance"),
                          "400": _control_error("msisdn must be a Safaricom number")}}},
        "/simulator/api/events": {"get": {
            "tags": ["control"], "summary": "Server-sent events: `prompts` (the list) after every change",
            "parameters": [_query("msisdn", "Only this number's"), LIMIT],
            "responses": {"200": {"description": "The stream", "content": {"text/event-stream": {
                "schema": {"type": "object", "description": "One server-sent event (its fields, as read from the "
                                                            "stream)", "required": ["event", "data"], "properties": {
                    "event": {"const": "prompts"},
                    "data": {"type": "string", "contentMediaType": JSON, "contentSchema": prompts}}}}}},
                "400": _control_error("A bad msisdn or limit")}}},
        "/simulator/openapi.json": {"get": {
            "tags": ["control"], "summary": "This document",
            "responses": {"200": _json({"type": "object"}, "The OpenAPI document")}}},
    }


def schemas() -> dict[str, Any]:
    text = {"type": "string"}
    return {
        "DarajaError": {"type": "object", "required": ["requestId", "errorCode", "errorMessage"], "properties": {
            "requestId": text, "errorCode": text, "errorMessage": text}},
        "ApigeeFault": {"type": "object", "required": ["fault"], "properties": {"fault": {"type": "object"}}},
        "AccessToken": {"type": "object", "required": ["access_token", "expires_in"], "properties": {
            "access_token": text, "expires_in": {"type": "string", "description": "Seconds, as a string"}}},
        "StkPushRequest": {"type": "object", "required": [
            "BusinessShortCode", "Password", "Timestamp", "TransactionType", "Amount", "PartyA", "PartyB",
            "PhoneNumber", "CallBackURL", "AccountReference", "TransactionDesc"], "properties": {
            "BusinessShortCode": {"type": ["string", "integer"]}, "Password": text, "Timestamp": text,
            "TransactionType": {"enum": ["CustomerPayBillOnline", "CustomerBuyGoodsOnline"]},
            "Amount": {"type": ["string", "integer", "number"]}, "PartyA": {"type": ["string", "integer"]},
            "PartyB": {"type": ["string", "integer"]}, "PhoneNumber": {"type": ["string", "integer"]},
            "CallBackURL": text, "AccountReference": text, "TransactionDesc": text}},
        "StkPushAccepted": {"type": "object", "required": [
            "MerchantRequestID", "CheckoutRequestID", "ResponseCode", "ResponseDescription", "CustomerMessage"],
            "properties": {"MerchantRequestID": text, "CheckoutRequestID": text, "ResponseCode": {"const": "0"},
                           "ResponseDescription": text, "CustomerMessage": text}},
        "StkQueryRequest": {"type": "object", "required": ["BusinessShortCode", "Password", "Timestamp",
                                                           "CheckoutRequestID"], "properties": {
            "BusinessShortCode": {"type": ["string", "integer"]}, "Password": text, "Timestamp": text,
            "CheckoutRequestID": text}},
        "StkQueryResult": {"type": "object", "required": [
            "ResponseCode", "ResponseDescription", "MerchantRequestID", "CheckoutRequestID", "ResultCode",
            "ResultDesc"], "properties": {
            "ResponseCode": text, "ResponseDescription": text, "MerchantRequestID": text, "CheckoutRequestID": text,
            "ResultCode": text, "ResultDesc": text}},
        "ControlError": {"type": "object", "required": ["error"], "properties": {"error": text}},
        "Prompt": {"type": "object", "required": ["checkoutRequestId", "msisdn", "amount", "state"], "properties": {
            "checkoutRequestId": text, "merchantRequestId": text, "msisdn": text, "amount": {"type": "integer"},
            "state": {"enum": ["open", "settled"]}, "resultCode": {"type": ["string", "null"]},
            "resultDesc": {"type": ["string", "null"]}, "receipt": {"type": ["string", "null"]}}},
        "Behaviour": {"type": "object", "description": "Any of outcome, push, query, callback, at, amount_format, "
                                                       "balance_item, callback_delay, delay, balance"},
        "FaultRequest": {"allOf": [ref("Behaviour"), {"type": "object", "properties": {
            "count": {"type": "integer", "minimum": 1, "maximum": 10000}, "msisdn": {"type": ["string", "null"]}}}]},
        "Faults": {"type": "object", "required": ["next", "subscribers"], "properties": {
            "next": {"type": "array", "items": {"type": "object"}}, "subscribers": {"type": "object"}}},
        "Clock": {"type": "object", "required": ["now", "offsetSeconds"], "properties": {
            "now": {"type": "number"}, "offsetSeconds": {"type": "number"}}},
        "Subscriber": {"type": "object", "required": ["msisdn", "name", "balance"], "properties": {
            "msisdn": text, "name": text, "balance": {"type": "integer"}}},
    }


@cache
def document(daraja_prefix: str = "") -> dict[str, Any]:
    """The document; `daraja_prefix` is where Daraja's paths are ("" standalone, "/daraja" mounted)."""
    daraja = daraja_paths()
    if daraja_prefix:
        for item in daraja.values():
            item["servers"] = [{"url": daraja_prefix, "description": "Daraja's paths, mounted beside the gateway"}]
    return {
        "openapi": "3.1.0",
        "info": {"title": "Daraja simulator", "version": "0.1.0", "description": (
            "Safaricom Daraja's OAuth, STK push and STK query, answered as Daraja answers them (errors in Daraja's "
            "envelope), and the simulator's control API (errors as `{\"error\": …}`). Base URL: this server, in "
            "place of https://sandbox.safaricom.co.ke.")},
        "tags": [{"name": "daraja"}, {"name": "control"}],
        "paths": {**daraja, **control_paths()},
        "components": {
            "schemas": schemas(),
            "securitySchemes": {
                "consumerCredentials": {"type": "http", "scheme": "basic",
                                        "description": "The app's consumer key and secret"},
                "accessToken": {"type": "http", "scheme": "bearer", "description": "From /oauth/v1/generate"},
            },
        },
    }


async def openapi_json(request: web.Request) -> web.Response:
    body = json.dumps(document(request.app.get(DARAJA_PREFIX, "")), indent=1)
    return web.Response(text=body, content_type=JSON, headers={"Cache-Control": "public, max-age=300"})
