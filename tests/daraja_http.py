"""Helpers shared by the tests that speak Daraja's wire format (to the simulator, or as the
simulator to the gateway). They import neither part: the Password formula and the constants are
written here from Safaricom's documentation, and tests/contract checks them against Safaricom's
published sample."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import aiohttp

SHORTCODE = "174379"  # Safaricom's sandbox paybill
SANDBOX_PASSKEY = "bfb279f9aa9bdbcf158e97dd71a467cd2e0c893059b10f78e6b72ada1ed2c919"  # published by Safaricom
DEMO_CONSUMER_KEY = "simulator-demo-consumer-key"  # the pair the simulator accepts when none is set
DEMO_CONSUMER_SECRET = "simulator-demo-consumer-secret"


def nairobi_timestamp() -> str:
    return datetime.now(ZoneInfo("Africa/Nairobi")).strftime("%Y%m%d%H%M%S")


def stk_password(shortcode: str, passkey: str, timestamp: str) -> str:
    """base64(BusinessShortCode + Passkey + Timestamp), as Safaricom documents it."""
    return base64.b64encode(f"{shortcode}{passkey}{timestamp}".encode()).decode("ascii")


def stk_push_body(phone: str, callback: str, *, amount: Any = 10, reference: str = "INV-1001",
                  description: str = "Order 1001", **overrides: Any) -> dict[str, Any]:
    """A valid STK push for the sandbox merchant, Password built for a Nairobi timestamp now."""
    ts = nairobi_timestamp()
    body = {
        "BusinessShortCode": SHORTCODE,
        "Password": stk_password(SHORTCODE, SANDBOX_PASSKEY, ts),
        "Timestamp": ts,
        "TransactionType": "CustomerPayBillOnline",
        "Amount": amount,
        "PartyA": phone,
        "PartyB": SHORTCODE,
        "PhoneNumber": phone,
        "CallBackURL": callback,
        "AccountReference": reference,
        "TransactionDesc": description,
    }
    body.update(overrides)
    return body


REQUEST_ID = re.compile(r"[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]+")


def basic(key: str, secret: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:{secret}".encode()).decode()


async def eventually(check: Callable[[], Any], timeout: float = 3.0, what: str = "condition") -> Any:
    """Poll `check` (sync or async) every 20 ms until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.02)


async def assert_daraja_error(resp: Any, status: int, code: str, message: str) -> dict[str, Any]:
    """Daraja's error envelope, exactly: requestId (a request id, or the CheckoutRequestID that the
    query's "being processed" answer echoes), errorCode, errorMessage."""
    assert resp.status == status
    body = await resp.json()
    assert set(body) == {"requestId", "errorCode", "errorMessage"}
    request_id = body["requestId"]
    assert isinstance(request_id, str) and (REQUEST_ID.fullmatch(request_id) or request_id.startswith("ws_CO_"))
    assert {"errorCode": body["errorCode"], "errorMessage": body["errorMessage"]} == {
        "errorCode": code, "errorMessage": message}
    return body


OAUTH = "/oauth/v1/generate"
PUSH = "/mpesa/stkpush/v1/processrequest"
QUERY = "/mpesa/stkpushquery/v1/query"
API = "/simulator/api"

SHORTCODE = "174379"
TILL = "600123"
INTERACTIVE = "254708374149"  # waits for the virtual handset
PAYS = "254700000000"  # pays after the auto-answer delay (balance 500,000)
NOWHERE = "http://127.0.0.1:9/cb"  # nothing listens there


def push_body(phone: str = INTERACTIVE, callback: str = NOWHERE, **overrides: Any) -> dict[str, Any]:
    return stk_push_body(phone, callback, amount=100, reference="INV-1", description="Order 1", **overrides)


