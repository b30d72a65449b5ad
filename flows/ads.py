"""A flow's ADS aggregates as the warehouse writes them: each ``Aggregate`` of a declaration with the
types of its keys and measures, taken from the wide table it sums."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flows.declaration import Aggregate, FlowDeclaration
from flows.declared import DECLARATIONS
from inputs.columns import ColumnType, column_type


@dataclass(frozen=True)
class Declared:
    """An aggregate with the types of its keys and measures, from its wide table's columns."""

    aggregate: Aggregate
    #: Key column -> its type; measure -> its type (None: a count).
    key_types: Mapping[str, ColumnType]
    measure_types: Mapping[str, ColumnType | None]
    child: bool

    @property
    def name(self) -> str:
        return self.aggregate.name


def declared_aggregates(flow: FlowDeclaration) -> list[Declared]:
    """The flow's aggregates in declaration order."""
    wide = {table.name: table for table in flow.wide}
    found = []
    for aggregate in flow.aggregates:
        table = wide[aggregate.source]
        types = {c.name: column_type(c.type) for c in table.columns}
        found.append(Declared(aggregate, {k: types[k] for k in aggregate.keys},
                              {m.name: types[m.column] if m.column else None for m in aggregate.measures},
                              child=table.name != flow.wide[0].name))
    return found


#: Every declared aggregate, by table: its key columns and its measures, in the order they are
#: written.
DECLARED: dict[str, Declared] = {d.name: d for flow in DECLARATIONS for d in declared_aggregates(flow)}
AGGREGATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    name: (d.aggregate.keys, tuple(m.name for m in d.aggregate.measures)) for name, d in DECLARED.items()}


