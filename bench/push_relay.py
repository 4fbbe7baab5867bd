"""The least any gateway's push must do, as a server for bench/simulator_push.py to measure: a bare
aiohttp handler that reads the shop's JSON, sends Daraja the STK push over HTTP (aiohttp's client,
one kept session, the OAuth token fetched once, at the first push), reads Daraja's JSON answer and answers
the shop's. No validation beyond the two fields, no database, no limits, no logging, no
middlewares: a floor under the gateway's push, not a gateway (it keeps nothing it is told, so a
callback would find no payment).

    .venv/bin/python bench/push_relay.py --port N                      # the simulator in this process
    .venv/bin/python bench/push_relay.py --port N --daraja http://127.0.0.1:M   # a standalone simulator

With no --daraja the simulator is mounted in this process as `python run.py` mounts it in
simulator mode (Daraja's paths under /daraja, its settings from the environment), so the floor
does the built-in gateway's HTTP round trip on one event loop, as the gateway does.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench.simulator_push import DEMO_KEY, DEMO_SECRET, PASSKEY, SHORTCODE  # noqa: E402
from run import prepare_to_serve  # noqa: E402  (the garbage collector set and paced as the gateway's)

SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)


def make_app(daraja: str | None, port: int) -> web.Application:
    app = web.Application()
    if daraja is None:
        from simulator.app import mount_simulator
        from simulator.settings import load_simulator_settings

        mount_simulator(app, load_simulator_settings(dict(os.environ)))
        daraja = f"http://127.0.0.1:{port}/daraja"
    push_url = f"{daraja}/mpesa/stkpush/v1/processrequest"
    basic = "Basic " + base64.b64encode(f"{DEMO_KEY}:{DEMO_SECRET}".encode()).decode()
    bearer: list[str] = []  # the token, once fetched

    async def client(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=100, limit_per_host=50)  # as the gateway's
        async with aiohttp.ClientSession(connector=connector) as session:
            app[SESSION] = session
            yield

    async def token(session: aiohttp.ClientSession) -> None:
        # At the first push, not at start: a built-in simulator answers on this very port.
        async with session.get(f"{daraja}/oauth/v1/generate", params={"grant_type": "client_credentials"},
                               headers={"Authorization": basic}) as answer:
            bearer.append("Bearer " + (await answer.json())["access_token"])

    async def stk_push(request: web.Request) -> web.Response:
        body = await request.json()
        phone, amount = str(body["phone"]), int(body["amount"])
        msisdn = "254" + phone[1:]
        timestamp = datetime.now().strftime("%Y%m%d%H%M%S")
        password = base64.b64encode(f"{SHORTCODE}{PASSKEY}{timestamp}".encode()).decode()
        push = {"BusinessShortCode": SHORTCODE, "Password": password, "Timestamp": timestamp,
                "TransactionType": "CustomerPayBillOnline", "Amount": amount, "PartyA": msisdn,
                "PartyB": SHORTCODE, "PhoneNumber": msisdn, "CallBackURL": "http://127.0.0.1:9/callback",
                "AccountReference": "Order1", "TransactionDesc": "Payment"}
        session = request.app[SESSION]
        if not bearer:
            await token(session)
        async with session.post(push_url, json=push, headers={"Authorization": bearer[0]}) as answer:
            accepted = await answer.json()
        if answer.status != 200 or accepted.get("ResponseCode") != "0":
            return web.json_response({"success": False, "message": json.dumps(accepted)[:200]}, status=502)
        return web.json_response({"success": True, "checkoutRequestId": accepted["CheckoutRequestID"],
                                  "message": "STK push sent successfully"})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.cleanup_ctx.append(client)
    app.router.add_post("/stkpush", stk_push)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--daraja", help="a standalone simulator's base URL (default: the simulator in this process)")
    args = parser.parse_args()
    app = prepare_to_serve(make_app(args.daraja, args.port))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
