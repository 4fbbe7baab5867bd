"""The callback queue: Daraja's callback POSTs waiting for their time, earliest first.

A settled prompt schedules its callback (once, twice, late or never, as its behaviour says); a
failed delivery may be retried (Daraja itself never retries); a callback in the journal can be
sent again. `generation` counts resets: a delivery that was on its way when the simulator was
reset belongs to the world before it and is not recorded in the new one.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any

from .scenarios import Scenario
from .settings import SimulatorSettings

TWICE_GAP = 0.05  # seconds between the two deliveries of a "twice" callback


@dataclass
class CallbackAttempt:
    at: float
    url: str
    body: dict[str, Any]
    status: int | None = None
    error: str | None = None
    duration_ms: float | None = None
    attempt: int = 1
    journal_id: int | None = None  # resend with POST /simulator/api/callbacks/{journal_id}/resend

    @property
    def delivered(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    def to_json(self) -> dict[str, Any]:
        return {"at": self.at, "url": self.url, "status": self.status, "error": self.error,
                "durationMs": self.duration_ms, "body": self.body, "attempt": self.attempt,
                "journalId": self.journal_id}


@dataclass
class CallbackJob:
    due_at: float
    checkout_request_id: str
    url: str
    body: dict[str, Any]
    attempt: int = 1
    generation: int = 0  # the queue's generation when it was scheduled


@dataclass
class CallbackQueue:
    settings: SimulatorSettings
    generation: int = 0
    _heap: list[tuple[float, int, CallbackJob]] = field(default_factory=list)
    _seq: itertools.count[int] = field(default_factory=itertools.count)

    def __len__(self) -> int:
        return len(self._heap)

    def schedule(self, job: CallbackJob) -> None:
        job.generation = self.generation
        heapq.heappush(self._heap, (job.due_at, next(self._seq), job))

    def schedule_settlement(self, checkout_request_id: str, url: str, body: dict[str, Any],
                            behaviour: Scenario, settled_at: float) -> None:
        """The callbacks of a prompt settled at `settled_at`, as its behaviour says."""
        delay = behaviour.callback_delay
        if delay is None:
            late = behaviour.callback == "late"
            delay = self.settings.late_callback_delay if late else self.settings.callback_delay
        offsets = {"once": [delay], "late": [delay], "twice": [delay, delay + TWICE_GAP], "never": []}
        for offset in offsets[behaviour.callback]:
            self.schedule(CallbackJob(settled_at + offset, checkout_request_id, url, body))

    def retry(self, job: CallbackJob, now: float) -> bool:
        """Another attempt after a failed delivery, if retries are configured, the delay doubling."""
        if job.attempt > self.settings.callback_retries or not self.is_current(job.generation):
            return False
        delay = self.settings.callback_retry_delay * 2 ** (job.attempt - 1)
        self.schedule(CallbackJob(now + delay, job.checkout_request_id, job.url, job.body, job.attempt + 1))
        return True

    def take_due(self, now: float) -> list[CallbackJob]:
        due = []
        while self._heap and self._heap[0][0] <= now:
            due.append(heapq.heappop(self._heap)[2])
        return due

    def next_due(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def is_current(self, generation: int | None) -> bool:
        return generation is None or generation == self.generation

    def reset(self) -> None:
        self._heap.clear()
        self.generation += 1
