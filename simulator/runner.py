"""The simulator's clock: answers scripted prompts, expires unanswered ones and POSTs callbacks."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import aiohttp

from .callbacks import CallbackAttempt, CallbackJob
from .models import SimulatedDaraja
from .wire import callback_text

log = logging.getLogger("simulator.callbacks")


class SimulatorRunner:
    def __init__(self, sim: SimulatedDaraja, session: aiohttp.ClientSession) -> None:
        self.sim = sim
        self.session = session
        self._wake = asyncio.Event()
        self._deliveries: set[asyncio.Task[None]] = set()
        self._stopping = False
        sim.subscribe(self._wake.set)

    async def run(self) -> None:
        while not self._stopping:
            self._wake.clear()
            for job in self.sim.take_due_callbacks():
                task = asyncio.create_task(self.deliver(job))
                self._deliveries.add(task)
                task.add_done_callback(self._deliveries.discard)
            wakeup = self.sim.next_wakeup()
            timeout = None if wakeup is None else max(0.0, wakeup - self.sim.clock())
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow a cancellation
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(min(timeout, 1.0) if timeout is not None else 1.0):
                    await self._wake.wait()

    async def deliver(self, job: CallbackJob) -> None:
        """One POST of Daraja's callback body, with a timeout. Daraja does not retry; the simulator
        does only when SIMULATOR_CALLBACK_RETRIES says so."""
        attempt = CallbackAttempt(at=self.sim.clock(), url=job.url, body=job.body, attempt=job.attempt)
        started = time.perf_counter()
        try:
            timeout = aiohttp.ClientTimeout(total=self.sim.settings.callback_timeout)
            async with self.session.post(job.url, data=callback_text(job.body), timeout=timeout,
                                         headers={"Content-Type": "application/json"}) as resp:
                await resp.read()
                attempt.status = resp.status
        except TimeoutError:
            attempt.error = "timed out"
        except aiohttp.ClientError as exc:
            attempt.error = f"{type(exc).__name__}: {exc}"
        attempt.duration_ms = round((time.perf_counter() - started) * 1000, 1)
        self.sim.record_callback(job.checkout_request_id, attempt, job.generation)
        log.info("callback %s -> %s %s", job.checkout_request_id, job.url, attempt.status or attempt.error)
        if not attempt.delivered and self.sim.retry_later(job):
            log.info("callback %s will be retried (attempt %d failed)", job.checkout_request_id, job.attempt)

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def close(self) -> None:
        self.stop()
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
