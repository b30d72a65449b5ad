"""Compare the wide rows in storage with what a history expects."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select

from models.orders import DwdOrder, DwdOrderItem
from models.storage import Storage

#: Chunk of ids per IN (...) query.
READ_CHUNK = 500


def read_rows(storage: Storage, order_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The ``dwd_order`` and ``dwd_order_item`` rows of ``order_ids``."""
    by_database: dict[int, list[str]] = defaultdict(list)
    for order_id in order_ids:
        by_database[storage.database_of(order_id)].append(order_id)
    orders: dict[str, dict[str, Any]] = {}
    items: dict[int, dict[str, Any]] = {}
    for database, ids in by_database.items():
        with storage.read_engine(database).connect() as connection:
            for start in range(0, len(ids), READ_CHUNK):
                chunk = ids[start : start + READ_CHUNK]
                for row in connection.execute(select(DwdOrder.__table__).where(DwdOrder.order_id.in_(chunk))):
                    orders[row.order_id] = dict(row._mapping)
                for row in connection.execute(
                        select(DwdOrderItem.__table__).where(DwdOrderItem.order_id.in_(chunk))):
                    items[row.item_id] = dict(row._mapping)
    return orders, items


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
