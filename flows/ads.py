"""A flow's ADS aggregates as the warehouse writes them: each ``Aggregate`` of a declaration with the
types of its keys and measures, taken from the wide table it sums."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from flows.declaration import Aggregate, BusinessDay, FlowDeclaration
from flows.declared import DECLARATIONS
from flows.memo import per_flow
from inputs.columns import ColumnType, column_type


@dataclass(frozen=True)
class Declared:
    """An aggregate with the types of its keys and measures, from its wide table's columns."""

    aggregate: Aggregate
    #: Key column -> its type; measure -> its type (None: a count).
    key_types: Mapping[str, ColumnType]
    measure_types: Mapping[str, ColumnType | None]
    child: bool
    #: The key that is the flow's business day (``BusinessDay``), when one is: the aggregate can
    #: be rebuilt a day at a time.
    day: str | None = None

    @property
    def name(self) -> str:
        return self.aggregate.name


def declared_aggregates(flow: FlowDeclaration) -> list[Declared]:
    """The flow's aggregates in declaration order (worked out once per flow: every merged entity
    asks)."""
    return _declared(flow)


@per_flow
def _declared(flow: FlowDeclaration) -> list[Declared]:
    wide = {table.name: table for table in flow.wide}
    assert flow.root is not None
    day = next((c.name for c in flow.root.columns if isinstance(c.origin, BusinessDay)), None)
    found = []
    for aggregate in flow.aggregates:
        table = wide[aggregate.source]
        types = {c.name: column_type(c.type) for c in table.columns}
        found.append(Declared(aggregate, {k: types[k] for k in aggregate.keys},
                              {m.name: types[m.column] if m.column else None for m in aggregate.measures},
                              child=table.name != flow.wide[0].name, day=day if day in aggregate.keys else None))
    return found


def rebuilt_by_day(flow: FlowDeclaration) -> bool:
    """Whether every aggregate of the flow is kept by business day (the day rebuild applies)."""
    aggregates = declared_aggregates(flow)
    return bool(aggregates) and all(d.day is not None for d in aggregates)


#: Every declared aggregate, by table: its key columns and its measures, in the order they are
#: written.
DECLARED: dict[str, Declared] = {d.name: d for flow in DECLARATIONS for d in declared_aggregates(flow)}
AGGREGATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    name: (d.aggregate.keys, tuple(m.name for m in d.aggregate.measures)) for name, d in DECLARED.items()}


