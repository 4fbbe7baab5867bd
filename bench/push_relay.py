"""The least any gateway's push must do, as a server for bench/simulator_push.py to measure: a bare
aiohttp handler that reads the shop's JSON, sends Daraja the STK push over HTTP (aiohttp's client,
one kept session, the OAuth token fetched once, at the first push), reads Daraja's JSON answer and answers
the shop's. No validation beyond the two fields, no database, no limits, no logging, no
middlewares: a floor under the gateway's push, not a gateway (it keeps nothing it is told, so a
callback would find no payment).

With `--durable FILE` it also does the two durable writes the gateway's money safety needs, through
the gateway's own SQLite store (gateway/storage.py, group commit, `synchronous=FULL`): the push
attempt committed before Daraja is called (so that a lost answer's callback can still be matched),
the payment and the attempt's close committed before the shop is answered. Still no checks, no
limits, no logging: the floor under any gateway that keeps those two promises.

    .venv/bin/python bench/push_relay.py --port N                      # the simulator in this process
    .venv/bin/python bench/push_relay.py --port N --daraja http://127.0.0.1:M   # a standalone simulator
    .venv/bin/python bench/push_relay.py --port N --daraja http://127.0.0.1:M --durable /tmp/relay.sqlite3

With no --daraja the simulator is mounted in this process as `python run.py` mounts it in
simulator mode (Daraja's paths under /daraja, its settings from the environment), so the floor
does the built-in gateway's HTTP round trip on one event loop, as the gateway does.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import secrets
import sys
import time
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import aiohttp
from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from bench.simulator_push import DEMO_KEY, DEMO_SECRET, PASSKEY, SHORTCODE  # noqa: E402
from gateway.payments import iso, token_hash  # noqa: E402
from gateway.storage import SqliteTransactionStore, Transaction  # noqa: E402
from run import prepare_to_serve  # noqa: E402  (the garbage collector set and paced as the gateway's)

SESSION: web.AppKey[aiohttp.ClientSession] = web.AppKey("session", aiohttp.ClientSession)
STORE: web.AppKey[SqliteTransactionStore] = web.AppKey("store", SqliteTransactionStore)


def make_app(daraja: str | None, port: int, durable: Path | None = None) -> web.Application:
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
        store = request.app.get(STORE)
        attempt_id = 0
        if store is not None:  # as the gateway: the attempt durable before Daraja is called
            async with store.transaction() as t:
                attempt_id = await t.insert_attempt(msisdn, amount, "Order1", "Payment", time.time())
        async with session.post(push_url, json=push, headers={"Authorization": bearer[0]}) as answer:
            accepted = await answer.json()
        if answer.status != 200 or accepted.get("ResponseCode") != "0":
            return web.json_response({"success": False, "message": json.dumps(accepted)[:200]}, status=502)
        if store is not None:  # the payment, and the attempt closed, durable before the shop hears of it
            now = time.time()
            tx = Transaction(checkout_request_id=accepted["CheckoutRequestID"],
                             merchant_request_id=accepted["MerchantRequestID"], phone=msisdn, amount=amount,
                             account_reference="Order1", description="Payment", next_query_at=now + 20,
                             created_at=iso(now), updated_at=iso(now), token_hash=token_hash(secrets.token_urlsafe(32)))
            async with store.transaction() as t:
                await t.insert_new(tx)
                await t.set_attempt(attempt_id, "accepted", tx.checkout_request_id)
        return web.json_response({"success": True, "checkoutRequestId": accepted["CheckoutRequestID"],
                                  "message": "STK push sent successfully"})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def keep(app: web.Application) -> AsyncIterator[None]:
        assert durable is not None
        store = app[STORE] = SqliteTransactionStore(durable)
        await store.open()
        yield
        await store.close()

    app.cleanup_ctx.append(client)
    if durable is not None:
        app.cleanup_ctx.append(keep)
    app.router.add_post("/stkpush", stk_push)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--daraja", help="a standalone simulator's base URL (default: the simulator in this process)")
    parser.add_argument("--durable", type=Path, metavar="FILE",
                        help="also make the gateway's two durable writes per push, in this SQLite file")
    args = parser.parse_args()
    app = prepare_to_serve(make_app(args.daraja, args.port, args.durable))
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
