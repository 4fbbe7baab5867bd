"""The least any server must do for bench/open_checkouts.py's open checkouts, as a baseline for
that benchmark (`open_checkouts.py --bare`): a bare aiohttp app that answers the pay page's
status poll and live-update stream with the gateway's bodies, and nothing else.

    .venv/bin/python bench/bare_checkouts.py --port N

- `POST /stkpush/status`: parses the JSON body and answers 200 with the gateway's answer for a
  pending payment (the same keys and values, so the same size), the checkoutRequestId echoed;
- `GET /stkpush/{id}/events`: a server-sent-event stream (aiohttp-sse, pinged every 15 s as the
  gateway's) that sends that body once as a `status` event and stays open until the client leaves.

No payment is looked up or checked (any id and token is answered), no database, no client
addresses, limits, security headers, request ids, metrics, logging or middlewares, no reconciler
sending STK queries: a floor under the gateway at that load, not a gateway. The server is run as
the gateway is (`run.py`'s keep-alive time and its garbage collector, set and paced by
`prepare_to_serve`), so what differs is the gateway's own work per request.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aiohttp import web
from aiohttp_sse import sse_response

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
from run import KEEPALIVE_SECONDS, prepare_to_serve  # noqa: E402  (served as the gateway is)


def pending(checkout_request_id: str) -> dict[str, object]:
    """The gateway's answer for a pending payment of 10 shillings (as `POST /stkpush/status` gives it)."""
    return {"success": True, "status": "pending", "message": "Waiting for user to complete payment",
            "checkoutRequestId": checkout_request_id, "amount": 10, "phoneMasked": "2547****5678",
            "accountReference": "Payment", "description": "Payment"}


async def status(request: web.Request) -> web.Response:
    body = await request.json()
    return web.json_response(pending(str(body.get("checkoutRequestId", ""))))


async def events(request: web.Request) -> web.StreamResponse:
    async with sse_response(request, ping_interval=15) as stream:
        await stream.send(json.dumps(pending(request.match_info["id"])), event="status")
        await stream.wait()
    return stream


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


def make_app() -> web.Application:
    app = web.Application()
    app.router.add_post("/stkpush/status", status)
    app.router.add_get("/stkpush/{id}/events", events)
    app.router.add_get("/health", health)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(prepare_to_serve(make_app()), host="127.0.0.1", port=args.port, print=None, access_log=None,
                keepalive_timeout=KEEPALIVE_SECONDS)


if __name__ == "__main__":
    main()
