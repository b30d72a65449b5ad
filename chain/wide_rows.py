"""Writing a flow's wide rows (its root row per entity and its child rows) under the optimistic
lock, and the snapshot."""

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

from sqlalchemy import Column, Connection, Table, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError

from flows.declaration import Bookkeeping, FlowDeclaration, Looked
from flows.memo import per_flow
from flows.registry import flow_of
from models.changelog import record_changes
from models.digests import Columns, digest_kind, row_digest
from models.orders import DimensionUse, IndexOutbox
from models.storage import Storage
from models.wide import SCHEMAS, WideSchema, schema_of
from models.writes import is_duplicate_key, upsert
from strategies.facts import OrderFacts
from strategies.generators import UTC, Dimensions, apply_operation, shape_of

OUTBOX_TABLE = cast(Table, IndexOutbox.__table__)
USES_TABLE = cast(Table, DimensionUse.__table__)


@dataclass(frozen=True)
class Layout:
    """What writing a flow's wide rows needs, worked out once per flow."""

    schema: WideSchema
    root_columns: tuple[str, ...]
    child_columns: tuple[str, ...]
    #: The columns that come from the entity's source (not dimensions, not bookkeeping), in the
    #: order they are digested (``models.digests``); their kinds: ``digested``.
    source_root: tuple[Column[Any], ...]
    source_child: tuple[Column[Any], ...]
    #: Columns that record the write, not the entity: a merge changing only these is a no-op.
    bookkeeping: frozenset[str]
    #: The optimistic write of a known root row: every column, where it still has the version read.
    update: Any
    _digested: dict[str, tuple[Columns, Columns]] = field(default_factory=dict, compare=False)

    @classmethod
    def of(cls, flow: FlowDeclaration) -> Layout:
        schema = schema_of(flow)
        assert flow.root is not None
        looked = {c.name for wide in flow.wide for c in wide.columns if isinstance(c.origin, Looked)}
        bookkeeping = frozenset(c.name for c in flow.root.columns if isinstance(c.origin, Bookkeeping))
        root, child = schema.root, schema.child
        return cls(
            schema=schema,
            root_columns=tuple(c.name for c in root.columns),
            child_columns=tuple(c.name for c in child.columns) if child is not None else (),
            source_root=tuple(c for c in root.columns if c.name not in bookkeeping | looked),
            source_child=tuple(c for c in child.columns if c.name not in looked) if child is not None else (),
            bookkeeping=bookkeeping,
            update=update(root).where((root.c[schema.entity] == bindparam("key_entity"))
                                      & (root.c.version == bindparam("key_version")))
            .values({c.name: bindparam(c.name) for c in root.columns if c.name != schema.entity}))


    def digested(self, dialect: str) -> tuple[Columns, Columns]:
        """The source columns of the root and of a child row with the kinds they are digested and
        compared as in a database of ``dialect`` (``models.digests.digest_kind``)."""
        found = self._digested.get(dialect)
        if found is None:
            found = self._digested[dialect] = ([(c.name, digest_kind(c, dialect)) for c in self.source_root],
                                               [(c.name, digest_kind(c, dialect)) for c in self.source_child])
        return found


@per_flow
def layout_of(flow: FlowDeclaration) -> Layout:
    return Layout.of(flow)


def source_digest(order: dict[str, Any], items: Iterable[dict[str, Any]], flow: FlowDeclaration, dialect: str) -> int:
    """The digest of an entity's source columns and its child rows, as a database of ``dialect``
    keeps them: the row's digest plus its children's (``models.digests``), so the database can add
    up the same from the stored rows."""
    root, child = layout_of(flow).digested(dialect)
    return row_digest(root, order) + sum(row_digest(child, item) for item in items)


class OptimisticLockConflict(Exception):
    """Another writer changed the wide row between our read and our write."""


def _json_default(value: Any) -> str:
    if isinstance(value, Decimal | dt.date | dt.datetime):
        return str(value) if isinstance(value, Decimal) else value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> str:
    return json.dumps(value, default=_json_default, sort_keys=True)


def read_wide_rows(connection: Connection, order_id: str) -> tuple[dict[str, Any] | None, dict[Any, dict[str, Any]]]:
    orders, items = read_wide(connection, [order_id])
    return orders.get(order_id), items.get(order_id, {})


