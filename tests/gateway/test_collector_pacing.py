"""run.py's pacing of the garbage collector: automatic collection is off while the event loop is
behind, on again once it has caught up, never off longer than its cap, and on when serving ends;
what piled up while it was off, and what a quiet young generation holds, is frozen unwalked; frozen
garbage is freed by a full collection once memory has grown."""

from __future__ import annotations

import asyncio
import gc
import time
import weakref
from collections.abc import Callable, Iterator

import pytest
from aiohttp import web

import run


@pytest.fixture
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()
    gc.unfreeze()  # (what a test froze is the test process's)


async def lag(seconds: float) -> None:
    """Keep the loop busy (a request handler that computes), then give the pacing a pass."""
    time.sleep(seconds)
    await asyncio.sleep(0)


async def until(predicate: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.005)
    return False


class Memory:
    """A stand-in for the process's peak resident memory that the test sets."""

    def __init__(self, value: float = 100.0) -> None:
        self.value = value

    def __call__(self) -> float:
        return self.value


def start_pacing(longest_off: float = 30.0, least_on: float = 0.0, quiet: float = 3600.0,
                 memory: Memory | None = None, observe: Callable[[], tuple[int, int]] | None = None,
                 behind: float = 0.15, headroom: float = 0.0) -> asyncio.Future[None]:
    """run._pace every 20 ms, with thresholds well apart from what a loaded test machine's scheduling
    adds to such a timer (and no quiet freezing unless asked for). The young count's growth counts
    only where `observe` is given: whatever else runs in a test process (other tests' threads)
    allocates too. The tests of quiet freezing never count as behind (`behind` an hour): looking for
    objects among all of a long-running test process's (gc.get_objects()) holds its loop long enough."""
    return asyncio.ensure_future(run._pace(period=0.02, behind=behind, caught_up=0.05, longest_off=longest_off,
                                           least_on=least_on, quiet=quiet,
                                           quiet_growth=2_000 if observe else 10**15, growth=run.HEAP_GROWTH,
                                           memory=memory or Memory(), observe=observe or run.young_generation,
                                           headroom=headroom))


def in_generation(generation: int, objects: list[list[int]]) -> bool:
    ids = {id(o) for o in gc.get_objects(generation=generation)}
    return all(id(o) in ids for o in objects)


def frozen(objects: list[list[int]]) -> bool:
    """Alive, and in none of the collector's generations: in its permanent one, which no collection walks."""
    ids = {id(o) for o in gc.get_objects()}
    return not any(id(o) in ids for o in objects)


def young_collections() -> int:
    return int(gc.get_stats()[0]["collections"])


async def test_collection_is_off_while_the_loop_is_behind_and_on_once_it_has_caught_up(collector_on):
    pacing = start_pacing()
    try:
        await asyncio.sleep(0.1)
        await lag(0.4)
        assert await until(lambda: not gc.isenabled())
        for _ in range(5):  # still behind: still off
            await lag(0.3)
            assert not gc.isenabled()
        assert await until(gc.isenabled)  # caught up
    finally:
        pacing.cancel()


@pytest.fixture
def no_automatic_collection() -> Iterator[None]:
    """Thresholds out of reach: objects stay in the generation they are in unless something moves them."""
    saved = gc.get_threshold()
    gc.set_threshold(1_000_000_000, 1_000_000_000, 1_000_000_000)
    yield
    gc.set_threshold(*saved)


async def test_what_piled_up_while_off_is_frozen_unwalked(collector_on, no_automatic_collection):
    # Left in the young generation, a burst's live objects were all walked by the next young
    # collection (270-400 ms at 10,000 open checkouts, none freed), then again by a middle one.
    pacing = start_pacing()
    try:
        await asyncio.sleep(0.1)
        await lag(0.4)
        assert await until(lambda: not gc.isenabled())
        piled = [[n] for n in range(20_000)]  # made while the loop is behind: young
        assert in_generation(0, piled)
        collections = sum(g["collections"] for g in gc.get_stats())
        assert await until(gc.isenabled)  # caught up
        assert frozen(piled)
        assert sum(g["collections"] for g in gc.get_stats()) == collections  # moved, not walked
    finally:
        pacing.cancel()


