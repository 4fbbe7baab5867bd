"""The scenario catalogue: phone numbers whose outcome is fixed, like a card network's test cards.

The built-in table is `catalogue.json`; a user's own JSON file (same shape) adds numbers or
overrides built-in ones without touching code.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

# The numbers the simulator can push to (Safaricom ranges: 07xx and 0110-0115).
MSISDN = re.compile(r"254(7[0-9]{8}|11[0-5][0-9]{6})")
RESULT_CODE = re.compile(r"[A-Za-z0-9_.]{1,40}")
PUSH_BEHAVIOURS = ("accept", "locked")
CALLBACK_BEHAVIOURS = ("once", "never", "twice", "late")
TIMINGS = ("auto_answer", "prompt_lifetime")


class CatalogueError(ValueError):
    pass


@dataclass(frozen=True)
class Scenario:
    msisdn: str
    title: str
    outcome: str = "interactive"  # "interactive", or the ResultCode the prompt settles with
    push: str = "accept"
    callback: str = "once"
    at: str = "auto_answer"  # when a scripted outcome happens: after the auto-answer delay or at expiry
    balance: int | None = None
    description: str = ""

    @property
    def interactive(self) -> bool:
        return self.outcome == "interactive"

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _scenario(entry: Any, source: str) -> Scenario:
    if not isinstance(entry, dict):
        raise CatalogueError(f"{source}: every entry must be an object")
    msisdn = str(entry.get("msisdn", ""))
    if not MSISDN.fullmatch(msisdn):
        raise CatalogueError(f"{source}: msisdn {msisdn!r} must look like 2547XXXXXXXX or 2541XXXXXXXX")
    outcome = entry.get("outcome", "interactive")
    if isinstance(outcome, int) and not isinstance(outcome, bool):
        outcome = str(outcome)
    if not isinstance(outcome, str) or not RESULT_CODE.fullmatch(outcome):
        raise CatalogueError(f"{source}: {msisdn}: outcome must be \"interactive\" or a ResultCode such as \"1032\"")
    fields = {
        "msisdn": msisdn,
        "title": str(entry.get("title") or msisdn),
        "outcome": outcome,
        "push": str(entry.get("push", "accept")),
        "callback": str(entry.get("callback", "once")),
        "at": str(entry.get("at", "auto_answer")),
        "balance": entry.get("balance"),
        "description": str(entry.get("description", "")),
    }
    for name, allowed in (("push", PUSH_BEHAVIOURS), ("callback", CALLBACK_BEHAVIOURS), ("at", TIMINGS)):
        if fields[name] not in allowed:
            raise CatalogueError(f"{source}: {msisdn}: {name} must be one of {', '.join(allowed)}")
    balance = fields["balance"]
    if balance is not None and (not isinstance(balance, int) or isinstance(balance, bool) or balance < 0):
        raise CatalogueError(f"{source}: {msisdn}: balance must be a whole number of KES")
    return Scenario(**fields)


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
