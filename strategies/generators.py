"""The wide rows an operation leaves, read from the flow's declaration (``WideTable`` columns and
where each comes from).

A merge of one operation works on the entity's root wide row and the rows of its child wide
table (read under the optimistic lock) and the entity's facts, in three passes:

1. the columns that come from a source (``Copy``, ``Sum``, ``Chosen``), but only those whose
   table raises this operation, so an operation's columns change only once its own completeness
   rules hold (a refund's amount waits for REFUND); the child rows follow their source rows
   when that source raises it;
2. the status the operation reaches (the row keeps the highest) and ``last_operation``;
3. what derives from the rest at every merge: dimension look-ups (``Looked``), the business day
   (``BusinessDay``), a child's copies of its parent's columns (``Parent``).

``version``, ``updated_at`` and ``source_digest`` are the writer's (``chain.wide_rows``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from flows.declaration import (
    BusinessDay,
    Chosen,
    Column,
    Copy,
    FlowDeclaration,
    Looked,
    Parent,
    Status,
    Sum,
    WideTable,
)
from flows.rules import all_hold
from inputs.columns import ColumnType, column_type
from strategies.checkers import same_value
from strategies.facts import OrderFacts

Row = dict[str, Any]
UTC = ZoneInfo("UTC")


class Dimensions(Protocol):
    def get(self, dimension: str, key: Any) -> Mapping[str, Any]: ...


def business_date(moment: dt.datetime | None, zone: ZoneInfo) -> dt.date | None:
    """The business day of a stored (UTC) time, where the business keeps its days."""
    if moment is None:
        return None
    return moment.replace(tzinfo=dt.UTC).astimezone(zone).date()


def wide_value(kind: ColumnType, value: Any) -> Any:
    """A stored source value (``inputs.columns``: amounts as text, times as ISO text), or a
    dimension attribute (text), as the wide column holds it."""
    if value is None:
        return None
    if kind.kind == "decimal":
        return Decimal(str(value)).quantize(Decimal(1).scaleb(-kind.scale))
    if kind.kind in ("datetime", "timestamp"):
        return value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
    if kind.kind == "date":
        return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
    if kind.kind == "int":
        return int(value)
    return value if isinstance(value, str) else str(value)


def _zero(kind: ColumnType) -> Any:
    return wide_value(kind, 0) if kind.kind in ("decimal", "int") else None


@dataclass(frozen=True)
class Shape:
    """What a merge needs of a flow's declaration, worked out once."""

    flow: FlowDeclaration
    root: WideTable
    child: WideTable | None
    types: Mapping[str, Mapping[str, ColumnType]]
    #: Operation -> the tables (sources and business writes) that raise it.
    raised_by: Mapping[str, frozenset[str]]
    status_after: Mapping[str, int]
    #: Source table -> its key column.
    keys: Mapping[str, str]

    @classmethod
    def of(cls, flow: FlowDeclaration) -> Shape:
        if flow.root is None:
            raise ValueError(f"flow {flow.name!r} has no wide table")
        children = [wide for wide in flow.wide[1:] if wide.parent == flow.root.name]
        if len(children) > 1 or len(flow.wide) > 1 + len(children):
            raise ValueError(f"flow {flow.name!r}: the engine merges one root wide table and at most one child")
        raised: dict[str, set[str]] = {operation.name: set() for operation in flow.operations}
        for rule in flow.raises:
            for operation in rule.operations:
                raised[operation].add(rule.table)
        return cls(
            flow=flow, root=flow.root, child=children[0] if children else None,
            types={wide.name: {c.name: column_type(c.type) for c in wide.columns} for wide in flow.wide},
            raised_by={name: frozenset(tables) for name, tables in raised.items()},
            status_after={o.name: o.status for o in flow.operations if o.status is not None},
            keys={source.name: source.key[0] for source in flow.sources},
        )

    def new_row(self, wide: WideTable) -> Row:
        """A wide row no merge has written yet: sums at zero, the status at 0."""
        types = self.types[wide.name]
        row: Row = dict.fromkeys(types)
        for column in wide.columns:
            if isinstance(column.origin, Sum) and not column.origin.null_when_empty:
                row[column.name] = _zero(types[column.name])
            elif isinstance(column.origin, Status):
                row[column.name] = 0
        return row

    def child_key(self, row: Mapping[str, Any]) -> Any:
        """The child wide row's key for a row of its source table."""
        assert self.child is not None and self.child.rows_from is not None
        name = self.child.key[0]
        origin = self.child.column(name).origin  # type: ignore[union-attr]
        column = origin.column if isinstance(origin, Copy) else self.keys[self.child.rows_from]
        return wide_value(self.types[self.child.name][name], row.get(column))


_SHAPES: dict[str, Shape] = {}


def shape_of(flow: FlowDeclaration) -> Shape:
    shape = _SHAPES.get(flow.name)
    if shape is None or shape.flow is not flow:
        shape = _SHAPES[flow.name] = Shape.of(flow)
    return shape


def _rows(facts: OrderFacts, table: str, when: Iterable[Any] = ()) -> list[Row]:
    predicates = tuple(when)
    return [row for row in facts.all(table) if all_hold(predicates, row)]


def _sum(origin: Sum, kind: ColumnType, facts: OrderFacts, per_row: Any = None, shape: Shape | None = None) -> Any:
    rows = _rows(facts, origin.table, origin.when)
    if origin.through is not None:
        through = origin.through
        passing = {row.get(through.key) for row in _rows(facts, through.table, through.when)}
        rows = [row for row in rows if row.get(through.key) in passing]
    if origin.per_row is not None:
        assert shape is not None and shape.child is not None
        key_type = shape.types[shape.child.name][shape.child.key[0]]
        rows = [row for row in rows if wide_value(key_type, row.get(origin.per_row)) == per_row]
    if not rows and origin.null_when_empty:
        return None
    if origin.column is None:
        return len(rows)
    total = _zero(kind)
    for row in rows:
        total += wide_value(kind, row.get(origin.column) or 0)
    return total