async def test_a_quiet_young_generation_is_frozen_unwalked(collector_on, no_automatic_collection):
    # Idle keep-alive connections' last requests: alive for seconds, and no young collection comes
    # (releases of older objects are credited against new ones) while the young generation grows.
    pacing = start_pacing(behind=3600, quiet=0.2)
    try:
        await asyncio.sleep(0.1)
        kept = [[n] for n in range(20_000)]
        assert in_generation(0, kept)
        collections = sum(g["collections"] for g in gc.get_stats())
        assert await until(lambda: frozen(kept))
        assert sum(g["collections"] for g in gc.get_stats()) == collections
        del kept[:10_000]  # still freed by reference counting when let go: nothing walked, nothing kept
        assert sum(g["collections"] for g in gc.get_stats()) == collections
    finally:
        pacing.cancel()


async def test_a_young_generation_that_collections_keep_emptying_is_left_to_them(collector_on,
                                                                                   no_automatic_collection):
    # Garbage-making load: young collections keep coming, and what they leave is theirs (frozen, the
    # garbage among it would wait for a full collection).
    async def collect_young() -> None:
        while True:
            gc.collect(0)
            await asyncio.sleep(0.01)

    collecting = asyncio.ensure_future(collect_young())
    pacing = start_pacing(behind=3600, quiet=0.5)  # (fifty collections a period: only a 0.5-s stall misses them)
    try:
        kept = [[n] for n in range(1_000)]
        before = young_collections()
        await asyncio.sleep(1.5)
        assert young_collections() > before + 5
        assert not frozen(kept) and not in_generation(0, kept)  # promoted by the collections
    finally:
        pacing.cancel()
        collecting.cancel()


class Observed:
    """The young generation as the pacing sees it: no collection, and a count that grows by 10,000 at
    each look while `growing` (objects made and kept, or made as garbage, faster than anything is
    let go)."""

    def __init__(self) -> None:
        self.growing, self.count = True, 0

    def __call__(self) -> tuple[int, int]:
        self.count += 10_000 if self.growing else 0
        return 0, self.count


async def test_a_young_generation_whose_count_keeps_growing_is_not_frozen(collector_on, no_automatic_collection):
    # No collection comes (thresholds out of reach), but the count grows: freezing would take the
    # garbage among it along.
    observed = Observed()
    pacing = start_pacing(behind=3600, quiet=0.2, observe=observed)
    try:
        kept = [[n] for n in range(1_000)]
        await asyncio.sleep(1.0)
        assert in_generation(0, kept)
        observed.growing = False
        assert await until(lambda: frozen(kept))  # quiet once it stops
    finally:
        pacing.cancel()


class Cycle:
    def __init__(self) -> None:
        self.me = self


async def test_frozen_garbage_is_freed_by_a_full_collection_once_memory_has_grown(collector_on,
                                                                                 no_automatic_collection):
    memory = Memory(100.0)
    pacing = start_pacing(behind=3600, quiet=0.2, memory=memory)
    try:
        await asyncio.sleep(0.1)
        cycle = Cycle()
        gone = weakref.ref(cycle)
        kept = [[n] for n in range(1_000)]
        del cycle  # garbage, in a cycle: only a collection frees it
        assert await until(lambda: frozen(kept))  # the garbage went with it
        gc.collect()
        assert gone() is not None  # frozen: CPython's own full collections do not see it
        memory.value = 100.0 * run.HEAP_GROWTH - 1  # not grown enough yet
        await asyncio.sleep(0.5)
        assert gone() is not None
        memory.value = 100.0 * run.HEAP_GROWTH
        assert await until(lambda: gone() is None)  # collected with everything frozen
        assert frozen(kept)  # what survived it frozen again
        cycle = Cycle()
        gone = weakref.ref(cycle)
        del cycle
        await asyncio.sleep(0.5)
        assert gone() is not None  # the next full one waits for memory to grow again from there
    finally:
        pacing.cancel()


