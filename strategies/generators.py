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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from flows.declaration import (
    BusinessDay,
    Chosen,
    Copy,
    FlowDeclaration,
    Looked,
    Parent,
    Status,
    Sum,
    Where,
    WideTable,
)
from flows.memo import per_flow
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


def reader(kind: ColumnType) -> Callable[[Any], Any]:
    """How a stored source value (``inputs.columns``: amounts as text, times as ISO text), or a
    dimension attribute (text), becomes the value a wide column of ``kind`` holds."""
    if kind.kind == "decimal":
        quantum = Decimal(1).scaleb(-kind.scale)
        return lambda value: None if value is None else Decimal(str(value)).quantize(quantum)
    if kind.kind in ("datetime", "timestamp"):
        return lambda value: value if value is None or isinstance(value, dt.datetime) else \
            dt.datetime.fromisoformat(str(value))
    if kind.kind == "date":
        return lambda value: value if value is None or isinstance(value, dt.date) else \
            dt.date.fromisoformat(str(value))
    if kind.kind == "int":
        return lambda value: None if value is None else int(value)
    return lambda value: value if value is None or isinstance(value, str) else str(value)


def _zero(kind: ColumnType) -> Any:
    return reader(kind)(0) if kind.kind in ("decimal", "int") else None


#: One column a merge writes: its name, where it comes from, how a source value becomes its value.
Step = tuple[str, Any, Callable[[Any], Any]]


