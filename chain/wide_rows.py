"""Writing ``dwd_order``/``dwd_order_item`` under the optimistic lock, and the snapshot."""

from __future__ import annotations

import copy
import datetime as dt
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, cast
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from flows.registry import flow_of
from models.changelog import record_changes
from models.digests import Columns, kind_of, row_digest
from models.orders import DwdOrder, DwdOrderItem, IndexOutbox, OrderSnapshot
from models.storage import Storage
from models.writes import is_duplicate_key, upsert
from strategies.facts import OrderFacts
from strategies.generators import UTC, Dimensions, apply_operation, shape_of

ORDER_TABLE = cast(Table, DwdOrder.__table__)
SNAPSHOT_TABLE = cast(Table, OrderSnapshot.__table__)
OUTBOX_TABLE = cast(Table, IndexOutbox.__table__)
ITEM_TABLE = cast(Table, DwdOrderItem.__table__)
ORDER_COLUMNS = [c.name for c in DwdOrder.__table__.columns]
ITEM_COLUMNS = [c.name for c in DwdOrderItem.__table__.columns]
#: Columns that record the write, not the order: a merge changing only these is a no-op.
BOOKKEEPING = {"version", "updated_at", "last_operation", "source_digest"}
#: Columns looked up in dimensions: the dimension, not the order's source, decides them.
DIMENSION_COLUMNS = frozenset({"store_name", "city", "region", "sku_name", "category"})
#: The columns that come from the order's source, in the order they are digested.
SOURCE_ORDER_COLUMNS: Columns = [(c.name, kind_of(c)) for c in ORDER_TABLE.columns
                                 if c.name not in BOOKKEEPING | DIMENSION_COLUMNS]
SOURCE_ITEM_COLUMNS: Columns = [(c.name, kind_of(c)) for c in ITEM_TABLE.columns if c.name not in DIMENSION_COLUMNS]


def source_digest(order: dict[str, Any], items: Iterable[dict[str, Any]]) -> int:
    """The digest of an order's source columns and its lines: the row's digest plus its lines'
    (``models.digests``), so a database can add up the same from the stored rows."""
    return row_digest(SOURCE_ORDER_COLUMNS, order) + sum(row_digest(SOURCE_ITEM_COLUMNS, item) for item in items)


class OptimisticLockConflict(Exception):
    """Another writer changed the wide row between our read and our write."""


def _json_default(value: Any) -> str:
    if isinstance(value, Decimal | dt.date | dt.datetime):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True)


def read_wide_rows(connection: Connection, order_id: str) -> tuple[dict[str, Any] | None, dict[int, dict[str, Any]]]:
    orders, items = read_wide(connection, [order_id])
    return orders.get(order_id), items.get(order_id, {})


#: Chunk of ids per IN (...) query.
READ_CHUNK = 500


def read_wide(connection: Connection, order_ids: list[str]) -> tuple[dict[str, dict[str, Any]],
                                                                     dict[str, dict[int, dict[str, Any]]]]:
    """The ``dwd_order`` row and the ``dwd_order_item`` rows (by item id) of each of ``order_ids``
    that has them, in two statements per READ_CHUNK orders."""
    orders: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
    for start in range(0, len(order_ids), READ_CHUNK):
        chunk = order_ids[start : start + READ_CHUNK]
        for row in connection.execute(select(ORDER_TABLE).where(DwdOrder.order_id.in_(chunk))):
            orders[row.order_id] = dict(row._mapping)
        for row in connection.execute(select(ITEM_TABLE).where(DwdOrderItem.order_id.in_(chunk))):
            items[row.order_id][row.item_id] = dict(row._mapping)
    return orders, dict(items)


def read_orders(storage: Storage, order_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[int, dict[str, Any]]]:
    """The ``dwd_order`` and ``dwd_order_item`` rows of ``order_ids``."""
    orders: dict[str, dict[str, Any]] = {}
    items: dict[int, dict[str, Any]] = {}
    for database, shards in storage.orders_by_database(order_ids).items():
        with storage.read_engine(database).connect() as connection:
            found, lines = read_wide(connection, list(shards))
        orders.update(found)
        for order_lines in lines.values():
            items.update(order_lines)
    return orders, items


def _substance(order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if k not in BOOKKEEPING}


@dataclass
class Merge:
    """One order's wide rows after the operations of one chain, what they were, and the
    snapshot each operation leaves."""

    order: dict[str, Any]
    items: dict[int, dict[str, Any]]
    current: dict[str, Any] | None
    changed: bool
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    #: The lines as read, for the changelog's before-image.
    current_items: dict[int, dict[str, Any]] = field(default_factory=dict)


