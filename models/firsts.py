"""Warehouse tables of the declared "first of" events (``flows.declaration.FirstOf``): each
group's first entity, and every entity's candidacy it is chosen from.

Made from the declaration by one rule, so that the online orders' ``FirstConsumeDate`` gets the
tables older warehouses hold (``first_consume``, ``first_consume_order``):

- the first (``FirstOf.table``): the key columns (the primary key), ``order_id`` (the first
  entity's id), the event's other fields under their names (the ``by`` field NOT NULL), then
  ``revision`` (the event's version), ``updated_at``, ``gone_at`` (no entity left: the event was a
  delete) and ``moved_by_order``/``moved_by_version`` (the change that made this revision);
- the candidacies (``FirstOf.entities``): ``order_id`` (the primary key), ``version`` (the wide-row
  version it was taken from), the key columns, the ``by`` column under its own name, the other
  fields under theirs (all NULL when the entity is no candidate), ``updated_at``; indexed to find
  a group's first.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Column, Index, Integer, String, Table

from flows.declaration import FlowDeclaration, PublishedEvent
from flows.declared import DECLARATIONS
from inputs.columns import column_type
from models.types import Timestamp, sql_type_of
from models.warehouse import WarehouseBase


@dataclass(frozen=True)
class FirstTables:
    """A first-of event's two tables, and how its fields are named in them."""

    event: str
    first: Table
    entities: Table
    #: The key columns (the group).
    group: tuple[str, ...]
    #: The ``by`` field's name in ``first`` and the ``by`` column's in ``entities``.
    by_field: str
    by_column: str
    #: The other fields (neither the group, nor ``order_id``, nor ``by``), named alike in both.
    others: tuple[str, ...]


def _first_tables(flow: FlowDeclaration, event: PublishedEvent) -> FirstTables:
    assert event.first is not None and flow.root is not None
    root = flow.root

    def sql(column: str):  # type: ignore[no-untyped-def]
        declared = root.column(column)
        assert declared is not None
        return sql_type_of(column_type(declared.type))

    fields = event.field_names()
    by_field = next(name for name, column in fields.items() if column == event.first.by)
    others = tuple(name for name in fields if name not in (*event.key, "order_id", by_field))
    first = Table(
        event.first.table, WarehouseBase.metadata,
        *(Column(name, sql(name), primary_key=True, autoincrement=False) for name in event.key),
        Column("order_id", String(64), nullable=False),
        *(Column(name, sql(column), nullable=name != by_field) for name, column in fields.items()
          if name not in (*event.key, "order_id")),
        Column("revision", Integer, nullable=False),
        Column("updated_at", Timestamp, nullable=False),
        Column("gone_at", Timestamp),
        Column("moved_by_order", String(64)),
        Column("moved_by_version", Integer))
    entities = Table(
        event.first.entities, WarehouseBase.metadata,
        Column("order_id", String(64), primary_key=True),
        Column("version", Integer, nullable=False),
        *(Column(name, sql(name)) for name in event.key),
        *(Column(event.first.by if name == by_field else name, sql(column)) for name, column in fields.items()
          if name not in (*event.key, "order_id")),
        Column("updated_at", Timestamp, nullable=False),
        # A group's first: the earliest candidacy by ``by``, then entity id.
        Index(f"ix_{event.first.entities}_first", *event.key, event.first.by, "order_id"))
    return FirstTables(event.name, first, entities, event.key, by_field, event.first.by, others)


#: Event name -> its tables, for every declared first-of event.
FIRST_TABLES: dict[str, FirstTables] = {event.name: _first_tables(flow, event) for flow in DECLARATIONS
                                        for event in flow.events if event.first is not None}
