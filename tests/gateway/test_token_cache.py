"""TokenCache: one OAuth token, refreshed early, one shared refresh for concurrent callers."""

from __future__ import annotations

import asyncio

import pytest

from gateway.daraja.client import TokenCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeFetch:
    """Hands out tok-1, tok-2, … with a fixed lifetime; can be gated or made to fail."""

    def __init__(self, lifetime: int = 3599) -> None:
        self.lifetime = lifetime
        self.calls = 0
        self.gate: asyncio.Event | None = None
        self.error: Exception | None = None

    async def __call__(self) -> tuple[str, int]:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        else:
            await asyncio.sleep(0)
        if self.error is not None:
            raise self.error
        return f"tok-{self.calls}", self.lifetime


async def until(predicate) -> None:
    for _ in range(100):
        if predicate():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never became true")


async def test_first_get_fetches_a_token():
    fetch = FakeFetch()
    cache = TokenCache(fetch, clock=Clock())
    assert await cache.get() == "tok-1"
    assert fetch.calls == 1 and cache.fetches == 1


async def test_cached_token_is_reused_before_refresh_time():
    clock, fetch = Clock(), FakeFetch(lifetime=3599)
    cache = TokenCache(fetch, clock=clock)
    assert await cache.get() == "tok-1"
    clock.now += 3599 - 300 - 0.01  # just before lifetime minus the 300 s margin
    assert await cache.get() == "tok-1"
    assert fetch.calls == 1


async def test_long_lived_token_is_refreshed_300_seconds_before_it_expires():
    clock, fetch = Clock(), FakeFetch(lifetime=3599)
    cache = TokenCache(fetch, clock=clock)
    await cache.get()
    clock.now += 3599 - 300
    assert await cache.get() == "tok-2"
    assert fetch.calls == 2


async def test_short_lived_token_is_refreshed_a_fifth_of_its_lifetime_early():
    clock, fetch = Clock(), FakeFetch(lifetime=100)
    cache = TokenCache(fetch, clock=clock)
    await cache.get()
    clock.now += 79.99
    assert await cache.get() == "tok-1"
    clock.now += 0.01  # 80 s = 100 - 100/5
    assert await cache.get() == "tok-2"


async def test_refreshed_token_is_cached_in_turn():
    clock, fetch = Clock(), FakeFetch(lifetime=100)
    cache = TokenCache(fetch, clock=clock)
    await cache.get()
    clock.now += 80
    await cache.get()
    clock.now += 79
    assert await cache.get() == "tok-2"
    assert fetch.calls == 2


async def test_concurrent_gets_on_a_cold_cache_share_one_fetch():
    fetch = FakeFetch()
    cache = TokenCache(fetch, clock=Clock())
    tokens = await asyncio.gather(*(cache.get() for _ in range(1000)))
    assert set(tokens) == {"tok-1"}
    assert fetch.calls == 1
    assert cache.fetches == 1


async def test_concurrent_gets_on_an_expired_cache_share_one_refresh():
    clock, fetch = Clock(), FakeFetch(lifetime=100)
    cache = TokenCache(fetch, clock=clock)
    await cache.get()
    clock.now += 100
    tokens = await asyncio.gather(*(cache.get() for _ in range(200)))
    assert set(tokens) == {"tok-2"}
    assert fetch.calls == 2


async def test_failing_fetch_propagates_to_every_concurrent_waiter():
    fetch = FakeFetch()
    fetch.error = RuntimeError("daraja down")
    cache = TokenCache(fetch, clock=Clock())
    results = await asyncio.gather(*(cache.get() for _ in range(50)), return_exceptions=True)
    assert len(results) == 50
    assert all(isinstance(r, RuntimeError) and str(r) == "daraja down" for r in results)
    assert fetch.calls == 1


async def test_get_after_a_failed_fetch_tries_again():
    fetch = FakeFetch()
    fetch.error = RuntimeError("daraja down")
    cache = TokenCache(fetch, clock=Clock())
    with pytest.raises(RuntimeError):
        await cache.get()
    fetch.error = None
    assert await cache.get() == "tok-2"
    assert fetch.calls == 2


async def test_failed_refresh_does_not_serve_the_stale_token():
    clock, fetch = Clock(), FakeFetch(lifetime=100)
    cache = TokenCache(fetch, clock=clock)
    await cache.get()
    clock.now += 90
    fetch.error = RuntimeError("daraja down")
    with pytest.raises(RuntimeError):
        await cache.get()


async def test_invalidate_current_token_forces_a_fetch():
    fetch = FakeFetch()
    cache = TokenCache(fetch, clock=Clock())
    token = await cache.get()
    cache.invalidate(token)
    assert await cache.get() == "tok-2"
    assert fetch.calls == 2


async def test_invalidate_of_an_old_token_keeps_the_current_one():
    fetch = FakeFetch()
    cache = TokenCache(fetch, clock=Clock())
    old = await cache.get()
    cache.invalidate(old)
    current = await cache.get()
    cache.invalidate(old)  # a second caller that still held the old token
    assert await cache.get() == current == "tok-2"
    assert fetch.calls == 2


async def test_cancelling_one_waiter_does_not_cancel_the_shared_refresh():
    fetch = FakeFetch()
    fetch.gate = asyncio.Event()
    cache = TokenCache(fetch, clock=Clock())
    first = asyncio.create_task(cache.get())
    second = asyncio.create_task(cache.get())
    await until(lambda: fetch.calls == 1)
    first.cancel()
    await until(first.done)
    assert first.cancelled()
    fetch.gate.set()
    assert await second == "tok-1"
    assert fetch.calls == 1


async def test_refresh_completes_even_when_its_only_waiter_is_cancelled():
    fetch = FakeFetch()
    fetch.gate = asyncio.Event()
    cache = TokenCache(fetch, clock=Clock())
    waiter = asyncio.create_task(cache.get())
    await until(lambda: fetch.calls == 1)
    waiter.cancel()
    await until(waiter.done)
    fetch.gate.set()
    assert await cache.get() == "tok-1"
    assert fetch.calls == 1
