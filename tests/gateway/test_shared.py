"""What several processes share through the database (gateway/shared.py): leases, limits counted in
`limit_events`, the OAuth token. Each store here stands for a process; SQLite and PostgreSQL both."""

from __future__ import annotations

import asyncio
import multiprocessing

import pytest

from gateway.shared import Leases, SharedLimiter, SharedTokens, process_name
from tests.gateway.test_storage import make_store, store  # noqa: F401 - fixtures: a store on each database


class Clock:
    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _holder_in_child(queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    queue.put(Leases(lambda: None).holder)  # type: ignore[arg-type,return-value]


def test_forked_workers_hold_leases_under_names_of_their_own():
    """gunicorn forks its workers from one parent: a name made at import would be the same in all of
    them, and each would take the others' leases (two OAuth refreshes at once, two recovery passes)."""
    Leases(lambda: None)  # type: ignore[arg-type,return-value]  # the module is loaded before the fork
    fork = multiprocessing.get_context("fork")
    queue = fork.Queue()
    children = [fork.Process(target=_holder_in_child, args=(queue,)) for _ in range(2)]
    for child in children:
        child.start()
    names = {queue.get(timeout=10) for _ in children}
    for child in children:
        child.join(10)
    assert len(names) == 2 and process_name() not in names, names


async def test_a_lease_has_one_holder_until_it_runs_out_or_is_released(store):  # noqa: F811
    clock = Clock()
    one, other = Leases(lambda: store, clock=clock), Leases(lambda: store, clock=clock)
    assert await one.claim("recovery", "", 15)
    assert not await other.claim("recovery", "", 15)
    assert await one.claim("recovery", "", 15)  # its holder may renew it
    await other.release("recovery", "")  # not its lease: nothing happens
    assert not await other.claim("recovery", "", 15)
    clock.now += 15.5
    assert await other.claim("recovery", "", 15)  # run out: the other takes it
    assert not await one.claim("recovery", "", 15)
    await other.release("recovery", "")
    assert await one.claim("recovery", "", 15)
    assert await other.claim("order-push", "ord_1", 15)  # leases of other names and keys are apart


async def test_a_shared_limit_counts_every_process_and_its_window(make_store):  # noqa: F811
    first, second = make_store(), make_store()
    await first.open()
    await second.open()
    try:
        clock = Clock()
        a = SharedLimiter("push-phone", 3, 60, lambda: first, clock=clock)
        b = SharedLimiter("push-phone", 3, 60, lambda: second, clock=clock)
        waits = await asyncio.gather(*(limiter.take("254711000001") for limiter in (a, b) * 5))
        assert sum(1 for w in waits if w == 0) == 3 and all(0 < w <= 60 for w in waits if w), waits
        assert await a.take("254711000002") == 0  # another key
        await b.give_back("254711000001")  # a push refused by Daraja gives its place back
        assert await a.take("254711000001") == 0
        assert await b.take("254711000001") > 0
        clock.now += 60.5
        assert await b.take("254711000001") == 0  # the window moved on
        off = SharedLimiter("push-client", 0, 60, lambda: first, clock=clock)
        assert [await off.take("x") for _ in range(50)] == [0.0] * 50  # 0: no limit, nothing written
        assert (await first.fetch_one("SELECT COUNT(*) FROM limit_events WHERE name = 'push-client'"))[0] == 0
    finally:
        await first.close()
        await second.close()


async def test_lookups_count_misses_only_and_a_crowd_is_cut_before_it_reads(store):  # noqa: F811
    limiter = SharedLimiter("lookup", 5, 60, lambda: store)
    reads = 0

    async def hit() -> str:
        nonlocal reads
        reads += 1
        await asyncio.sleep(0.01)
        return "found"

    async def miss() -> None:
        nonlocal reads
        reads += 1
        return None

    assert [await limiter.lookup("1.2.3.4", hit) for _ in range(20)] == [("found", 0.0)] * 20
    count = "SELECT COUNT(*) FROM limit_events WHERE name = 'lookup'"
    assert (await store.fetch_one(count))[0] == 0  # hits write nothing
    crowd = await asyncio.gather(*(limiter.lookup("5.6.7.8", hit) for _ in range(30)))
    assert sum(1 for found, _ in crowd if found) == 5 and reads == 25  # 25 refused before reading
    reads = 0
    answers = [await limiter.lookup("9.9.9.9", miss) for _ in range(8)]
    assert [wait == 0 for _, wait in answers] == [True] * 5 + [False] * 3 and reads == 5
    assert (await store.fetch_one(count))[0] == 5


async def test_one_token_fetch_for_every_process_and_one_refresh_when_it_is_refused(make_store):  # noqa: F811
    stores = [make_store() for _ in range(3)]
    for s in stores:
        await s.open()
    try:
        clock = Clock()
        fetched: list[str] = []

        async def fetch() -> tuple[str, int]:
            await asyncio.sleep(0.05)  # Daraja takes a moment: the others must wait for this one
            fetched.append(f"token-{len(fetched) + 1}")
            return fetched[-1], 3599

        sources = [SharedTokens(lambda s=s: s, Leases(lambda s=s: s, clock=clock), clock=clock) for s in stores]
        got = await asyncio.gather(*(src.get(fetch, max_margin=300) for src in sources * 20))
        assert fetched == ["token-1"] and {token for token, _, _ in got} == {"token-1"}
        refused = await asyncio.gather(*(src.get(fetch, max_margin=300, refused="token-1") for src in sources))
        assert fetched == ["token-1", "token-2"] and {t for t, _, _ in refused} == {"token-2"}
        clock.now += 3599 - 299  # within the refresh margin: the next caller refreshes it
        again = await asyncio.gather(*(src.get(fetch, max_margin=300) for src in sources))
        assert fetched[-1] == "token-3" and {t for t, _, _ in again} == {"token-3"}
        assert all(left > 300 for _, left, _ in again)  # a fresh token's time left, as each process sees it
    finally:
        for s in stores:
            await s.close()


async def test_a_callback_waits_for_a_live_process_s_push_and_not_for_a_dead_one_s(store):  # noqa: F811
    from gateway.config import load_settings
    from gateway.payments import PaymentService

    # Only the store is used here: whether the database shows pushes still on their way.
    service = PaymentService(store, None, load_settings({}))  # type: ignore[arg-type]
    now = service.clock()
    live, dead = Leases(lambda: store), Leases(lambda: store)
    await live.claim("process", live.holder, 10)
    async with store.transaction() as t:
        waiting_live = await t.insert_attempt("254711000001", 10, "A", "d", now, sender=live.holder)
        await t.insert_attempt("254711000002", 10, "B", "d", now, sender=dead.holder)  # never beat: dead
    await asyncio.wait_for(service._wait_for_other_processes(["254711000002"]), 1)  # returns at once
    # Its own pushes it waits for in memory, not here (else a stuck one of its own would hold each callback).
    service.leases = Leases(lambda: store)
    await service.leases.claim("process", service.leases.holder, 10)
    async with store.transaction() as t:
        await t.insert_attempt("254711000003", 10, "C", "d", now, sender=service.leases.holder)
    await asyncio.wait_for(service._wait_for_other_processes(["254711000003"]), 1)
    with pytest.raises(TimeoutError):  # the live process's push may still be answered: wait for it
        await asyncio.wait_for(service._wait_for_other_processes(["254711000001"]), 0.5)
    waiter = asyncio.ensure_future(service._wait_for_other_processes(["254711000001", "254711000002"]))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    async with store.transaction() as t:
        await t.set_attempt(waiting_live, "accepted", "ws_CO_1")  # its answer came
    await asyncio.wait_for(waiter, 1)
