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


def _item(raw: Any) -> CatalogueItem:
    if not isinstance(raw, dict):
        raise ValueError("a catalogue item must be an object")
    item = CatalogueItem(id=raw["id"], name=raw["name"], unit_price=raw["unitPrice"],
                         description=raw.get("description", ""), default_quantity=raw.get("defaultQuantity", 0))
    whole = (isinstance(item.unit_price, int) and not isinstance(item.unit_price, bool) and item.unit_price > 0
             and isinstance(item.default_quantity, int) and item.default_quantity >= 0)
    if not (isinstance(item.id, str) and _ID.fullmatch(item.id) and isinstance(item.name, str)
            and 0 < len(item.name) <= 80 and isinstance(item.description, str) and whole):
        raise ValueError(f"catalogue item {raw!r} is not valid")
    return item


@cache
def load_catalogue(path: Path = CATALOGUE_FILE) -> tuple[CatalogueItem, ...]:
    """The catalogue's items, in order (read once; a broken file fails loudly at start-up)."""
    data = json.loads(path.read_text(encoding="utf-8"))
    items = tuple(_item(raw) for raw in data["items"])
    if len({item.id for item in items}) != len(items):
        raise ValueError(f"{path}: item ids must differ")
    return items


def catalogue_by_id() -> dict[str, CatalogueItem]:
    return {item.id: item for item in load_catalogue()}