def merge_operations(current: dict[str, Any] | None, current_items: dict[int, dict[str, Any]], facts: OrderFacts,
                     operations: list[tuple[str, int]], dims: Dimensions, now: dt.datetime,
                     business_zone: ZoneInfo = UTC) -> Merge:
    """Apply ``(operation, task version)`` pairs, in state-machine order, to the order's wide rows
    as read: each as if it had been merged and written on its own (a change gives the row its
    next version, a re-run that changes nothing keeps it), each leaving its snapshot.  Nothing
    is written here (``write_merges``)."""
    flow = flow_of(facts.order_id)
    shape = shape_of(flow)
    order = dict(current) if current else shape.new_row(shape.root) | {shape.root.key[0]: facts.order_id}
    items = copy.deepcopy(current_items)
    merge = Merge(order, items, current, changed=False, current_items=current_items)
    version = current["version"] if current else 0
    for operation, task_version in operations:
        substance, lines = _substance(order), _normal_items(items)
        apply_operation(flow, operation, order, items, facts, dims, business_zone)
        if version == 0 or _substance(order) != substance or _normal_items(items) != lines:
            version += 1
            order["updated_at"] = now
            merge.changed = True
        order["version"] = version
        merge.snapshots.append(dict(
            order_id=facts.order_id, operation_type=operation, task_version=task_version, order_row=to_json(order),
            item_rows=to_json(sorted(items.values(), key=lambda i: i["item_id"])), taken_at=now))
    return merge


def write_merges(connection: Connection, merges: list[Merge], *, changelog: bool, outbox: bool = False) -> None:
    """Write the changed wide rows (each under the optimistic lock: OptimisticLockConflict when
    another writer got there first; the caller reads again) and every snapshot, in a few
    statements for the whole batch.  ``changelog`` (``Settings.changelog_outbox``; required, so
    no caller can leave changes out of the changelog by forgetting it): also record each change,
    with its before and after images, for the changelog relay (``models.changelog``);
    ``outbox``: also each changed order for the search index, in the same transaction
    (``models.orders.IndexOutbox``)."""
    changed = [merge for merge in merges if merge.changed]
    _write_orders(connection, changed)
    if changelog:
        record_changes(connection, changed)
    if outbox and changed:
        # Due when written: the chain's index task sends it at once, the outbox scan if that fails.
        upsert(connection, OUTBOX_TABLE, ("order_id",), [
            dict(order_id=m.order["order_id"], version=m.order["version"], due_at=m.order["updated_at"], attempts=0,
                 last_error=None)
            for m in sorted(changed, key=lambda m: m.order["order_id"])],
            lambda new: {"version": new.version, "due_at": new.due_at, "attempts": 0, "last_error": None})
    if changed:
        connection.execute(delete(ITEM_TABLE).where(DwdOrderItem.order_id.in_([m.order["order_id"] for m in changed])))
        lines = [_item_values(item) for merge in changed for item in merge.items.values()]
        if lines:
            connection.execute(insert(ITEM_TABLE), lines)
    snapshots = [snapshot for merge in merges for snapshot in merge.snapshots]
    if snapshots:
        upsert(connection, SNAPSHOT_TABLE, ("order_id", "operation_type"), snapshots, lambda new: {
            name: new[name] for name in ("task_version", "order_row", "item_rows", "taken_at")})


def merge_order_rows(connection: Connection, facts: OrderFacts, operation: str, task_version: int,
                     dims: Dimensions, now: dt.datetime, business_zone: ZoneInfo = UTC, *, changelog: bool) -> bool:
    """Apply ``operation`` to the order's wide rows and write them and the snapshot (and, with
    ``changelog``, the change for the changelog relay: ``write_merges``).

    Returns False when the rows were already up to date (nothing but the snapshot written).
    Raises OptimisticLockConflict when another writer got there first; the caller re-reads.
    """
    current, current_items = read_wide_rows(connection, facts.order_id)
    merge = merge_operations(current, current_items, facts, [(operation, task_version)], dims, now, business_zone)
    write_merges(connection, [merge], changelog=changelog)
    return merge.changed


def _normal_items(items: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    return {item_id: {c: item.get(c) for c in ITEM_COLUMNS} for item_id, item in items.items()}


def _item_values(item: dict[str, Any]) -> dict[str, Any]:
    return {c: item.get(c) for c in ITEM_COLUMNS}


#: The optimistic write of a known wide row: every column, where it still has the version read.
_UPDATE_ORDER = (
    update(ORDER_TABLE)
    .where((DwdOrder.order_id == bindparam("key_order_id")) & (DwdOrder.version == bindparam("key_version")))
    .values({c: bindparam(c) for c in ORDER_COLUMNS if c != "order_id"}))


def _write_orders(connection: Connection, merges: list[Merge]) -> None:
    """Insert the new wide rows in one statement and update the known ones in one batch, each
    only if it still has the version read; either way a row's version grows (by the number of
    changes a chain merged at once, at least one).  OptimisticLockConflict when another writer
    got to any of them first: the caller rolls back and reads again."""
    new: list[dict[str, Any]] = []
    known: list[dict[str, Any]] = []
    for merge in merges:
        order, current = merge.order, merge.current
        order["version"] = max(order.get("version") or 0, (current["version"] if current else 0) + 1)
        values = {c: order.get(c) for c in ORDER_COLUMNS}
        values["source_digest"] = source_digest(order, merge.items.values())
        if current is None:
            new.append(values)
        else:
            known.append(values | {"key_order_id": order["order_id"], "key_version": current["version"]})
    if new:
        try:
            connection.execute(insert(ORDER_TABLE), new)
        except IntegrityError as error:
            if not is_duplicate_key(error):
                raise
            raise OptimisticLockConflict(f"{len(new)} new orders, one written meanwhile") from error
    if known and connection.execute(_UPDATE_ORDER, known).rowcount != len(known):
        raise OptimisticLockConflict(f"{len(known)} known orders, one changed meanwhile")
