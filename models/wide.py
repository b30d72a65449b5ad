"""The wide tables of the flows tdc runs, made from their declarations (``flows.declaration``):
one table per ``WideTable`` in every shard database, its columns typed as declared, its key the
primary key, its declared indexes.

Amounts keep their declared precision and scale (``money`` is decimal(12,2)); every time is a
DATETIME with the declared fractional seconds (never MySQL's TIMESTAMP, which would rewrite
itself on update); NOT NULL where the engine always writes a value (keys, the child's entity
column, the status, sums that are 0 when empty, the version).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Column, Index, Integer, MetaData, String, Table, Text, UniqueConstraint
from sqlalchemy.types import TypeEngine

from flows.declaration import Bookkeeping, Copy, FlowDeclaration, Status, Sum, Where, WideTable
from flows.declared import DECLARATIONS
from inputs.columns import column_type
from models.orders import ShardBase
from models.types import BigId, Timestamp, sql_type_of


def sql_type(declared: str) -> TypeEngine[Any]:
    """The SQL type of a declared wide column, on any backend."""
    return sql_type_of(column_type(declared))


def _always_written(wide: WideTable, name: str, entity_column: str | None) -> bool:
    origin = wide.column(name).origin  # type: ignore[union-attr]
    return (name in wide.key or name == entity_column or isinstance(origin, Status)
            or (isinstance(origin, Sum) and not origin.null_when_empty)
            or (isinstance(origin, Bookkeeping) and origin.kind == "version"))


def snapshot_table(name: str, metadata: MetaData) -> Table:
    """A flow's snapshots: each entity's wide rows as they were when one operation finished (a
    re-run overwrites its own)."""
    # The online order flow's constraint kept the name it had before snapshots were declared.
    unique = "uq_snapshot_order_op" if name == "dwd_order_snapshot" else f"uq_{name}_op"
    return Table(name, metadata,
                 Column("id", BigId, primary_key=True, autoincrement=True),
                 Column("order_id", String(64), nullable=False),
                 Column("operation_type", String(16), nullable=False),
                 Column("task_version", Integer, nullable=False),
                 Column("order_row", Text, nullable=False),
                 Column("item_rows", Text, nullable=False),
                 Column("taken_at", Timestamp, nullable=False, index=True),
                 UniqueConstraint("order_id", "operation_type", name=unique))


@dataclass(frozen=True)
class WideSchema:
    """A flow's wide tables as the chain writes them: the root (one row per entity) and at most
    one child table (one row per source row, naming its entity)."""

    flow: FlowDeclaration
    root: Table
    #: The root's key column: the entity id.
    entity: str
    child: Table | None = None
    #: The child's key column.
    child_key: str | None = None
    #: The child's column naming its entity (a copy of its source row's entity key).
    child_entity: str | None = None
    #: Each operation's snapshot of the rows (``Snapshots``), keyed by entity id.
    snapshots: Table | None = None


def entity_column(flow: FlowDeclaration, wide: WideTable) -> str | None:
    """The column of a child wide table that names its entity: the copy of its source row's
    entity key."""
    source = next((s for s in flow.sources if s.name == wide.rows_from), None)
    if source is None:
        return None
    return next((c.name for c in wide.columns
                 if isinstance(c.origin, Copy) and (c.origin.table, c.origin.column) == (source.name,
                                                                                        source.entity_key)), None)


def wide_table(flow: FlowDeclaration, wide: WideTable, metadata: MetaData) -> Table:
    entity = entity_column(flow, wide)
    columns = [Column(c.name, sql_type(c.type), primary_key=c.name in wide.key,
                      autoincrement=False if c.name in wide.key else "auto",
                      nullable=not _always_written(wide, c.name, entity)) for c in wide.columns]
    indexes = [Index(name, *names) for name, names in wide.indexes.items()]
    return Table(wide.name, metadata, *columns, *indexes)


def _schema(flow: FlowDeclaration, metadata: MetaData) -> WideSchema:
    assert flow.root is not None
    root = wide_table(flow, flow.root, metadata)
    snapshots = snapshot_table(flow.snapshots.table, metadata) if flow.snapshots is not None else None
    children = [wide for wide in flow.wide[1:] if wide.parent == flow.root.name]
    if not children:
        return WideSchema(flow, root, flow.root.key[0], snapshots=snapshots)
    child = children[0]
    return WideSchema(flow, root, flow.root.key[0], wide_table(flow, child, metadata), child.key[0],
                      entity_column(flow, child), snapshots)


#: Flow name -> its wide tables, declared in every shard database (``tdc init`` creates them).
SCHEMAS: dict[str, WideSchema] = {flow.name: _schema(flow, ShardBase.metadata) for flow in DECLARATIONS}


def schema_of(flow: FlowDeclaration) -> WideSchema:
    return SCHEMAS[flow.name]




def where_clause(table: Table, predicate: Where) -> Any:
    """A declared predicate (``flows.declaration.Where``) on a wide table's column, in SQL: a
    comparison with NULL is false, as ``flows.rules.holds`` has it."""
    column, op, value = table.c[predicate.column], predicate.op, predicate.value
    if op == "is null":
        return column.is_(None)
    if op == "not null":
        return column.is_not(None)
    compared = {"=": column == value, "!=": column != value, "<": column < value, "<=": column <= value,
                ">": column > value, ">=": column >= value}.get(op)
    if compared is None:
        compared = column.in_(list(value)) if op == "in" else column.not_in(list(value))
    return column.is_not(None) & compared