@dataclass(frozen=True)
class Shape:
    """What a merge needs of a flow's declaration, worked out once: for each wide table and
    operation the columns pass 1 writes (Chosen last: it may compare with a column copied
    there), and each table's pass-3 columns."""

    flow: FlowDeclaration
    root: WideTable
    child: WideTable | None
    types: Mapping[str, Mapping[str, ColumnType]]
    #: Operation -> the tables (sources and business writes) that raise it.
    raised_by: Mapping[str, frozenset[str]]
    status_after: Mapping[str, int]
    #: Source table -> its key column.
    keys: Mapping[str, str]
    #: (wide table, operation) -> pass 1's columns.
    writes: Mapping[tuple[str, str], tuple[Step, ...]] = field(default_factory=dict)
    #: Wide table -> pass 3's columns.
    derived: Mapping[str, tuple[Step, ...]] = field(default_factory=dict)
    status: str | None = None
    #: The child's key column, the source column its values come from, and how they are read.
    child_key_of: tuple[str, Callable[[Any], Any]] | None = None

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
        types = {wide.name: {c.name: column_type(c.type) for c in wide.columns} for wide in flow.wide}
        keys = {source.name: source.key[0] for source in flow.sources}
        writes: dict[tuple[str, str], tuple[Step, ...]] = {}
        derived: dict[str, tuple[Step, ...]] = {}
        for wide in flow.wide:
            for operation, tables in raised.items():
                chosen_last = sorted((c for c in wide.columns if isinstance(c.origin, Copy | Sum | Chosen)
                                      and c.origin.table in tables), key=lambda c: isinstance(c.origin, Chosen))
                writes[(wide.name, operation)] = tuple(
                    (c.name, c.origin, reader(types[wide.name][c.name])) for c in chosen_last)
            derived[wide.name] = tuple((c.name, c.origin, reader(types[wide.name][c.name])) for c in wide.columns
                                       if isinstance(c.origin, Looked | BusinessDay | Parent))
        child = children[0] if children else None
        child_key_of = None
        if child is not None and child.rows_from is not None:
            origin = child.column(child.key[0]).origin  # type: ignore[union-attr]
            column = origin.column if isinstance(origin, Copy) else keys[child.rows_from]
            child_key_of = (column, reader(types[child.name][child.key[0]]))
        status = next((c.name for c in flow.root.columns if isinstance(c.origin, Status)), None)
        return cls(
            flow=flow, root=flow.root, child=child, types=types,
            raised_by={name: frozenset(tables) for name, tables in raised.items()},
            status_after={o.name: o.status for o in flow.operations if o.status is not None},
            keys=keys, writes=writes, derived=derived, status=status, child_key_of=child_key_of,
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
        assert self.child_key_of is not None
        column, read = self.child_key_of
        return read(row.get(column))


@per_flow
def shape_of(flow: FlowDeclaration) -> Shape:
    return Shape.of(flow)


class _Rows:
    """The entity's live rows per table, read once per merge (``OrderFacts.all`` sorts)."""

    def __init__(self, facts: OrderFacts):
        self.facts = facts
        self._all: dict[str, list[Row]] = {}
        self._by_key: dict[tuple[str, str], dict[Any, Row]] = {}

    def all(self, table: str) -> list[Row]:
        rows = self._all.get(table)
        if rows is None:
            rows = self._all[table] = self.facts.all(table)
        return rows

    def where(self, table: str, when: tuple[Where, ...]) -> list[Row]:
        rows = self.all(table)
        return [row for row in rows if all_hold(when, row)] if when else rows

    def keyed(self, table: str, column: str, read: Callable[[Any], Any]) -> dict[Any, Row]:
        """``table``'s rows by ``column`` as a wide key reads it (the first live row of each)."""
        found = self._by_key.get((table, column))
        if found is None:
            found = self._by_key[(table, column)] = {}
            for row in self.all(table):
                found.setdefault(read(row.get(column)), row)
        return found


def _sum(origin: Sum, zero: Any, read: Callable[[Any], Any], rows: _Rows, shape: Shape, key: Any = None) -> Any:
    found = rows.where(origin.table, origin.when)
    if origin.through is not None:
        through = origin.through
        passing = {row.get(through.key) for row in rows.where(through.table, through.when)}
        found = [row for row in found if row.get(through.key) in passing]
    if origin.per_row is not None:
        assert shape.child_key_of is not None
        key_of = shape.child_key_of[1]
        found = [row for row in found if key_of(row.get(origin.per_row)) == key]
    if not found and origin.null_when_empty:
        return None
    if origin.column is None:
        return len(found)
    total = zero
    for row in found:
        total += read(row.get(origin.column) or 0)
    return total


def _chosen(origin: Chosen, read: Callable[[Any], Any], rows: _Rows, row: Row) -> Any:
    found = rows.where(origin.table, origin.when)
    if origin.match is not None:
        mine, wide_column = origin.match
        found = [r for r in found if same_value(r.get(mine), row.get(wide_column))] or found
    if not found:
        return None
    return read(max(found, key=lambda r: r.get(origin.newest_by) or "").get(origin.column))


def _from_sources(shape: Shape, wide: WideTable, row: Row, own: Row | None, rows: _Rows, operation: str,
                  key: Any = None) -> None:
    """Pass 1 on one wide row: its columns from the tables that raise ``operation`` (``own``: a
    child row's own source row; ``key``: a child row's key)."""
    for name, origin, read in shape.writes[(wide.name, operation)]:
        if isinstance(origin, Copy):
            if own is not None and origin.table == wide.rows_from:
                source: Row | None = own
            elif key is None:
                found = rows.all(origin.table)
                source = found[0] if found else None
            else:
                # The row of another table with the child's key (an entry's finance entry).
                assert shape.child_key_of is not None
                source = rows.keyed(origin.table, shape.keys[origin.table], shape.child_key_of[1]).get(key)
            if source is None and name in wide.key:
                continue  # the entity's own key stays
            row[name] = None if source is None else read(source.get(origin.column))
        elif isinstance(origin, Sum):
            row[name] = _sum(origin, read(0) if origin.column else 0, read, rows, shape, key)
        else:
            row[name] = _chosen(origin, read, rows, row)


def _derived(shape: Shape, wide: WideTable, row: Row, parent: Row | None, dims: Dimensions, zone: ZoneInfo) -> None:
    """Pass 3 on one wide row: look-ups, the business day, the parent's columns."""
    looked = {lookup.dimension: dims.get(lookup.dimension, row.get(lookup.by)) for lookup in wide.lookups}
    for name, origin, read in shape.derived[wide.name]:
        if isinstance(origin, Looked):
            row[name] = read(looked[origin.dimension].get(origin.attribute))
        elif isinstance(origin, BusinessDay):
            moment = next((row[column] for column in origin.columns if row.get(column) is not None), None)
            row[name] = business_date(moment, zone)
        elif parent is not None:
            row[name] = parent.get(origin.column)


def apply_operation(flow: FlowDeclaration, operation: str, order: Row, items: dict[Any, Row], facts: OrderFacts,
                    dims: Dimensions, zone: ZoneInfo = UTC) -> None:
    """Apply one operation to an entity's root wide row ``order`` and its child rows ``items``
    (by key), in place, as the module docstring describes."""
    shape = shape_of(flow)
    rows = _Rows(facts)
    _from_sources(shape, shape.root, order, None, rows, operation)
    child = shape.child
    if child is not None and child.rows_from is not None:
        own = {shape.child_key(row): row for row in rows.all(child.rows_from)}
        if child.rows_from in shape.raised_by[operation]:
            for key in list(items):
                if key not in own:
                    del items[key]
            for key in own:
                if key not in items:
                    items[key] = shape.new_row(child)
        for key, item in items.items():
            _from_sources(shape, child, item, own.get(key), rows, operation, key)
    if shape.status is not None and operation in shape.status_after:
        order[shape.status] = max(order.get(shape.status) or 0, shape.status_after[operation])
    if "last_operation" in order:
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
                read = reader(shape.types[table.name][column.name])
                entries += [(lookup.dimension, read(row.get(column.origin.column)))
                            for row in facts.all(column.origin.table)]
    return entries
