"""Wide rows ↔ ADS: the three aggregate tables recomputed from the wide rows against what is stored.

Each shard database sums its settled orders per (day, store) and its lines per (day, SKU)
(``GROUP BY``, no order row leaves it); the sums are added up and compared cell by cell, measure
by measure, with the stored aggregates of the days.  An order contributes as the incremental
path counts it (``warehouse.contributions``): paid, not cancelled, on its business day.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import func, select, text

from chain.wide_rows import ITEM_TABLE, ORDER_TABLE
from models.storage import Storage
from reconcile.diffs import Diff, LayerResult, as_date, days_between
from reconcile.wide import settled_where
from warehouse.aggregates import read_aggregates
from warehouse.contributions import AGGREGATES, Cells, money

LAYER = "ads"
#: The online order flow's aggregates, which this layer recomputes in SQL (the layer is not yet
#: read from the declarations).
SALES, ITEM_SALES, SALES_SUM = "ads_order_sales", "ads_order_item_sales", "ads_order_sales_sum"
MONEY = frozenset({"pay_amount", "refund_amount", "net_amount", "amount"})


def recomputed_cells(storage: Storage, first: dt.date, last: dt.date) -> Cells:
    """The aggregates of [first, last] as the wide rows make them, summed by the databases."""
    order, item = ORDER_TABLE, ITEM_TABLE
    where = settled_where(first, last) & order.c.store_id.is_not(None)
    sales = (select(order.c.biz_date, order.c.store_id, func.count(), func.sum(order.c.pay_amount),
                    func.sum(order.c.refund_amount)).where(where).group_by(text("1"), text("2")))
    lines = (select(order.c.biz_date, item.c.sku_id, func.sum(item.c.quantity), func.sum(item.c.amount),
                    func.sum(item.c.refund_quantity), func.sum(item.c.refund_amount))
             .select_from(item.join(order, item.c.order_id == order.c.order_id))
             .where(where).group_by(text("1"), text("2")))
    cells: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = defaultdict(lambda: defaultdict(int))

    def sums(database: int) -> tuple[list[Any], list[Any]]:
        with storage.read_engine(database).connect() as connection:
            return list(connection.execute(sales)), list(connection.execute(lines))
    parts = storage.each_database(sums)
    for order_sums, line_sums in parts:
        for day, store, count, paid, refunded in order_sums:
            day = as_date(day)
            for table, key in ((SALES, (day, str(store))), (SALES_SUM, (day,))):
                cell = cells[(table, key)]
                cell["order_count"] += int(count)
                cell["pay_amount"] += money(paid)
                cell["refund_amount"] += money(refunded)
                cell["net_amount"] += money(paid) - money(refunded)
        for day, sku, quantity, amount, refund_quantity, refund_amount in line_sums:
            day = as_date(day)
            cell = cells[(ITEM_SALES, (day, str(sku)))]
            cell["quantity"] += int(quantity or 0)
            cell["amount"] += money(amount)
            cell["refund_quantity"] += int(refund_quantity or 0)
            cell["refund_amount"] += money(refund_amount)
    # The incremental path deletes a cell left holding nothing.
    return {cell: dict(values) for cell, values in cells.items() if any(values.values())}


def _same(measure: str, expected: Any, found: Any) -> bool:
    if measure in MONEY:
        return money(expected) == money(found)
    return int(expected or 0) == int(found or 0)


def _shown(measure: str, value: Any) -> str:
    return str(money(value)) if measure in MONEY else str(int(value or 0))


def cell_name(table: str, key: tuple[Any, ...]) -> str:
    return " ".join([table, *(k.isoformat() if isinstance(k, dt.date) else str(k) for k in key)])


def compare_ads(storage: Storage, first: dt.date, last: dt.date) -> LayerResult:
    """Every aggregate cell of the days, recomputed against stored."""
    result = LayerResult(LAYER)
    started = time.perf_counter()
    want = recomputed_cells(storage, first, last)
    result.seconds["wide sums"] = time.perf_counter() - started
    with storage.dws_engine.connect() as connection:
        have = read_aggregates(connection, days_between(first, last))
    result.seconds["stored cells"] = time.perf_counter() - started - result.seconds["wide sums"]
    for cell in sorted(want.keys() | have.keys(), key=lambda c: (c[0], tuple(str(k) for k in c[1]))):
        table, key = cell
        measures = AGGREGATES[table][1]
        expected, found = want.get(cell), have.get(cell)
        day = key[0]
        name = cell_name(table, key)
        if expected is None or found is None:
            present = expected or found
            assert present is not None
            row = json.dumps({m: _shown(m, present.get(m)) for m in measures})
            result.diffs.append(Diff(LAYER, day, None, name, "*", row if expected else None,
                                     row if found else None, table))
            continue
        for measure in measures:
            if not _same(measure, expected.get(measure), found.get(measure)):
                result.diffs.append(Diff(LAYER, day, None, name, measure, _shown(measure, expected.get(measure)),
                                         _shown(measure, found.get(measure)), table))
    result.counts = {"cells": len(want.keys() | have.keys()),
                     "cells_differing": len({d.target for d in result.diffs})}
    return result
