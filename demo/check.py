"""Compare the wide rows in storage with what a history expects."""

from __future__ import annotations

from collections import defaultdict
from typing import Any


def differences(expected: dict[Any, dict[str, Any]], actual: dict[Any, dict[str, Any]], what: str) -> list[str]:
    """One line per missing, unexpected or differing row (every expected column compared)."""
    found: list[str] = []
    for key, want in expected.items():
        have = actual.get(key)
        if have is None:
            found.append(f"{what} {key}: missing")
            continue
        for column, value in want.items():
            if have.get(column) != value:
                found.append(f"{what} {key}: {column} is {have.get(column)!r}, expected {value!r}")
    for key in actual.keys() - expected.keys():
        found.append(f"{what} {key}: not expected")
    return found


def matching_orders(expected_orders: dict[str, dict[str, Any]], expected_items: dict[int, dict[str, Any]],
                    orders: dict[str, dict[str, Any]], items: dict[int, dict[str, Any]]) -> int:
    """How many orders have their wide row and all their lines exactly as expected."""
    lines: dict[str, list[int]] = defaultdict(list)
    for item_id, item in expected_items.items():
        lines[item["order_id"]].append(item_id)
    actual_lines: dict[str, set[int]] = defaultdict(set)
    for item_id, item in items.items():
        actual_lines[item["order_id"]].add(item_id)
    count = 0
    for order_id, want in expected_orders.items():
        if not differences({order_id: want}, {order_id: orders[order_id]} if order_id in orders else {}, "o"):
            wanted = {i: expected_items[i] for i in lines[order_id]}
            have = {i: items[i] for i in actual_lines[order_id]}
            if not differences(wanted, have, "i"):
                count += 1
    return count


#: The online order flow's ADS tables: what ``expected_aggregates`` makes, and all a comparison
#: with it may read (other flows' tables are theirs).
ORDER_ADS = ("ads_order_sales", "ads_order_item_sales", "ads_order_sales_sum")


def expected_aggregates(expected_orders: dict[str, dict[str, Any]],
                        expected_items: dict[int, dict[str, Any]]) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
    """The three ADS tables a history must produce, summed straight from its expected rows:
    paid, not cancelled orders on the day they were paid."""
    counted = {order_id: order for order_id, order in expected_orders.items()
               if order["paid_at"] is not None and order["status"] != 50}
    tables: dict[tuple[str, tuple[Any, ...]], dict[str, Any]] = {}

    def add(table: str, key: tuple[Any, ...], **measures: Any) -> None:
        row = tables.setdefault((table, key), dict.fromkeys(measures, 0))
        for name, value in measures.items():
            row[name] += value

    for order in counted.values():
        day = order["paid_at"].date()
        sales = dict(order_count=1, pay_amount=order["pay_amount"], refund_amount=order["refund_amount"],
                     net_amount=order["pay_amount"] - order["refund_amount"])
        add("ads_order_sales", (day, order["store_id"]), **sales)
        add("ads_order_sales_sum", (day,), **sales)
    for item in expected_items.values():
        owner = counted.get(item["order_id"])
        if owner is not None:
            add("ads_order_item_sales", (owner["paid_at"].date(), item["sku_id"]), quantity=item["quantity"],
                amount=item["amount"], refund_quantity=item["refund_quantity"], refund_amount=item["refund_amount"])
    return tables


def aggregate_differences(expected: dict[tuple[str, tuple[Any, ...]], dict[str, Any]],
                          before: dict[tuple[str, tuple[Any, ...]], dict[str, Any]],
                          after: dict[tuple[str, tuple[Any, ...]], dict[str, Any]]) -> list[str]:
    """Differences between what a run added to the ADS tables (``after - before``, so earlier
    runs in the same warehouse do not matter) and what it should have added."""
    added: dict[str, dict[str, Any]] = {}
    for cell in before.keys() | after.keys():
        was, now = before.get(cell, {}), after.get(cell, {})
        change = {m: now.get(m, 0) - was.get(m, 0) for m in now.keys() | was.keys()}
        if any(change.values()):
            added[f"{cell[0]} {cell[1]}"] = change
    return differences({f"{cell[0]} {cell[1]}": row for cell, row in expected.items()}, added, "ads")