#: Chunk of ids per IN (...) query.
READ_CHUNK = 500


def _by_flow(order_ids: Iterable[str]) -> dict[str, tuple[FlowDeclaration, list[str]]]:
    groups: dict[str, tuple[FlowDeclaration, list[str]]] = {}
    for order_id in order_ids:
        flow = flow_of(order_id)
        groups.setdefault(flow.name, (flow, []))[1].append(order_id)
    return groups


def entity_values(layout: Layout, order_ids: list[str]) -> list[Any]:
    """Entity ids (text in task keys, with the flow's prefix) as the root's key column holds them."""
    cut = len(layout.schema.flow.entity_prefix)
    kind = layout.schema.root.c[layout.schema.entity].type
    keys = [order_id[cut:] for order_id in order_ids]
    if getattr(kind, "python_type", str) is not int:
        return keys
    # An id whose key is not a number names no row of an integer-keyed flow.
    return [int(key) for key in keys if key.lstrip("-").isdigit()]


def entity_id(flow: FlowDeclaration, key: Any) -> str:
    """The entity id of a wide row's key value."""
    return flow.entity_prefix + str(key)


def read_wide(connection: Connection, order_ids: list[str]) -> tuple[dict[str, dict[str, Any]],
                                                                     dict[str, dict[Any, dict[str, Any]]]]:
    """The root wide row and the child rows (by their key) of each of ``order_ids`` that has
    them, in two statements per READ_CHUNK entities of a flow."""
    orders: dict[str, dict[str, Any]] = {}
    items: dict[str, dict[Any, dict[str, Any]]] = defaultdict(dict)
    for flow, ids in _by_flow(order_ids).values():
        layout = layout_of(flow)
        schema = layout.schema
        for start in range(0, len(ids), READ_CHUNK):
            chunk = entity_values(layout, ids[start : start + READ_CHUNK])
            for row in connection.execute(select(schema.root).where(schema.root.c[schema.entity].in_(chunk))):
                orders[entity_id(flow, row._mapping[schema.entity])] = dict(row._mapping)
            if schema.child is None:
                continue
            child, entity, key = schema.child, cast(str, schema.child_entity), cast(str, schema.child_key)
            for row in connection.execute(select(child).where(child.c[entity].in_(chunk))):
                items[entity_id(flow, row._mapping[entity])][row._mapping[key]] = dict(row._mapping)
    return orders, dict(items)


def read_orders(storage: Storage, order_ids: list[str]) -> tuple[dict[str, dict[str, Any]], dict[Any, dict[str, Any]]]:
    """The root wide rows and the child rows of ``order_ids``."""
    orders: dict[str, dict[str, Any]] = {}
    items: dict[Any, dict[str, Any]] = {}
    for database, shards in storage.orders_by_database(order_ids).items():
        with storage.read_engine(database).connect() as connection:
            found, lines = read_wide(connection, list(shards))
        orders.update(found)
        for order_lines in lines.values():
            items.update(order_lines)
    return orders, items


@dataclass
class Merge:
    """One entity's wide rows after the operations of one chain, what they were, and the
    snapshot each operation leaves."""

    order: dict[str, Any]
    items: dict[Any, dict[str, Any]]
    current: dict[str, Any] | None
    changed: bool
    snapshots: list[dict[str, Any]] = field(default_factory=list)
    #: The child rows as read, for the changelog's before-image.
    current_items: dict[Any, dict[str, Any]] = field(default_factory=dict)
    flow: FlowDeclaration | None = None
    #: The entity id, as task keys carry it.
    order_id: str = ""

    @property
    def flow_name(self) -> str:
        return _flow_of(self).name


