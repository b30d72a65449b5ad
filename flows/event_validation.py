"""Checking a flow's declared events (``PublishedEvent``), for ``flows.validation``: the table is
the root or the child the changelog's images carry, every key column, field and condition names
a column of it (or of the root, as ``root_table.column``), and a first-of event keeps what its
warehouse tables need."""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING

from flows.declaration import AnyOf, Condition, Field, PublishedEvent, WideTable

if TYPE_CHECKING:
    from flows.validation import _Checker


def check_events(checker: _Checker) -> None:
    """Add every problem of the flow's events to ``checker``."""
    flow, root = checker.flow, checker.flow.root
    if root is None:
        return
    child = next((wide for wide in flow.wide[1:] if wide.parent == root.name), None)
    for event in flow.events:
        _EventChecker(checker, event, root, child).run()


class _EventChecker:
    def __init__(self, checker: _Checker, event: PublishedEvent, root: WideTable, child: WideTable | None):
        self.checker, self.event, self.root, self.child = checker, event, root, child
        self.where = f"event {event.name!r}"

    def error(self, where: str, problem: str) -> None:
        self.checker.error(f"{self.where}{where}", problem)

    def run(self) -> None:
        event, root = self.event, self.root
        if event.table not in self.checker.wide:
            self.error(f" table {event.table!r}", f"no wide table {event.table!r}")
            return
        if event.table not in (root.name, self.child.name if self.child else None):
            self.error(f" table {event.table!r}", f"the changelog's images carry the root {root.name!r} and its "
                                                   f"child {self.child.name if self.child else None!r} only")
            return
        per_row = event.table != root.name
        if not event.key:
            self.error(" key", "no key columns (the natural key the event id is made from)")
        for name in event.key:
            self.column(f" key {name!r}", name)
        for declared in event.fields:
            if isinstance(declared, Field):
                self.column(f" field {declared.name!r}", declared.column)
            else:
                self.column(f" field {declared!r}", declared)
        carried = [f.name if isinstance(f, Field) else f.rpartition(".")[2] for f in event.fields]
        for name, count in Counter(carried).items():
            if count > 1:
                self.error(f" field {name!r}", f"carried {count} times")
        self.conditions("", root.name, event.when)
        if event.row_when and not per_row:
            self.error(" row_when", f"the event is one per root row ({root.name!r}): row_when is for a child "
                                    "table's event")
        elif event.row_when:
            self.conditions(" row", event.table, event.row_when)
        if event.first is not None:
            self.first(per_row)

    def column(self, where: str, name: str) -> None:
        """``name`` is a column of the event's table, or ``root.column`` of the root."""
        table, _, column = name.rpartition(".")
        if table and table not in (self.root.name, self.event.table):
            self.error(where, f"only the root {self.root.name!r} is named (root_table.column), not {table!r}")
            return
        self.checker.wide_column(f"{self.where}{where}", table or self.event.table, column)

    def conditions(self, where: str, table: str, when: tuple[Condition, ...]) -> None:
        for condition in when:
            if isinstance(condition, AnyOf):
                if not condition.predicates:
                    self.error(f"{where} when AnyOf()", "holds no predicate")
                self.checker.predicates(f"{self.where}{where}", table, condition.predicates, wide=True)
            else:
                self.checker.predicates(f"{self.where}{where}", table, (condition,), wide=True)

    def first(self, per_row: bool) -> None:
        event, first = self.event, self.event.first
        assert first is not None
        if per_row:
            self.error(" first", f"a first-of event is one per group of root rows: its table is {self.root.name!r}")
            return
        carried = event.field_names()
        if self.root.column(first.by) is None:
            self.error(f" first by {first.by!r}", f"no column {first.by!r} in wide table {self.root.name!r}")
        elif first.by not in carried.values():
            self.error(f" first by {first.by!r}", "carry it as a field: the first's record keeps it")
        for name in event.key:
            if carried.get(name) != name:
                self.error(f" key {name!r}", "a first-of event carries its key columns as fields of the same name")
        if carried.get("order_id", "order_id") != "order_id":
            self.error(" field 'order_id'", "in a first-of event order_id is the first entity's id")
        if first.table == first.entities:
            self.error(" first", f"the first and the candidacies need two tables, not {first.table!r} twice")
