"""What one order adds to the daily ADS aggregates (DESIGN section 4), as plain data.

An order contributes once its payment is merged (``paid_at`` set) and while it is not
cancelled, on the day of ``biz_date``.  Contributions are kept in the ledger as JSON so the
next processing can take exactly the old one back.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from flows.declared.gqsh import CANCELLED

ZERO = Decimal("0.00")
CENT = Decimal("0.01")

SALES, ITEM_SALES, SALES_SUM = "ads_order_sales", "ads_order_item_sales", "ads_order_sales_sum"
#: Aggregate table -> its key columns and its measures, in the order they are written.
AGGREGATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    SALES: (("biz_date", "store_id"), ("order_count", "pay_amount", "refund_amount", "net_amount")),
    ITEM_SALES: (("biz_date", "sku_id"), ("quantity", "amount", "refund_quantity", "refund_amount")),
    SALES_SUM: (("biz_date",), ("order_count", "pay_amount", "refund_amount", "net_amount")),
}
#: One aggregate row: (table, key values) -> measures.
Cells = dict[tuple[str, tuple[Any, ...]], dict[str, Any]]


def money(value: Any) -> Decimal:
    """An amount to the cent; NULL is zero."""
    return ZERO if value is None else Decimal(str(value)).quantize(CENT)


@dataclass(frozen=True)
class SkuLine:
    quantity: int = 0
    amount: Decimal = ZERO
    refund_quantity: int = 0
    refund_amount: Decimal = ZERO


@dataclass(frozen=True)
class Contribution:
    biz_date: dt.date
    store_id: str
    pay_amount: Decimal
    refund_amount: Decimal
    skus: Mapping[str, SkuLine] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps({
            "biz_date": self.biz_date.isoformat(), "store_id": self.store_id,
            "pay_amount": str(self.pay_amount), "refund_amount": str(self.refund_amount),
            "skus": {sku: [s.quantity, str(s.amount), s.refund_quantity, str(s.refund_amount)]
                     for sku, s in sorted(self.skus.items())},
        }, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Contribution:
        data = json.loads(text)
        return cls(
            biz_date=dt.date.fromisoformat(data["biz_date"]), store_id=data["store_id"],
            pay_amount=Decimal(data["pay_amount"]), refund_amount=Decimal(data["refund_amount"]),
            skus={sku: SkuLine(q, Decimal(a), rq, Decimal(ra)) for sku, (q, a, rq, ra) in data["skus"].items()},
        )

    def cells(self) -> Cells:
        """The aggregate rows this contribution adds to and by how much."""
        order = {"order_count": 1, "pay_amount": self.pay_amount, "refund_amount": self.refund_amount,
                 "net_amount": self.pay_amount - self.refund_amount}
        cells: Cells = {
            (SALES, (self.biz_date, self.store_id)): dict(order),
            (SALES_SUM, (self.biz_date,)): dict(order),
        }
        for sku, line in self.skus.items():
            cells[(ITEM_SALES, (self.biz_date, sku))] = {
                "quantity": line.quantity, "amount": line.amount,
                "refund_quantity": line.refund_quantity, "refund_amount": line.refund_amount,
            }
        return cells


def contribution_of(order: Mapping[str, Any] | None, items: Iterable[Mapping[str, Any]]) -> Contribution | None:
    """The contribution of an order's wide rows, or None when it contributes nothing."""
    if (order is None or order.get("paid_at") is None or order.get("status") == CANCELLED
            or order.get("biz_date") is None or order.get("store_id") is None):
        return None
    skus: dict[str, SkuLine] = {}
    for item in items:
        sku = str(item["sku_id"])
        line = skus.get(sku, SkuLine())
        skus[sku] = SkuLine(
            line.quantity + int(item.get("quantity") or 0),
            line.amount + money(item.get("amount")),
            line.refund_quantity + int(item.get("refund_quantity") or 0),
            line.refund_amount + money(item.get("refund_amount")),
        )
    biz_date = order["biz_date"]
    if isinstance(biz_date, dt.datetime):
        biz_date = biz_date.date()
    return Contribution(biz_date, str(order["store_id"]), money(order.get("pay_amount")),
                        money(order.get("refund_amount")), skus)


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
            add_cells(total, old.cells(), -1)
        if new is not None:
            add_cells(total, new.cells(), +1)
    return {cell: dict(measures) for cell, measures in total.items() if any(measures.values())}


def aggregate(contributions: Iterable[Contribution | None]) -> Cells:
    """The aggregates recomputed from scratch from ``contributions``."""
    return delta((None, c) for c in contributions)
