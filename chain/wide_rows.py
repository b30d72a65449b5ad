"""Writing ``dwd_order``/``dwd_order_item`` under the optimistic lock, and the snapshot."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections import defaultdict
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, delete, insert, select, update

from flows.state_machine import STATUS_AFTER
from models.orders import DwdOrder, DwdOrderItem, OrderSnapshot
from models.storage import Storage
from models.writes import insert_if_absent
from strategies import GENERATORS
from strategies.facts import OrderFacts
from strategies.generators import UTC, Dimensions, apply_operation

ORDER_TABLE = cast(Table, DwdOrder.__table__)
SNAPSHOT_TABLE = cast(Table, OrderSnapshot.__table__)
ORDER_COLUMNS = [c.name for c in DwdOrder.__table__.columns]
ITEM_COLUMNS = [c.name for c in DwdOrderItem.__table__.columns]
#: Columns that record the write, not the order: a merge changing only these is a no-op.
BOOKKEEPING = {"version", "updated_at", "last_operation"}


class OptimisticLockConflict(Exception):
    """Another writer changed the wide row between our read and our write."""


def _json_default(value: Any) -> str:
    if isinstance(value, Decimal | dt.date | dt.datetime):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True)


def read_wide_rows(connection: Connection, order_id: str) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    row = connection.execute(select(DwdOrder.__table__).where(DwdOrder.order_id == order_id)).first()
    items = connection.execute(select(DwdOrderItem.__table__).where(DwdOrderItem.order_id == order_id))
    return (dict(row._mapping) if row else None), {i.item_id: dict(i._mapping) for i in items}


#: Chunk of ids per IN (...) query.
READ_CHUNK = 500


def read_orders(storage: Storage, order_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
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


def _substance(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if k not in BOOKKEEPING}


def merge_order_rows(connection: Connection, facts: OrderFacts, operation: str, task_version: int,
                     dims: Dimensions, now: dt.datetime, business_zone: ZoneInfo = UTC) -> bool:
    """Apply ``operation`` to the order's wide rows and write them and the snapshot.

    Returns False when the rows were already up to date (nothing but the snapshot written).
    Raises OptimisticLockConflict when another writer got there first; the caller re-reads.
    """
    current, current_items = read_wide_rows(connection, facts.order_id)
    order = dict(current) if current else {c: None for c in ORDER_COLUMNS} | {
        "order_id": facts.order_id, "status": 0, "refund_amount": Decimal("0.00"), "refund_count": 0}
    items = copy.deepcopy(current_items)
    apply_operation(GENERATORS[operation], STATUS_AFTER.get(operation), operation, order, items, facts, dims,
                    business_zone)
    changed = (current is None or _substance(order) != _substance(current)
               or _normal_items(items) != _normal_items(current_items))
    if changed:
        order["updated_at"] = now
        _write_order(connection, order, current)
        connection.execute(delete(DwdOrderItem).where(DwdOrderItem.order_id == facts.order_id))
        if items:
            connection.execute(insert(DwdOrderItem), [_item_values(item) for item in items.values()])
    _write_snapshot(connection, order, items, operation, task_version, now)
    return changed


def _normal_items(items: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {item_id: {c: item.get(c) for c in ITEM_COLUMNS} for item_id, item in items.items()}


def _item_values(item: dict[str, Any]) -> dict[str, Any]:
    return {c: item.get(c) for c in ITEM_COLUMNS}


def _write_order(connection: Connection, order: dict[str, Any], current: dict[str, Any] | None) -> None:
    table = ORDER_TABLE
    if current is None:
        order["version"] = 1
        if not insert_if_absent(connection, table, {c: order.get(c) for c in ORDER_COLUMNS}):
            raise OptimisticLockConflict(order["order_id"])
        return
    order["version"] = current["version"] + 1
    result = connection.execute(
        update(table)
        .where((DwdOrder.order_id == order["order_id"]) & (DwdOrder.version == current["version"]))
        .values({c: order.get(c) for c in ORDER_COLUMNS if c != "order_id"})
    )
    if result.rowcount != 1:
        raise OptimisticLockConflict(order["order_id"])


def _write_snapshot(connection: Connection, order: dict[str, Any], items: dict[int, dict[str, Any]],
                    operation: str, task_version: int, now: dt.datetime) -> None:
    values = dict(task_version=task_version, order_row=to_json(order),
                  item_rows=to_json(sorted(items.values(), key=lambda i: i["item_id"])), taken_at=now)
    where = (OrderSnapshot.order_id == order["order_id"]) & (OrderSnapshot.operation_type == operation)
    if connection.execute(update(OrderSnapshot).where(where).values(**values)).rowcount:
        return
    if not insert_if_absent(connection, SNAPSHOT_TABLE, dict(order_id=order["order_id"], operation_type=operation,
                                                             **values)):
        connection.execute(update(OrderSnapshot).where(where).values(**values))
