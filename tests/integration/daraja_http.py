"""Helpers shared by the tests that speak Daraja's wire format to the simulator."""

from __future__ import annotations

import asyncio
import base64
import re
import time
from typing import Any, Callable

from gateway.config import SANDBOX_PASSKEY
from gateway.daraja.wire import nairobi_timestamp, stk_password

SHORTCODE = "174379"


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
