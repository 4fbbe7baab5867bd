"""The demo catalogue of simulator mode (DEMO_CATALOGUE): what the pay page may order, priced here.

The items and their prices are in `catalogue.json`, next to this module, and nowhere else: the
browser sends item ids and quantities, and the server prices the order (`POST /catalogue/orders`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .checkout import is_clean_text

CATALOGUE_FILE = Path(__file__).with_name("catalogue.json")
_ID = re.compile(r"[a-z0-9][a-z0-9-]{0,39}")


@dataclass(frozen=True)
class CatalogueItem:
    id: str
    name: str
    unit_price: int  # whole KES
    description: str
    default_quantity: int  # in the cart the pay page starts with

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name, "unitPrice": self.unit_price, "description": self.description,
                "defaultQuantity": self.default_quantity}


MAX_NAME = 80  # the longest name of an item, here and in any order's line
MAX_DESCRIPTION = 200
MAX_QUANTITY = 1000  # the most of one item, here and in any order's line


def _whole(value: Any, low: int, high: int | None = None) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool) and value >= low
            and (high is None or value <= high))


def _text(value: Any, longest: int, *, blank: bool = False) -> bool:
    return (isinstance(value, str) and (blank or bool(value.strip())) and len(value) <= longest
            and is_clean_text(value))


def _item(raw: Any) -> CatalogueItem:
    if not isinstance(raw, dict) or not {"id", "name", "unitPrice"} <= set(raw):
        raise ValueError(f"catalogue item {raw!r} must be an object with id, name and unitPrice")
    item = CatalogueItem(id=raw["id"], name=raw["name"], unit_price=raw["unitPrice"],
                         description=raw.get("description", ""), default_quantity=raw.get("defaultQuantity", 0))
    if not (isinstance(item.id, str) and _ID.fullmatch(item.id) and _text(item.name, MAX_NAME)
            and _text(item.description, MAX_DESCRIPTION, blank=True) and _whole(item.unit_price, 1)
            and _whole(item.default_quantity, 0, MAX_QUANTITY)):
        raise ValueError(f"catalogue item {raw!r} is not valid: id of a-z, 0-9 and -, name of 1 to {MAX_NAME} "
                         f"characters, unitPrice a whole number of KES, defaultQuantity 0 to {MAX_QUANTITY}")
    return item


@cache
def load_catalogue(path: Path = CATALOGUE_FILE) -> tuple[CatalogueItem, ...]:
    """The catalogue's items, in order (read once; a broken file fails loudly at start-up, with a
    ValueError naming the file)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        raw_items = data.get("items") if isinstance(data, dict) else None
        if not isinstance(raw_items, list) or not raw_items:
            raise ValueError('the file must be a JSON object with a non-empty list "items"')
        items = tuple(_item(raw) for raw in raw_items)
    except (OSError, ValueError) as exc:
        raise ValueError(f"demo catalogue {path}: {exc}") from exc
    if len({item.id for item in items}) != len(items):
        raise ValueError(f"demo catalogue {path}: item ids must differ")
    return items


def catalogue_by_id() -> dict[str, CatalogueItem]:
    return {item.id: item for item in load_catalogue()}
