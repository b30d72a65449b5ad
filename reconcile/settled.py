"""Which entities of a flow a day's reconciliation counts, read from the flow's declaration.

An entity is *settled* on its business day (the root wide row's ``BusinessDay`` column) once its
root row satisfies the ``when`` of one of the flow's aggregates: what the warehouse counts is
what is reconciled (the online order flow: paid, not cancelled, with a store; a Kingdee document:
audited, not voided).  A flow without aggregates settles every entity of its day.  The same
condition is given as SQL, so the databases can count and sum settled rows themselves.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import String, Table, and_, exists, false, literal, or_, select
from sqlalchemy import cast as sql_cast

from chain.wide_rows import Layout, layout_of
from flows.ads import declared_aggregates
from flows.declaration import BusinessDay, FlowDeclaration, Where
from flows.memo import per_flow
from flows.registry import running
from flows.rules import all_hold
from models.digests import sql_bucket
from models.warehouse import LEDGERS
from models.wide import WideSchema, where_clause
from reconcile.diffs import as_date

Row = dict[str, Any]


@dataclass(frozen=True)
class Settled:
    """A flow as reconciliation reads it: its wide tables, its day column, when an entity counts."""

    flow: FlowDeclaration
    layout: Layout
    #: The root's business-day column.
    day: str
    #: The distinct ``when`` of the flow's aggregates (empty: every entity of the day counts).
    whens: tuple[tuple[Where, ...], ...]
    #: The flow's ADS ledger, when it has aggregates.
    ledger: Table | None

    @property
    def name(self) -> str:
        return self.flow.name

    @property
    def schema(self) -> WideSchema:
        return self.layout.schema

    def settled(self, row: Row | None, first: dt.date, last: dt.date) -> bool:
        """The root row ``row`` counts on a day of [first, last]."""
        if row is None or row.get(self.day) is None or not first <= as_date(row[self.day]) <= last:
            return False
        return not self.whens or any(all_hold(when, row) for when in self.whens)

    def settled_where(self, first: dt.date, last: dt.date) -> Any:
        """``settled`` as a condition on the root table."""
        root = self.schema.root
        condition: Any = root.c[self.day].between(first, last)
        if self.whens:
            condition = condition & or_(*(and_(*(where_clause(root, p) for p in when)) for when in self.whens))
        return condition

    def contributes(self) -> Any:
        """A settled root row the ledger keeps a contribution for: some aggregate has a cell for
        it (no key of a type other than text is NULL; of a child-table aggregate, on some child
        row), as ``warehouse.contributions`` counts it."""
        schema = self.schema
        root, child = schema.root, schema.child
        found: list[Any] = []
        for declared in declared_aggregates(self.flow):
            keys = [k for k in declared.aggregate.keys if declared.key_types[k].kind != "text"]
            when = [where_clause(root, p) for p in declared.aggregate.when]
            if declared.child and child is not None:
                linked = child.c[cast(str, schema.child_entity)] == root.c[schema.entity]
                found.append(and_(*when, exists(select(literal(1)).select_from(child).where(
                    linked, *(child.c[k].is_not(None) for k in keys)))))
            else:
                found.append(and_(*when, *(root.c[k].is_not(None) for k in keys)))
        return or_(*found) if found else false()

    def entity_text(self) -> Any:
        """The entity id (as task keys and the ledger carry it) of a root row, in SQL."""
        column = self.schema.root.c[self.schema.entity]
        text = column if isinstance(column.type, String) else sql_cast(column, String)
        return literal(self.flow.entity_prefix, String) + text if self.flow.entity_prefix else text

    def bucket(self, dialect: str, buckets: int) -> Any:
        return sql_bucket(dialect, self.entity_text(), buckets)


@per_flow
def settled_of(flow: FlowDeclaration) -> Settled | None:
    """How ``flow`` is reconciled; None for a flow whose root has no business day (worked out
    once per flow: every compared entity asks)."""
    assert flow.root is not None
    day = next((c.name for c in flow.root.columns if isinstance(c.origin, BusinessDay)), None)
    if day is None:
        return None
    whens = tuple(dict.fromkeys(a.when for a in flow.aggregates))
    return Settled(flow, layout_of(flow), day, whens, LEDGERS.get(flow.name))


def reconciled_flows(names: Iterable[str]) -> list[Settled]:
    """The flows ``names`` (``Settings.flows``: the flows tdc runs) that have a business day."""
    return [settled for flow in running(tuple(names)) if (settled := settled_of(flow)) is not None]
