"""Apigee's limits in front of Daraja, when configured: a per-second spike arrest and a quota."""

from __future__ import annotations

from .exceptions import QuotaViolation, SpikeArrestViolation


class TrafficLimits:
    def __init__(self, per_second: int, quota: int) -> None:
        self.per_second = per_second  # 0: no spike arrest
        self.quota = quota  # requests allowed until reset; 0: no quota
        self.counted = 0
        self._last_second: list[float] = []  # arrival times within the last second (at most per_second)

    def count(self, now: float) -> None:
        """Count one request; raises Daraja's answer when it is over a limit."""
        self.counted += 1
        if self.quota and self.counted > self.quota:
            raise QuotaViolation()
        if self.per_second:
            self._last_second = [t for t in self._last_second if now - t < 1.0]
            if len(self._last_second) >= self.per_second:
                raise SpikeArrestViolation(self.per_second)
            self._last_second.append(now)

    def reset(self) -> None:
        self.counted = 0
        self._last_second.clear()