def _chosen(origin: Chosen, kind: ColumnType, facts: OrderFacts, row: Row) -> Any:
    rows = _rows(facts, origin.table, origin.when)
    if origin.match is not None:
        mine, wide_column = origin.match
        rows = [r for r in rows if same_value(r.get(mine), row.get(wide_column))] or rows
    if not rows:
        return None
    return wide_value(kind, max(rows, key=lambda r: r.get(origin.newest_by) or "").get(origin.column))


def _from_sources(shape: Shape, wide: WideTable, row: Row, own: Row | None, facts: OrderFacts,
                  writes: frozenset[str], key: Any = None) -> None:
    """Pass 1 on one wide row: its columns from the tables that raise this operation (``own``:
    a child row's own source row).  Chosen last: it may compare with a column copied here."""
    types = shape.types[wide.name]
    for column in sorted(wide.columns, key=lambda c: isinstance(c.origin, Chosen)):
        origin, kind = column.origin, types[column.name]
        if not isinstance(origin, Copy | Sum | Chosen) or origin.table not in writes:
            continue
        if isinstance(origin, Copy):
            source = own if own is not None and origin.table == wide.rows_from else _copied_row(
                shape, facts, origin.table, key)
            if source is None and column.name in wide.key:
                continue  # the entity's own key stays
            row[column.name] = None if source is None else wide_value(kind, source.get(origin.column))
        elif isinstance(origin, Sum):
            row[column.name] = _sum(origin, kind, facts, key, shape)
        else:
            row[column.name] = _chosen(origin, kind, facts, row)


def _copied_row(shape: Shape, facts: OrderFacts, table: str, key: Any) -> Row | None:
    """The entity's row of ``table`` (the first live one), or for a child wide row the row of
    ``table`` with the child's key (an entry's finance entry)."""
    rows = facts.all(table)
    if key is None:
        return rows[0] if rows else None
    column = shape.keys[table]
    kind = shape.types[shape.child.name][shape.child.key[0]]  # type: ignore[union-attr]
    return next((row for row in rows if wide_value(kind, row.get(column)) == key), None)


def _derived(shape: Shape, wide: WideTable, row: Row, parent: Row | None, dims: Dimensions, zone: ZoneInfo) -> None:
    """Pass 3 on one wide row: look-ups, the business day, the parent's columns."""
    types = shape.types[wide.name]
    looked = {lookup.dimension: dims.get(lookup.dimension, row.get(lookup.by)) for lookup in wide.lookups}
    for column in wide.columns:
        origin = column.origin
        if isinstance(origin, Looked):
            row[column.name] = wide_value(types[column.name], looked[origin.dimension].get(origin.attribute))
        elif isinstance(origin, BusinessDay):
            moment = next((row[name] for name in origin.columns if row.get(name) is not None), None)
            row[column.name] = business_date(moment, zone)
        elif isinstance(origin, Parent) and parent is not None:
            row[column.name] = parent.get(origin.column)


def _column_of(wide: WideTable, kind: type) -> Column | None:
    return next((c for c in wide.columns if isinstance(c.origin, kind)), None)


def apply_operation(flow: FlowDeclaration, operation: str, order: Row, items: dict[Any, Row], facts: OrderFacts,
                    dims: Dimensions, zone: ZoneInfo = UTC) -> None:
    """Apply one operation to an entity's root wide row ``order`` and its child rows ``items``
    (by key), in place, as the module docstring describes."""
    shape = shape_of(flow)
    writes = shape.raised_by[operation]
    _from_sources(shape, shape.root, order, None, facts, writes)
    child = shape.child
    if child is not None and child.rows_from is not None:
        if child.rows_from in writes:
            current = {shape.child_key(row): row for row in facts.all(child.rows_from)}
            for key in list(items):
                if key not in current:
                    del items[key]
            for key in current:
                items.setdefault(key, shape.new_row(child))
        for key, item in items.items():
            own = _copied_row(shape, facts, child.rows_from, key)
            _from_sources(shape, child, item, own, facts, writes, key)
    status = _column_of(shape.root, Status)
    if status is not None and operation in shape.status_after:
        order[status.name] = max(order.get(status.name) or 0, shape.status_after[operation])
    if shape.root.column("last_operation") is not None:
        order["last_operation"] = operation
    _derived(shape, shape.root, order, None, dims, zone)
    if child is not None:
        for item in items.values():
            _derived(shape, child, item, order, dims, zone)


def dimension_keys(flow: FlowDeclaration, facts: OrderFacts) -> list[tuple[str, Any]]:
    """The (dimension, key) entries a merge of the entity will look up, to fetch them at once:
    each look-up's ``by`` column followed to the source column it is copied from."""
    shape = shape_of(flow)
    entries: list[tuple[str, Any]] = []
    for wide in flow.wide:
        for lookup in wide.lookups:
            column, table = wide.column(lookup.by), wide
            while column is not None and isinstance(column.origin, Parent):
                table = next(w for w in flow.wide if w.name == table.parent)
                column = table.column(column.origin.column)
            if column is not None and isinstance(column.origin, Copy):
                kind = shape.types[table.name][column.name]
                entries += [(lookup.dimension, wide_value(kind, row.get(column.origin.column)))
                            for row in facts.all(column.origin.table)]
    return entries
