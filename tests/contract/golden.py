"""The golden Daraja examples in `golden/`, loaded for the contract tests of both parts."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).parent / "golden"


def text(name: str) -> str:
    """A golden body as Daraja sends it (numbers such as `1.00` kept literally)."""
    whole = (GOLDEN / f"{name}.json").read_text()
    start = whole.index('"body":') + len('"body":')
    return whole[start:whole.rindex("}")].strip()


def example(name: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((GOLDEN / f"{name}.json").read_text())
    return loaded


def body(name: str) -> Any:
    return example(name)["body"]


def shape(value: Any) -> Any:
    """A JSON value's structure: keys and the JSON type of each leaf (what a typed client binds to)."""
    if isinstance(value, dict):
        return {k: shape(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shape(v) for v in value]
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "null"