async def test_memory_doubled_by_less_than_the_headroom_is_no_reason_for_a_full_collection(
        collector_on, no_automatic_collection):
    """A young process's memory doubles as it warms up (live connections, not garbage): the full
    collection waits until it has also grown by the headroom (run.HEAP_HEADROOM in service)."""
    memory = Memory(100.0)
    pacing = start_pacing(behind=3600, quiet=0.2, memory=memory, headroom=500.0)
    try:
        await asyncio.sleep(0.1)
        cycle = Cycle()
        gone = weakref.ref(cycle)
        kept = [[n] for n in range(1_000)]
        del cycle
        assert await until(lambda: frozen(kept))
        memory.value = 100.0 * run.HEAP_GROWTH * 2  # grown four times over, but by 300 only
        await asyncio.sleep(0.5)
        assert gone() is not None
        memory.value = 100.0 + 500.0
        assert await until(lambda: gone() is None)
    finally:
        pacing.cancel()


def test_the_headroom_is_half_a_gigabyte_of_the_peak_memory_counted_in_bytes():
    assert run.HEAP_HEADROOM == 512 * 2**20
    peak = run.peak_memory()
    assert 20 * 2**20 < peak < 8 * 2**30, peak  # this test process: tens to hundreds of MB, in bytes


async def test_nothing_is_frozen_where_memory_cannot_be_read(collector_on, no_automatic_collection):
    pacing = start_pacing(quiet=0.2, memory=Memory(0.0))
    try:
        await asyncio.sleep(0.1)
        kept = [[n] for n in range(1_000)]
        await lag(0.4)
        assert await until(lambda: not gc.isenabled())
        assert await until(gc.isenabled)
        await asyncio.sleep(0.5)
        assert in_generation(0, kept)
    finally:
        pacing.cancel()


async def test_collection_is_never_off_longer_than_the_cap_and_then_stays_on_a_while(collector_on):
    # least_on well past the 0.7 s looked at below: the last look's pass comes a lag (0.2 s, more when
    # the machine is loaded) after that, and an oversleep must not reach least_on.
    pacing = start_pacing(longest_off=1.0, least_on=2.5)
    try:
        await asyncio.sleep(0.05)  # the pacing is under way
        await lag(0.4)
        assert await until(lambda: not gc.isenabled())
        off = time.monotonic()
        while not gc.isenabled():  # behind the whole time: on again at the cap
            await lag(0.2)
            assert time.monotonic() - off < 3.0
        on = time.monotonic()
        while time.monotonic() - on < 0.7:  # still behind, but on for least_on
            await lag(0.2)
            assert gc.isenabled()
    finally:
        pacing.cancel()


async def test_a_served_app_paces_its_collector_and_leaves_it_on_when_it_stops(tmp_path, collector_on,
                                                                                 monkeypatch):
    monkeypatch.setattr(run, "tune_gc", lambda: None)  # (no gc.freeze() of the test process)
    app = run.prepare_to_serve(run.build_app(*run.load({"DATABASE_URL": f"sqlite:///{tmp_path}/p.sqlite3"})))
    assert run.pace_collector in app.cleanup_ctx
    context = run.pace_collector(app)
    await context.__anext__()
    gc.disable()  # as if the loop had been behind when serving ended
    with pytest.raises(StopAsyncIteration):
        await context.__anext__()
    assert gc.isenabled()


def test_each_gunicorn_worker_tunes_the_collector_and_paces_it(tmp_path, monkeypatch):
    # With --workers N, gunicorn's arbiter forks the workers and each loads its own app: that is
    # where the collector must be tuned and paced (what start-up made in the worker, frozen there).
    from gunicorn.app.base import BaseApplication

    tuned: list[bool] = []
    loaded: list[web.Application] = []
    monkeypatch.setattr(run, "tune_gc", lambda: tuned.append(True))  # (no gc.freeze() of the test process)
    monkeypatch.setattr(BaseApplication, "run", lambda self: loaded.append(self.load()))  # a worker's load, no fork
    settings, _ = run.load({"DATABASE_URL": f"sqlite:///{tmp_path}/w.sqlite3"})
    run.serve_workers(lambda: run.build_app(settings, with_simulator=False), "127.0.0.1", 0, 2)
    assert tuned == [True]
    assert len(loaded) == 1 and run.pace_collector in loaded[0].cleanup_ctx
