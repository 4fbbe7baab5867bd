"""What an idle keep-alive connection keeps alive after one status poll: the garbage collector's
tracked objects, the gateway's against a bare aiohttp handler's.

    .venv/bin/python bench/keepalive_objects.py                # 1,000 connections each
    .venv/bin/python bench/keepalive_objects.py --connections 5000

Between two requests on a keep-alive connection, aiohttp's request handler (`RequestHandler.start`)
waits for the next one with the last one's objects still referenced from its frame (the parsed
message with its headers, the payload, the request, the response). At 10,000 open checkouts, each
polling every 3 s on its own connection (bench/open_checkouts.py), that is hundreds of thousands of
objects that live about 3 s: longer than the young generation is meant for, so every collection of
the young or the middle generation that comes walks them (the slowest answers of that benchmark).
This script counts them in this process, with real sockets on 127.0.0.1: the gateway (`run.py`'s
app in simulator mode, a fresh SQLite file, behind a trusted proxy as bench/open_checkouts.py
runs it) and a bare aiohttp app whose handler parses the same body and answers; each gets one
connection per checkout and the pay page's poll on each, as bench/open_checkouts.py sends it (its
own request and client address), then the tracked objects are counted with
the collector off (what the next young collection would walk) and after a full collection (which
stops tracking tuples of atomic values, such as the raw header pairs), and shown by type.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import gc
import json
import sys
import tempfile
from pathlib import Path

from aiohttp import web

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script: bench/ is not a package
import run  # noqa: E402
from bench._common import free_port  # noqa: E402
from bench.open_checkouts import Checkout, push_all, read_response, request_bytes  # noqa: E402


def bare_app() -> web.Application:
    async def status(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"success": True, "status": "pending",
                                  "checkoutRequestId": str(body.get("checkoutRequestId", ""))})

    app = web.Application()
    app.router.add_post("/stkpush/status", status)
    return app


async def poll(checkout: Checkout, host: str, connection: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    """The pay page's poll on a kept connection; its answer must be a 200 that succeeded."""
    reader, writer = connection
    writer.write(request_bytes(host, checkout))
    status, body, _ = await read_response(reader)
    if status != 200 or not json.loads(body).get("success"):
        raise SystemExit(f"a poll was answered {status}: {body[:200]!r}")


async def measure(name: str, app: web.Application, port: int, connections: int, gateway: bool) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    host = f"127.0.0.1:{port}"
    try:
        # One pending payment (a real push through the built-in simulator), polled by every checkout.
        payment_id, token = (await push_all(f"http://{host}", 1, 1))[0] if gateway else ("ws_CO_0", "x")
        checkouts = [Checkout(i, payment_id, token, live=False, polls=True) for i in range(connections + 1)]
        opened = [await asyncio.open_connection("127.0.0.1", port) for _ in checkouts]
        for _ in range(3):  # warm: first calls, caches
            await poll(checkouts[0], host, opened[0])
        await asyncio.sleep(0.2)
        gc.collect()
        gc.disable()
        try:
            before = {id(o) for o in gc.get_objects()}
            for checkout, connection in zip(checkouts[1:], opened[1:], strict=True):
                await poll(checkout, host, connection)
            await asyncio.sleep(0.2)  # every answer written, every connection idle
            kept = [o for o in gc.get_objects() if id(o) not in before]
            by_type = collections.Counter(type(o).__qualname__ for o in kept)
            young = len(kept)
            del kept
        finally:
            gc.enable()
        gc.collect()
        after = sum(1 for o in gc.get_objects() if id(o) not in before)
        print(f"{name}: {young / connections:.1f} tracked objects kept per idle connection after one poll "
              f"({after / connections:.1f} after a full collection)")
        print("  by type: " + ", ".join(f"{kind} {count / connections:.1f}" for kind, count in by_type.most_common(12)))
        for _, writer in opened:
            writer.close()
    finally:
        await runner.cleanup()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--connections", type=int, default=1000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="keepalive-") as work:
        port = free_port()  # (the gateway calls its built-in simulator on its own port)
        env = {"DATABASE_URL": f"sqlite:///{work}/k.sqlite3", "TRUSTED_PROXIES": "127.0.0.1/32", "PORT": str(port),
               "LOG_LEVEL": "WARNING"}
        await measure("gateway", run.build_app(*run.load(env)), port, args.connections, gateway=True)
        await measure("bare aiohttp handler", bare_app(), free_port(), args.connections, gateway=False)


if __name__ == "__main__":
    asyncio.run(main())
