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
connection per checkout and the pay page's poll on each (its headers, as
bench/status_instructions.py --as-browser sends them), then the tracked objects are counted with
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
from bench.open_checkouts import USER_AGENT  # noqa: E402

Connection = tuple[asyncio.StreamReader, asyncio.StreamWriter]
PAGE_HEADERS = {"Origin": "https://shop.example", "Referer": "https://shop.example/pay.html", "User-Agent": USER_AGENT,
                "Accept": "application/json", "Accept-Encoding": "gzip, deflate, br",
                "Accept-Language": "en-GB,en;q=0.9", "Cache-Control": "no-cache", "Pragma": "no-cache",
                "X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https"}


async def exchange(connection: Connection, path: str, body: dict[str, str] | dict[str, object],
                   headers: dict[str, str]) -> object:
    """One POST on a kept connection, its JSON answer."""
    reader, writer = connection
    data = json.dumps(body).encode()
    lines = "".join(f"{name}: {value}\r\n" for name, value in headers.items())
    writer.write(f"POST {path} HTTP/1.1\r\nHost: shop.example\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {len(data)}\r\n{lines}\r\n".encode() + data)
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(int(line.split(b":")[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length"))
    return json.loads(await reader.readexactly(length))


def bare_app() -> web.Application:
    async def status(request: web.Request) -> web.Response:
        body = await request.json()
        return web.json_response({"success": True, "status": "pending",
                                  "checkoutRequestId": str(body.get("checkoutRequestId", ""))})

    app = web.Application()
    app.router.add_post("/stkpush/status", status)
    return app


async def gateway_poll(port: int) -> dict[str, object]:
    """A pending payment's poll body (a push through the gateway's built-in simulator)."""
    connection = await asyncio.open_connection("127.0.0.1", port)
    pushed = await exchange(connection, "/stkpush", {"phone": "0712345678", "amount": 10},
                            {"X-Forwarded-For": "203.0.113.9"})
    connection[1].close()
    assert isinstance(pushed, dict) and pushed.get("success"), pushed
    return {"checkoutRequestId": pushed["checkoutRequestId"], "paymentToken": pushed["paymentToken"]}


async def measure(name: str, app: web.Application, port: int, connections: int, gateway: bool) -> None:
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        poll = await gateway_poll(port) if gateway else {"checkoutRequestId": "ws_CO_0", "paymentToken": "x"}
        opened = [await asyncio.open_connection("127.0.0.1", port) for _ in range(connections + 1)]
        for _ in range(3):  # warm: first calls, caches
            await exchange(opened[0], "/stkpush/status", poll, PAGE_HEADERS)
        await asyncio.sleep(0.2)
        gc.collect()
        gc.disable()
        try:
            before = {id(o) for o in gc.get_objects()}
            for connection in opened[1:]:
                answer = await exchange(connection, "/stkpush/status", poll, PAGE_HEADERS)
                assert isinstance(answer, dict) and answer.get("success"), answer
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
               "LOOKUP_LIMIT_PER_CLIENT": "0", "LOG_LEVEL": "WARNING"}
        await measure("gateway", run.build_app(*run.load(env)), port, args.connections, gateway=True)
        await measure("bare aiohttp handler", bare_app(), free_port(), args.connections, gateway=False)


if __name__ == "__main__":
    asyncio.run(main())
