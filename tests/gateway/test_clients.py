"""The client's address behind a trusted proxy: the cached reading of X-Forwarded-For answers
exactly what aiohttp-remotes' own reading does, for good headers and bad."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp_remotes import XForwardedFiltered
from aiohttp_remotes.exceptions import TooManyHeaders
from multidict import CIMultiDict

from gateway.clients import TrustedProxies, _forwarded_for

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