class Sim:
    """A started simulator (standalone, or mounted in the gateway under `prefix`) and a client."""

    def __init__(self, client: Any, prefix: str = "") -> None:
        self.client = client
        self.prefix = prefix
        self._token: str | None = None

    async def new_token(self) -> str:
        resp = await self.client.get(self.prefix + OAUTH, params={"grant_type": "client_credentials"},
                                     headers={"Authorization": basic(DEMO_CONSUMER_KEY, DEMO_CONSUMER_SECRET)})
        assert resp.status == 200, await resp.text()
        return (await resp.json())["access_token"]

    async def token(self) -> str:
        if self._token is None:
            self._token = await self.new_token()
        return self._token

    async def post_push(self, phone: str = INTERACTIVE, callback: str = NOWHERE, *, token: str | None = None,
                        timeout: aiohttp.ClientTimeout | None = None, **fields: Any) -> Any:
        headers = {"Authorization": f"Bearer {token if token is not None else await self.token()}"}
        extra = {"timeout": timeout} if timeout is not None else {}
        return await self.client.post(self.prefix + PUSH, json=push_body(phone, callback, **fields),
                                      headers=headers, **extra)

    async def push(self, phone: str = INTERACTIVE, callback: str = NOWHERE, **fields: Any) -> str:
        resp = await self.post_push(phone, callback, **fields)
        assert resp.status == 200, await resp.text()
        return (await resp.json())["CheckoutRequestID"]

    async def query(self, checkout_request_id: str, *, token: str | None = None) -> Any:
        ts = nairobi_timestamp()
        body = {"BusinessShortCode": SHORTCODE, "Password": stk_password(SHORTCODE, SANDBOX_PASSKEY, ts),
                "Timestamp": ts, "CheckoutRequestID": checkout_request_id}
        headers = {"Authorization": f"Bearer {token if token is not None else await self.token()}"}
        return await self.client.post(self.prefix + QUERY, json=body, headers=headers)

    async def api(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None,
                  params: dict[str, str] | None = None) -> tuple[int, Any]:
        kwargs: dict[str, Any] = {"params": params} if params else {}
        if raw is not None:
            kwargs["data"] = raw
            kwargs["headers"] = {"Content-Type": "application/json"}
        elif body is not None:
            kwargs["json"] = body
        resp = await self.client.request(method, API + path, **kwargs)
        text = await resp.text()
        try:
            return resp.status, (json.loads(text) if text else None)
        except ValueError:
            return resp.status, text

    async def prompt(self, checkout_request_id: str) -> dict[str, Any]:
        status, body = await self.api("GET", f"/prompts/{checkout_request_id}")
        assert status == 200, body
        return body

    async def prompts(self, msisdn: str | None = None, state: str | None = None) -> list[dict[str, Any]]:
        params = {k: v for k, v in (("msisdn", msisdn), ("state", state)) if v}
        status, body = await self.api("GET", "/prompts", params=params)
        assert status == 200
        return body

    async def journal(self, **params: str) -> list[dict[str, Any]]:
        status, body = await self.api("GET", "/journal", params=params)
        assert status == 200, body
        return body

    async def wait_settled(self, checkout_request_id: str, timeout: float = 3.0) -> dict[str, Any]:
        async def settled() -> dict[str, Any] | None:
            prompt = await self.prompt(checkout_request_id)
            return prompt if prompt["state"] == "settled" else None
        return await eventually(settled, timeout, f"{checkout_request_id} settled")

    async def wait_callbacks(self, checkout_request_id: str, count: int = 1, timeout: float = 3.0) -> dict[str, Any]:
        async def recorded() -> dict[str, Any] | None:
            prompt = await self.prompt(checkout_request_id)
            return prompt if len(prompt["callbacks"]) >= count else None
        return await eventually(recorded, timeout, f"{count} callback attempt(s) recorded")


def stk(body: dict[str, Any]) -> dict[str, Any]:
    return body["Body"]["stkCallback"]


def items(body: dict[str, Any]) -> dict[str, Any]:
    return {i["Name"]: i.get("Value", "<no Value>") for i in stk(body)["CallbackMetadata"]["Item"]}
