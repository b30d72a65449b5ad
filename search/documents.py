"""The index document of an order: its wide row, with its lines as ``items`` (nested), and the
index template that maps every field explicitly (``dynamic: strict``: a field the mapping does
not know is refused, not guessed)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from chain.wide_rows import ITEM_TABLE, ORDER_TABLE
from models.digests import kind_of

#: The wide-row column only reconciliation reads.
NOT_INDEXED = frozenset({"source_digest"})
#: Lines: what search and customer service look at.
ITEM_FIELDS = ("item_id", "sku_id", "sku_name", "category", "quantity", "unit_price", "amount", "refund_quantity",
               "refund_amount", "status")
#: Free-text names get a keyword too, for exact filters and sorting.
NAMES = frozenset({"store_name", "sku_name"})

_TIME_FORMATS = "strict_date_hour_minute_second_fraction||strict_date_hour_minute_second"
_KINDS: dict[str, dict[str, Any]] = {
    "text": {"type": "keyword"}, "int": {"type": "long"}, "money": {"type": "scaled_float", "scaling_factor": 100},
    "date": {"type": "date", "format": "strict_date"}, "time": {"type": "date", "format": _TIME_FORMATS}}


def _field(name: str, kind: str) -> dict[str, Any]:
    if name in NAMES:
        return {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}
    return dict(_KINDS[kind])


def mappings() -> dict[str, Any]:
    """The explicit mappings of the orders index."""
    properties = {c.name: _field(c.name, kind_of(c)) for c in ORDER_TABLE.columns if c.name not in NOT_INDEXED}
    items = {c.name: _field(c.name, kind_of(c)) for c in ITEM_TABLE.columns if c.name in ITEM_FIELDS}
    properties["items"] = {"type": "nested", "properties": items}
    return {"dynamic": "strict", "properties": properties}


def _value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def document(order: dict[str, Any], items: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The document of one order: JSON values, amounts as decimal strings, times in UTC."""
    doc = {name: _value(value) for name, value in order.items() if name not in NOT_INDEXED}
    doc["items"] = [{name: _value(item.get(name)) for name in ITEM_FIELDS}
                    for item in sorted(items, key=lambda i: i["item_id"])]
    return doc


_ORDER_KINDS = {c.name: kind_of(c) for c in ORDER_TABLE.columns}
_ITEM_KINDS = {c.name: kind_of(c) for c in ITEM_TABLE.columns}


def found_order(source: dict[str, Any]) -> dict[str, Any]:
    """A document found by search, in the shape the SQL fallback gives: Python values back."""
    order = {name: _parsed(_ORDER_KINDS.get(name, ""), value) for name, value in source.items() if name != "items"}
    order["items"] = [{name: _parsed(_ITEM_KINDS.get(name, ""), value) for name, value in item.items()}
                      for item in source.get("items", [])]
    return order


def _parsed(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "money":
        return Decimal(str(value)).quantize(Decimal("0.01"))
    if kind == "time":
        return dt.datetime.fromisoformat(str(value))
    if kind == "date":
        return dt.date.fromisoformat(str(value))
    return value