def merge_operations(current: dict[str, Any] | None, current_items: dict[Any, dict[str, Any]], facts: OrderFacts,
                     operations: list[tuple[str, int]], dims: Dimensions, now: dt.datetime,
                     business_zone: ZoneInfo = UTC) -> Merge:
    """Apply ``(operation, task version)`` pairs, in state-machine order, to the entity's wide
    rows as read: each as if it had been merged and written on its own (a change gives the row
    its next version, a re-run that changes nothing keeps it), each leaving its snapshot.
    Nothing is written here (``write_merges``)."""
    flow = flow_of(facts.order_id)
    shape, layout = shape_of(flow), layout_of(flow)
    entity = layout.schema.entity
    order = dict(current) if current else shape.new_row(shape.root) | {
        entity: entity_values(layout, [facts.order_id])[0]}
    items = copy.deepcopy(current_items)
    merge = Merge(order, items, current, changed=False, current_items=current_items, flow=flow,
                  order_id=facts.order_id)
    version = current["version"] if current else 0
    child_key = layout.schema.child_key
    for operation, task_version in operations:
        substance, lines = _substance(layout, order), _normal_items(layout, items)
        apply_operation(flow, operation, order, items, facts, dims, business_zone)
        if version == 0 or _substance(layout, order) != substance or _normal_items(layout, items) != lines:
            version += 1
            order["updated_at"] = now
            merge.changed = True
        order["version"] = version
        merge.snapshots.append(dict(
            order_id=facts.order_id, operation_type=operation, task_version=task_version, order_row=to_json(order),
            item_rows=to_json(sorted(items.values(), key=lambda i: i[child_key]) if child_key else []),
            taken_at=now))
    return merge


def write_merges(connection: Connection, merges: list[Merge], *, changelog: bool, outbox: bool = False) -> None:
    """Write the changed wide rows (each under the optimistic lock: OptimisticLockConflict when
    another writer got there first; the caller reads again) and every snapshot, in a few
    statements for the whole batch.  ``changelog`` (``Settings.changelog_outbox``; required, so
    no caller can leave changes out of the changelog by forgetting it): also record each change,
    with its before and after images, for the changelog relay (``models.changelog``);
    ``outbox``: also each changed entity for the search index, in the same transaction
    (``models.orders.IndexOutbox``)."""
    changed = [merge for merge in merges if merge.changed]
    by_flow: dict[str, list[Merge]] = defaultdict(list)
    for merge in changed:
        by_flow[_flow_of(merge).name].append(merge)
    for group in by_flow.values():
        _write_orders(connection, group)
    if changelog:
        record_changes(connection, changed)
    # Only the flows that declare an index document have one to keep up to date.
    indexed = [m for m in changed if _flow_of(m).index is not None]
    if outbox and indexed:
        # Due when written: the chain's index task sends it at once, the outbox scan if that fails.
        upsert(connection, OUTBOX_TABLE, ("order_id",), [
            dict(order_id=m.order_id, version=m.order["version"], due_at=m.order["updated_at"], attempts=0,
                 last_error=None)
            for m in sorted(indexed, key=lambda m: m.order_id)],
            # The inserted values, not literals: a bound value after ON DUPLICATE KEY UPDATE
            # makes PyMySQL's executemany fail ("format requires a mapping") for several rows.
            lambda new: {"version": new.version, "due_at": new.due_at, "attempts": new.attempts,
                         "last_error": new.last_error})
    _record_dimension_uses(connection, changed)
    for group in by_flow.values():
        layout = layout_of(_flow_of(group[0]))
        child = layout.schema.child
        if child is None:
            continue
        entity = cast(str, layout.schema.child_entity)
        connection.execute(delete(child).where(child.c[entity].in_(
            entity_values(layout, [m.order_id for m in group]))))
        lines = [_item_values(layout, item) for merge in group for item in merge.items.values()]
        if lines:
            connection.execute(insert(child), lines)
    snapshots: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for merge in merges:
        snapshots[_flow_of(merge).name] += merge.snapshots
    for flow_name, rows in snapshots.items():
        table = SCHEMAS[flow_name].snapshots
        if table is not None and rows:
            upsert(connection, table, ("order_id", "operation_type"), rows, lambda new: {
                name: new[name] for name in ("task_version", "order_row", "item_rows", "taken_at")})


def dimension_uses(merge: Merge) -> set[tuple[str, str]]:
    """The (dimension, key) entries of refreshing look-ups (``Lookup.refreshes``) the entity's
    merged wide rows use."""
    flow = _flow_of(merge)
    uses: set[tuple[str, str]] = set()
    for wide in flow.wide:
        rows = [merge.order] if wide is flow.root else list(merge.items.values())
        for lookup in wide.lookups:
            if lookup.refreshes:
                uses.update((lookup.dimension, str(row[lookup.by])) for row in rows if row.get(lookup.by) is not None)
    return uses


