"""The scenario catalogue: phone numbers whose outcome is fixed, like a card network's test cards.

The built-in table is `catalogue.json`; a user's own JSON file (same shape) adds numbers or
overrides built-in ones without touching code.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from .phones import msisdn as safaricom_msisdn

RESULT_CODE = re.compile(r"[A-Za-z0-9_.]{1,40}")
PUSH_BEHAVIOURS = ("accept", "locked", "error", "busy", "timeout", "slow")
QUERY_BEHAVIOURS = ("normal", "error", "timeout", "slow")
CALLBACK_BEHAVIOURS = ("once", "never", "twice", "late")
TIMINGS = ("auto_answer", "prompt_lifetime")
AMOUNT_FORMATS = ("integer", "decimal")
BALANCE_ITEMS = ("empty", "absent")


class CatalogueError(ValueError):
    pass


@dataclass(frozen=True)
class Scenario:
    """How one phone number behaves: the customer's answer and every fault Daraja can show."""

    msisdn: str
    title: str
    outcome: str = "interactive"  # "interactive", or the ResultCode the prompt settles with
    at: str = "auto_answer"  # when a scripted outcome happens: after the auto-answer delay or at expiry
    push: str = "accept"  # accept | locked | error (500) | busy (spike arrest) | timeout | slow
    query: str = "normal"  # normal | error (500) | timeout | slow
    callback: str = "once"  # once | never | twice | late
    callback_delay: float | None = None  # seconds from settlement; None: the settings' delay
    delay: float | None = None  # seconds a "slow" push or query waits (None: the settings' slow delay)
    amount_format: str = "decimal"  # the callback's Amount: 100.00 (as Daraja writes it) or 100
    balance_item: str = "empty"  # the callback's Balance item: present without a Value, or absent
    balance: int | None = None
    description: str = ""

    @property
    def interactive(self) -> bool:
        return self.outcome == "interactive"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def overlaid(self, overrides: dict[str, Any]) -> Scenario:
        return replace(self, **overrides) if overrides else self


def _seconds(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value <= 3600


_CHOICES = {"push": PUSH_BEHAVIOURS, "query": QUERY_BEHAVIOURS, "callback": CALLBACK_BEHAVIOURS, "at": TIMINGS,
            "amount_format": AMOUNT_FORMATS, "balance_item": BALANCE_ITEMS}
BEHAVIOUR_FIELDS = ("outcome", *_CHOICES, "callback_delay", "delay", "balance")


def parse_behaviour(entry: dict[str, Any], where: str) -> dict[str, Any]:
    """Check the behaviour fields of a catalogue entry or a fault; returns only those present."""
    found: dict[str, Any] = {}
    for name in BEHAVIOUR_FIELDS:
        if name not in entry:
            continue
        value = entry[name]
        if name == "outcome":
            if isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not RESULT_CODE.fullmatch(value):
                raise CatalogueError(f"{where}: outcome must be \"interactive\" or a ResultCode such as \"1032\"")
        elif name in _CHOICES:
            if value not in _CHOICES[name]:
                raise CatalogueError(f"{where}: {name} must be one of {', '.join(_CHOICES[name])}")
        elif name in ("callback_delay", "delay"):
            if value is not None and not _seconds(value):
                raise CatalogueError(f"{where}: {name} must be a number of seconds from 0 to 3600")
        elif name == "balance" and value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise CatalogueError(f"{where}: balance must be a whole number of KES")
        found[name] = value
    return found


def _scenario(entry: Any, source: str) -> Scenario:
    if not isinstance(entry, dict):
        raise CatalogueError(f"{source}: every entry must be an object")
    msisdn = str(entry.get("msisdn", ""))
    if safaricom_msisdn(msisdn) is None:
        raise CatalogueError(f"{source}: msisdn {msisdn!r} must look like 2547XXXXXXXX or 2541XXXXXXXX")
    unknown = set(entry) - {"msisdn", "title", "description", *BEHAVIOUR_FIELDS}
    if unknown:
        raise CatalogueError(f"{source}: {msisdn}: unknown field(s) {', '.join(sorted(unknown))}")
    behaviour = parse_behaviour(entry, f"{source}: {msisdn}")
    return Scenario(msisdn=msisdn, title=str(entry.get("title") or msisdn),
                    description=str(entry.get("description", "")), **behaviour)


def interactive(msisdn: str) -> Scenario:
    """The behaviour of a number that is not in the catalogue: it waits for the customer."""
    return Scenario(msisdn=msisdn, title="Interactive",
                    description="Waits on the virtual phone for the PIN, a cancel, or the prompt to expire.")


# That behaviour, shared by the prompts of every number not in the catalogue (each prompt carries its
# own number): one object, not one per push, for the garbage collector's full passes to walk.
ANY_OTHER_NUMBER = interactive("")


def _parse(text: str, source: str) -> list[Scenario]:
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise CatalogueError(f"{source}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise CatalogueError(f"{source}: must be a JSON list of scenarios")
    return [_scenario(entry, source) for entry in data]


def load_catalogue(extra_file: str | None = None) -> dict[str, Scenario]:
    text = resources.files(__package__).joinpath("catalogue.json").read_text(encoding="utf-8")
    catalogue = {s.msisdn: s for s in _parse(text, "catalogue.json")}
    if extra_file:
        path = Path(extra_file)
        try:
            extra = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise CatalogueError(f"SIMULATOR_SCENARIOS_FILE: cannot read {path} ({exc.strerror})") from None
        catalogue.update({s.msisdn: s for s in _parse(extra, str(path))})
    return catalogue
