"""run.py's pacing of the garbage collector: automatic collection is off while the event loop is
behind, on again once it has caught up (what piled up meanwhile moved to the oldest generation
unwalked), never off longer than its cap, and on when serving ends."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Iterator

import pytest
from aiohttp import web

import run


@pytest.fixture
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


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


def start_pacing(longest_off: float = 30.0, least_on: float = 0.0, moves_per_full: int = run.MOVES_PER_FULL
                 ) -> asyncio.Future[None]:
    """run._pace every 20 ms, with thresholds well apart from what a loaded test machine's scheduling
    adds to such a timer."""
    return asyncio.ensure_future(run._pace(period=0.02, behind=0.15, caught_up=0.05, longest_off=longest_off,
                                           least_on=least_on, moves_per_full=moves_per_full))


def in_generation(generation: int, objects: list[list[int]]) -> bool:
    ids = {id(o) for o in gc.get_objects(generation=generation)}
    return all(id(o) in ids for o in objects)


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


async def test_what_piled_up_while_off_goes_to_the_oldest_generation_unwalked(collector_on,
                                                                              no_automatic_collection):
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
        assert in_generation(2, piled)
        assert sum(g["collections"] for g in gc.get_stats()) == collections  # moved, not walked
    finally:
        pacing.cancel()


async def pile_up_and_catch_up() -> list[list[int]]:
    """Fall behind, make live objects while collection is off, catch up: the objects made."""
    await lag(0.4)
    assert await until(lambda: not gc.isenabled())
    piled = [[n] for n in range(1_000)]
    assert await until(gc.isenabled)
    return piled


async def test_the_moves_between_two_full_collections_are_bounded(collector_on, no_automatic_collection):
    # Cyclic garbage moved with the live objects waits for a full collection: however often the loop
    # falls behind, only so much of it is moved before one.
    pacing = start_pacing(moves_per_full=2)
    try:
        await asyncio.sleep(0.1)
        assert in_generation(2, await pile_up_and_catch_up())
        assert in_generation(2, await pile_up_and_catch_up())
        assert in_generation(0, await pile_up_and_catch_up())  # the third: left young, collected as before
        gc.collect()  # a full collection
        assert in_generation(2, await pile_up_and_catch_up())  # moved again
    finally:
        pacing.cancel()


async def test_collection_is_never_off_longer_than_the_cap_and_then_stays_on_a_while(collector_on):
    pacing = start_pacing(longest_off=1.0, least_on=1.0)
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
