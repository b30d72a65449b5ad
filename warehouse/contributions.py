"""What one entity adds to its flow's ADS aggregates (DESIGN section 4), read from the flow's
declaration (``Aggregate``: the wide table summed, the keys, the measures, when an entity
contributes), as plain data.

An entity contributes while its root wide row satisfies the aggregate's ``when``: one cell per
key of a root-table aggregate, and for a child-table aggregate its child rows summed by key.
Contributions are kept in the ledger as JSON so the next processing can take exactly the old
one back (``warehouse.aggregates``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from flows.ads import AGGREGATES, DECLARED, Declared, declared_aggregates
from flows.declaration import BusinessDay, FlowDeclaration, Measure
from flows.rules import all_hold
from inputs.columns import ColumnType

log = logging.getLogger(__name__)

ZERO = Decimal("0.00")
CENT = Decimal("0.01")

__all__ = ["AGGREGATES", "Cells", "Contribution", "add_cells", "aggregate", "contribution_of", "delta", "money"]

#: One aggregate row: (table, key values) -> measures.
Cells = dict[tuple[str, tuple[Any, ...]], dict[str, Any]]


def money(value: Any) -> Decimal:
    """An amount to the cent; NULL is zero."""
    return ZERO if value is None else Decimal(str(value)).quantize(CENT)


def _number(kind: ColumnType | None, value: Any) -> Any:
    if kind is None:
        return 1
    if kind.kind == "decimal":
        return Decimal(0 if value is None else str(value)).quantize(Decimal(1).scaleb(-kind.scale))
    return int(value or 0)


def _measure(declared: Declared, measure: Measure, row: Mapping[str, Any]) -> Any:
    kind = declared.measure_types[measure.name]
    value = _number(kind, row.get(measure.column) if measure.column else None)
    if measure.less is not None:
        value -= _number(kind, row.get(measure.less))
    return value


def _key(declared: Declared, row: Mapping[str, Any]) -> tuple[Any, ...] | None:
    """The cell a row adds to: its key columns' values.  A NULL text key counts under 'None' (as
    tdc always has: an order line without a SKU still adds its amount); a NULL key of another
    type names no cell (None), and the row adds nothing."""
    values = []
    for name in declared.aggregate.keys:
        value = row.get(name)
        kind = declared.key_types[name]
        if kind.kind == "date" and isinstance(value, dt.datetime):
            value = value.date()
        if kind.kind == "text":
            value = str(value)
        elif value is None:
            return None
        values.append(value)
    return tuple(values)


@dataclass(frozen=True)
class Contribution:
    """An entity's cells, and the business day the ledger files them under."""

    day: dt.date | None
    cells: Cells

    def to_json(self) -> str:
        return json.dumps({"day": None if self.day is None else self.day.isoformat(), "cells": [
            [table, [_plain(v) for v in key], {m: _plain(v) for m, v in sorted(measures.items())}]
            for (table, key), measures in sorted(self.cells.items(), key=lambda cell: (cell[0][0], str(cell[0][1])))]},
            sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Contribution:
        data = json.loads(text)
        if "skus" in data:
            return _legacy(data)
        cells: Cells = {}
        for table, key, measures in data["cells"]:
            declared = DECLARED.get(table)
            restored = tuple(_typed(declared.key_types[k] if declared else None, v)
                             for k, v in zip(declared.aggregate.keys if declared else key, key, strict=True))
            cells[(table, restored)] = {m: Decimal(v) if isinstance(v, str) else v for m, v in measures.items()}
        day = data.get("day")
        return cls(None if day is None else dt.date.fromisoformat(day), cells)


def _plain(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _typed(kind: ColumnType | None, value: Any) -> Any:
    """A key value as ``_plain`` wrote it, back in its column's type."""
    if kind is None or value is None or not isinstance(value, str):
        return value
    if kind.kind == "date":
        return dt.date.fromisoformat(value)
    if kind.kind in ("datetime", "timestamp"):
        return dt.datetime.fromisoformat(value)
    if kind.kind == "decimal":
        return Decimal(value)
    return value


def _legacy(data: Mapping[str, Any]) -> Contribution:
    """A ledger entry an older tdc wrote for the online order flow (its three aggregates), read
    as cells so that it is taken back exactly."""
    day, store = dt.date.fromisoformat(data["biz_date"]), data["store_id"]
    paid, refunded = Decimal(data["pay_amount"]), Decimal(data["refund_amount"])
    order = {"order_count": 1, "pay_amount": paid, "refund_amount": refunded, "net_amount": paid - refunded}
    cells: Cells = {("ads_order_sales", (day, store)): dict(order), ("ads_order_sales_sum", (day,)): dict(order)}
    for sku, (quantity, amount, refund_quantity, refund_amount) in data["skus"].items():
        cells[("ads_order_item_sales", (day, sku))] = {
            "quantity": quantity, "amount": Decimal(amount), "refund_quantity": refund_quantity,
            "refund_amount": Decimal(refund_amount)}
    return Contribution(day, cells)


def contribution_of(flow: FlowDeclaration, order: Mapping[str, Any] | None,
                    items: Iterable[Mapping[str, Any]]) -> Contribution | None:
    """The contribution of an entity's wide rows (its root row ``order`` and child rows
    ``items``), or None when it contributes to no aggregate."""
    if order is None:
        return None
    lines = list(items)
    cells: Cells = {}
    for declared in declared_aggregates(flow):
        aggregate = declared.aggregate
        if not all_hold(aggregate.when, order):
            continue
        for row in (lines if declared.child else [order]):
            key = _key(declared, row)
            if key is None:
                log.warning("%s: a row with a NULL key adds nothing (%s)", aggregate.name,
                            {name: row.get(name) for name in aggregate.keys})
                continue
            cell = cells.setdefault((aggregate.name, key), {})
            for measure in aggregate.measures:
                cell[measure.name] = cell.get(measure.name, 0) + _measure(declared, measure, row)
    if not cells:
        return None
    assert flow.root is not None
    day_column = next((c.name for c in flow.root.columns if isinstance(c.origin, BusinessDay)), None)
    day = order.get(day_column) if day_column else None
    if isinstance(day, dt.datetime):
        day = day.date()
    return Contribution(day, cells)


def add_cells(total: Cells, cells: Cells, sign: int = 1) -> None:
    """``total += sign * cells``, measure by measure."""
    for cell, measures in cells.items():
        into = total.setdefault(cell, defaultdict(int))
        for name, value in measures.items():
            into[name] = into[name] + sign * value


def delta(changes: Iterable[tuple[Contribution | None, Contribution | None]]) -> Cells:
    """Sum of (new - old) over ``(old, new)`` pairs, without cells that do not move."""
    total: Cells = {}
    for old, new in changes:
        if old is not None:
            add_cells(total, old.cells, -1)
        if new is not None:
            add_cells(total, new.cells, +1)
    return {cell: dict(measures) for cell, measures in total.items() if any(measures.values())}


def aggregate(contributions: Iterable[Contribution | None]) -> Cells:
    """The aggregates recomputed from scratch from ``contributions``."""
    return delta((None, c) for c in contributions)
