"""Who is asking: the client's address, for per-client limits, and the origin it asked at.

It is the socket's peer address, unless that peer is a reverse proxy listed in TRUSTED_PROXIES:
then it is the address the proxy put in X-Forwarded-For (aiohttp-remotes reads that header, and the
scheme and host from X-Forwarded-Proto and -Host). A client that talks to the gateway directly
cannot choose its address by sending the header.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Awaitable, Callable

from aiohttp import hdrs, web
from aiohttp_remotes import XForwardedFiltered
from multidict import MultiMapping

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# The origin a proxied request was sent to, as the handlers see it (aiohttp-remotes hands them a
# copy of the request; the answer is prepared with the original, which knows only the proxy's side,
# so the original is told).
PROXIED_ORIGIN = web.RequestKey("proxied_origin", str)


def own_origin(request: web.Request) -> str:
    """The origin this request was sent to (scheme and host, as a trusted proxy tells them): what a
    browser sends as Origin from the gateway's own pages."""
    return request.get(PROXIED_ORIGIN) or f"{request.scheme}://{request.host}"


def client_address(request: web.Request) -> str:
    return request.remote or "unknown"


@functools.lru_cache(maxsize=16)
def _networks(trusted: tuple[str, ...]) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
    return tuple(ipaddress.ip_network(n) for n in trusted)


def peer_trusted(request: web.Request, trusted: tuple[str, ...]) -> bool:
    """Whether the socket's peer (not what any header says) is one of the `trusted` networks."""
    peer = request.transport.get_extra_info("peername") if request.transport else None
    if not peer or not trusted:
        return False
    return _address_trusted(peer[0], trusted)


@functools.lru_cache(maxsize=4096)
def _address_trusted(host: str, trusted: tuple[str, ...]) -> bool:
    """Cached: behind a proxy, every request comes from the same few peers (the proxy's addresses)."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return any(address in network for network in _networks(trusted))


@functools.lru_cache(maxsize=16_384)
def _forwarded_for(value: str) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, ...] | None:
    """One X-Forwarded-For value's addresses, as aiohttp-remotes reads them (None: not addresses).
    Cached: each open checkout polls every few seconds with the same header, and parsing the
    addresses was a tenth of such a poll's work behind a proxy."""
    try:
        return tuple(ipaddress.ip_address(part.strip()) for part in value.split(","))
    except ValueError:
        return None


# The headers aiohttp-remotes' decision is made from.
FORWARDING_HEADERS = (hdrs.X_FORWARDED_FOR, hdrs.X_FORWARDED_PROTO, hdrs.X_FORWARDED_HOST)
# At most this many decisions are kept (then all are dropped): one per distinct set of forwarding headers.
DECISIONS_KEPT = 16_384
# Forwarding headers longer than this are read and decided by the library every time, never kept: a
# proxy chain sends a few addresses, and what is kept must not let clients fill the memory with
# 8-KB headers of valid addresses (16,384 of them).
KEPT_HEADER_LENGTH = 256


class TrustedProxies(XForwardedFiltered):
    """X-Forwarded-For is believed only from a peer in `trusted`; from anyone else it is ignored.

    What aiohttp-remotes decides from a request's forwarding headers (the client's address, scheme
    and host, or to leave the request as it is) is kept by those headers' values: each open checkout
    polls every few seconds with the same ones, and reaching the decision again (the addresses
    checked against the trusted networks, written out again, the scheme and host parsed) was about
    6 % of such a poll's instructions. The library decides the first time; a header it refuses is
    refused every time, by the library."""

    def __init__(self, trusted: tuple[str, ...]) -> None:
        super().__init__(set(trusted))
        self._peers = trusted
        self._decided: dict[tuple[tuple[str, ...], ...], dict[str, str]] = {}

    def get_forwarded_for(self, headers: MultiMapping[str]) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        """aiohttp-remotes' reading of the header (none or several: its own answer), from a cache."""
        values = headers.getall(hdrs.X_FORWARDED_FOR, [])
        if len(values) != 1 or len(values[0]) > KEPT_HEADER_LENGTH:
            return super().get_forwarded_for(headers)
        addresses = _forwarded_for(values[0])
        if addresses is None:
            raise web.HTTPBadRequest(reason=f"Invalid {hdrs.X_FORWARDED_FOR} header")
        return list(addresses)

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        if not peer_trusted(request, self._peers):
            return await handler(request)
        headers = request.headers
        key = tuple(tuple(headers.getall(name, ())) for name in FORWARDING_HEADERS)

        async def as_forwarded(forwarded: web.Request) -> web.StreamResponse:
            request[PROXIED_ORIGIN] = f"{forwarded.scheme}://{forwarded.host}"
            return await handler(forwarded)

        overrides = self._decided.get(key)
        if overrides is not None:
            return await as_forwarded(request.clone(**overrides) if overrides else request)  # type: ignore[arg-type]

        async def deciding(forwarded: web.Request) -> web.StreamResponse:
            self._remember(key, headers, forwarded if forwarded is not request else None)
            return await as_forwarded(forwarded)

        return await super().middleware(request, deciding)

    def _remember(self, key: tuple[tuple[str, ...], ...], headers: MultiMapping[str],
                  forwarded: web.Request | None) -> None:
        """What the library overrode in `forwarded` (None: it left the request as it was)."""
        if any(len(value) > KEPT_HEADER_LENGTH for values in key for value in values):
            return
        overrides: dict[str, str] = {}
        if forwarded is not None:
            overrides["remote"] = str(forwarded.remote)
            if self.get_forwarded_proto(headers):  # (the library's own conditions for overriding them)
                overrides["scheme"] = forwarded.scheme
            if self.get_forwarded_host(headers):
                overrides["host"] = forwarded.host
        if len(self._decided) >= DECISIONS_KEPT:
            self._decided.clear()
        self._decided[key] = overrides