def _record_dimension_uses(connection: Connection, merges: list[Merge]) -> None:
    """Keep the reverse index of refreshing dimensions (``models.orders.DimensionUse``) in the
    merge's transaction: each changed entity's entries now, then drop the ones it no longer uses."""
    if not merges:
        return
    rows = [dict(dimension=dimension, dim_key=key, order_id=merge.order_id, used_at=merge.order["updated_at"])
            for merge in sorted(merges, key=lambda m: m.order_id) for dimension, key in sorted(dimension_uses(merge))]
    if rows:
        upsert(connection, USES_TABLE, ("dimension", "dim_key", "order_id"), rows,
               lambda new: {"used_at": new.used_at})
    # Kept to the millisecond (MariaDB truncates DATETIME(3), others keep more): anything older
    # than the millisecond of this write is a key the entity no longer uses.
    at = merges[0].order["updated_at"]
    at = at.replace(microsecond=at.microsecond // 1000 * 1000)
    connection.execute(delete(USES_TABLE).where(USES_TABLE.c.order_id.in_([m.order_id for m in merges])
                                                & (USES_TABLE.c.used_at < at)))


def _flow_of(merge: Merge) -> FlowDeclaration:
    return merge.flow if merge.flow is not None else flow_of(merge.order_id)


def merge_order_rows(connection: Connection, facts: OrderFacts, operation: str, task_version: int,
                     dims: Dimensions, now: dt.datetime, business_zone: ZoneInfo = UTC, *, changelog: bool) -> bool:
    """Apply ``operation`` to the entity's wide rows and write them and the snapshot (and, with
    ``changelog``, the change for the changelog relay: ``write_merges``).

    Returns False when the rows were already up to date (nothing but the snapshot written).
    Raises OptimisticLockConflict when another writer got there first; the caller re-reads.
    """
    current, current_items = read_wide_rows(connection, facts.order_id)
    merge = merge_operations(current, current_items, facts, [(operation, task_version)], dims, now, business_zone)
    write_merges(connection, [merge], changelog=changelog)
    return merge.changed


def _substance(layout: Layout, order: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in order.items() if k not in layout.bookkeeping}


def _normal_items(layout: Layout, items: dict[Any, dict[str, Any]]) -> dict[Any, dict[str, Any]]:
    return {key: {c: item.get(c) for c in layout.child_columns} for key, item in items.items()}


def _item_values(layout: Layout, item: dict[str, Any]) -> dict[str, Any]:
    return {c: item.get(c) for c in layout.child_columns}


def _write_orders(connection: Connection, merges: list[Merge]) -> None:
    """Insert the new root rows of one flow in one statement and update the known ones in one
    batch, each only if it still has the version read; either way a row's version grows (by the
    number of changes a chain merged at once, at least one).  OptimisticLockConflict when
    another writer got to any of them first: the caller rolls back and reads again."""
    flow = _flow_of(merges[0])
    layout = layout_of(flow)
    entity = layout.schema.entity
    new: list[dict[str, Any]] = []
    known: list[dict[str, Any]] = []
    for merge in merges:
        order, current = merge.order, merge.current
        order["version"] = max(order.get("version") or 0, (current["version"] if current else 0) + 1)
        values = {c: order.get(c) for c in layout.root_columns}
        if "source_digest" in values:
            values["source_digest"] = source_digest(order, merge.items.values(), flow, connection.dialect.name)
        if current is None:
            new.append(values)
        else:
            known.append(values | {"key_entity": order[entity], "key_version": current["version"]})
    if new:
        try:
            connection.execute(insert(layout.schema.root), new)
        except IntegrityError as error:
            if not is_duplicate_key(error):
                raise
            raise OptimisticLockConflict(f"{len(new)} new rows of {flow.name}, one written meanwhile") from error
    if known and connection.execute(layout.update, known).rowcount != len(known):
        raise OptimisticLockConflict(f"{len(known)} known rows of {flow.name}, one changed meanwhile")
