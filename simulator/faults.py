"""The fault book: faults injected on purpose, which overlay a number's scenario for a push.

A behaviour is the set of scenario fields a fault changes (`{"callback": "never"}`), as
`scenarios.parse_behaviour` checked them. It applies either to the next N pushes (to one number or
to any) or, standing, to every push to one number until it is lifted.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

Behaviour = Mapping[str, Any]


@dataclass
class NextPushesFault:
    """The next `remaining` pushes (to `msisdn`, or to any number when it is None) behave so."""

    behaviour: Behaviour
    remaining: int
    msisdn: str | None = None

    def applies_to(self, msisdn: str) -> bool:
        return self.msisdn is None or self.msisdn == msisdn

    def to_json(self) -> dict[str, Any]:
        return {"remaining": self.remaining, "msisdn": self.msisdn, "behaviour": dict(self.behaviour)}


@dataclass(frozen=True)
class StandingFault:
    """Every push to `msisdn` behaves so, until the fault is lifted or replaced."""

    msisdn: str
    behaviour: Behaviour

    def to_json(self) -> dict[str, Any]:
        return dict(self.behaviour)


@dataclass
class FaultBook:
    queued: list[NextPushesFault] = field(default_factory=list)
    standing: dict[str, StandingFault] = field(default_factory=dict)

    def queue(self, behaviour: Behaviour, count: int, msisdn: str | None = None) -> NextPushesFault:
        fault = NextPushesFault(dict(behaviour), count, msisdn)
        self.queued.append(fault)
        return fault

    def stand(self, msisdn: str, behaviour: Behaviour) -> StandingFault:
        fault = StandingFault(msisdn, dict(behaviour))
        self.standing[msisdn] = fault
        return fault

    def lift(self, msisdn: str) -> None:
        self.standing.pop(msisdn, None)

    def clear(self) -> None:
        self.queued.clear()
        self.standing.clear()

    def use(self, msisdn: str) -> dict[str, Any]:
        """What a push to `msisdn` changes: its standing fault, then the first queued fault that
        applies to it, which this push uses up one of."""
        overrides = dict(self.standing[msisdn].behaviour) if msisdn in self.standing else {}
        fault = next((f for f in self.queued if f.applies_to(msisdn)), None)
        if fault is not None:
            overrides.update(fault.behaviour)
            fault.remaining -= 1
            if fault.remaining <= 0:
                self.queued.remove(fault)
        return overrides

    def to_json(self) -> dict[str, Any]:
        return {"next": [f.to_json() for f in self.queued],
                "subscribers": {msisdn: f.to_json() for msisdn, f in self.standing.items()}}
