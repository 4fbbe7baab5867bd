"""The client's address behind a trusted proxy: the cached reading of X-Forwarded-For answers
exactly what aiohttp-remotes' own reading does, for good headers and bad, and so do the kept
decisions for every mix of forwarding headers."""

from __future__ import annotations

import itertools

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiohttp_remotes import XForwardedFiltered
from aiohttp_remotes.exceptions import TooManyHeaders
from multidict import CIMultiDict

from gateway.clients import PROXIED_ORIGIN, Handler, TrustedProxies, _forwarded_for

VALUES = ["203.0.113.7", " 203.0.113.7 ", "10.0.0.1, 127.0.0.1", "2001:db8::1", "203.0.113.7,2001:db8::2",
          "", "rubbish", "203.0.113.7, rubbish", "203.0.113.999", "::ffff:1.2.3.4", "1.2.3.4,,5.6.7.8"]


def reading(parser: XForwardedFiltered, headers: CIMultiDict[str]) -> object:
    try:
        return parser.get_forwarded_for(headers)
    except web.HTTPBadRequest as exc:
        return ("400", exc.reason)
    except TooManyHeaders as exc:
        return ("too many", str(exc))


@pytest.mark.parametrize("value", VALUES)
def test_the_cached_reading_of_x_forwarded_for_is_the_librarys(value):
    ours, theirs = TrustedProxies(("127.0.0.1/32",)), XForwardedFiltered({"127.0.0.1/32"})
    headers = CIMultiDict({"X-Forwarded-For": value})
    hits = _forwarded_for.cache_info().hits
    for _ in range(2):  # the second time from the cache
        assert reading(ours, headers) == reading(theirs, headers)
    assert _forwarded_for.cache_info().hits > hits


def test_no_header_or_several_headers_are_read_as_the_library_reads_them():
    ours, theirs = TrustedProxies(("127.0.0.1/32",)), XForwardedFiltered({"127.0.0.1/32"})
    several = CIMultiDict([("X-Forwarded-For", "203.0.113.7"), ("X-Forwarded-For", "198.51.100.1")])
    for headers in (CIMultiDict(), several):
        assert reading(ours, headers) == reading(theirs, headers)
    assert reading(ours, several)[0] == "too many"  # type: ignore[index]


# Forwarding headers a proxy may send (a list: the header sent several times), and the Host asked at.
FORWARDED_FOR = [None, "203.0.113.7", "203.0.113.7, 127.0.0.1", "127.0.0.1", "rubbish", ["198.51.100.1", "203.0.113.7"]]
FORWARDED_PROTO = [None, "https", "https, http", ["https", "http"]]
FORWARDED_HOST = [None, "shop.example", "a.example, b.example"]
HOSTS = ["gateway.local", "other.local"]


def headers_of(forwarded_for: object, proto: object, host: object, asked_at: str) -> CIMultiDict[str]:
    headers = CIMultiDict({"Host": asked_at})
    for name, value in (("X-Forwarded-For", forwarded_for), ("X-Forwarded-Proto", proto), ("X-Forwarded-Host", host)):
        for one in ([] if value is None else value if isinstance(value, list) else [value]):
            headers.add(name, one)
    return headers


async def serve(middleware: object) -> TestClient:  # type: ignore[type-arg]
    async def seen(request: web.Request) -> web.Response:
        return web.json_response({"remote": request.remote, "scheme": request.scheme, "host": request.host})

    @web.middleware
    async def origin(request: web.Request, handler: Handler) -> web.StreamResponse:
        response = await handler(request)
        response.headers["X-Seen-Origin"] = request.get(PROXIED_ORIGIN) or ""
        return response

    app = web.Application(middlewares=[origin, middleware])  # type: ignore[list-item]
    app.router.add_get("/", seen)
    client = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


async def answer(client: TestClient, headers: CIMultiDict[str]) -> tuple[int, object, str]:  # type: ignore[type-arg]
    async with client.get("/", headers=headers) as response:
        body = await response.json() if response.status == 200 else await response.text()
        return response.status, body, response.headers.get("X-Seen-Origin", "")


async def test_the_kept_decisions_are_the_librarys_for_every_mix_of_forwarding_headers():
    # The first request with given forwarding headers is decided by aiohttp-remotes; the ones after
    # it reuse that decision: each must be what the library alone answers, Host asked at included.
    ours, theirs = await serve(TrustedProxies(("127.0.0.1/32",)).middleware), \
        await serve(XForwardedFiltered({"127.0.0.1/32"}).middleware)
    try:
        for forwarded_for, proto, host in itertools.product(FORWARDED_FOR, FORWARDED_PROTO, FORWARDED_HOST):
            for asked_at in HOSTS * 2:  # each Host twice: decided, then kept
                headers = headers_of(forwarded_for, proto, host, asked_at)
                status, seen, origin = await answer(ours, headers)
                expected_status, expected, _ = await answer(theirs, headers)
                assert (status, seen) == (expected_status, expected), (forwarded_for, proto, host, asked_at)
                if status == 200:
                    assert origin == f"{seen['scheme']}://{seen['host']}"  # type: ignore[index]
    finally:
        await ours.close()
        await theirs.close()


async def test_a_peer_that_is_not_a_trusted_proxy_is_not_believed_even_with_a_kept_decision():
    proxies = TrustedProxies(("127.0.0.1/32",))
    client = await serve(proxies.middleware)
    try:
        headers = headers_of("203.0.113.7", "https", None, "gateway.local")
        assert (await answer(client, headers))[1] == {"remote": "203.0.113.7", "scheme": "https",
                                                      "host": "gateway.local"}
        proxies._peers = ("10.9.9.0/24",)  # the same headers, now from a peer that is not the proxy
        assert (await answer(client, headers))[1] == {"remote": "127.0.0.1", "scheme": "http",
                                                      "host": "gateway.local"}
    finally:
        await client.close()


async def test_the_kept_decisions_are_bounded(monkeypatch):
    monkeypatch.setattr("gateway.clients.DECISIONS_KEPT", 5)
    proxies = TrustedProxies(("127.0.0.1/32",))
    client = await serve(proxies.middleware)
    try:
        for n in range(12):
            assert (await answer(client, headers_of(f"203.0.113.{n}", None, None, "g.local")))[1]["remote"] \
                == f"203.0.113.{n}"  # type: ignore[index]
            assert len(proxies._decided) <= 5
    finally:
        await client.close()


async def test_long_forwarding_headers_are_decided_by_the_library_every_time_and_never_kept():
    # A client behind the proxy can send X-Forwarded-For itself (the proxy appends to it): kept, 8-KB
    # headers of valid addresses would fill the memory 16,384 at a time.
    proxies = TrustedProxies(("127.0.0.1/32",))
    ours, theirs = await serve(proxies.middleware), await serve(XForwardedFiltered({"127.0.0.1/32"}).middleware)
    try:
        cached = _forwarded_for.cache_info().currsize
        for n in range(3):
            long = ", ".join(f"198.51.100.{i}" for i in range(100)) + f", 203.0.113.{n}"
            for host in (None, "shop.example, " + "x" * 300):
                headers = headers_of(long, "https", host, "gateway.local")
                assert (await answer(ours, headers))[:2] == (await answer(theirs, headers))[:2]
        assert proxies._decided == {}
        assert _forwarded_for.cache_info().currsize == cached
        short = headers_of("203.0.113.9", "https", None, "gateway.local")
        await answer(ours, short)
        assert len(proxies._decided) == 1  # (short ones are kept)
    finally:
        await ours.close()
        await theirs.close()
