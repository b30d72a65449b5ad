"""Reading a declaration's rules: does a row satisfy a predicate, which operations does a source
row raise (intake routes by it: ``flows.registry``)."""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any

from flows.declaration import AnyOf, Condition, FlowDeclaration, Raise, Where

#: The comparisons a predicate may make of a value that is not NULL.
_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    "=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
    "in": lambda value, wanted: value in wanted, "not in": lambda value, wanted: value not in wanted,
}


def holds(predicate: Where, row: Mapping[str, Any]) -> bool:
    """True when ``row`` satisfies ``predicate`` (a comparison with NULL is false)."""
    value, op, wanted = row.get(predicate.column), predicate.op, predicate.value
    if op == "is null":
        return value is None
    if op == "not null":
        return value is not None
    if value is None:
        return False
    return _COMPARE[op](value, wanted)


def all_hold(predicates: tuple[Condition, ...], row: Mapping[str, Any]) -> bool:
    """True when ``row`` satisfies every predicate (an ``AnyOf``: one of its own)."""
    return all(any(holds(p, row) for p in predicate.predicates) if isinstance(predicate, AnyOf)
               else holds(predicate, row) for predicate in predicates)


def raised_operations(flow: FlowDeclaration, table: str, change: str, row: Mapping[str, Any]) -> tuple[str, ...]:
    """The operations a ``change`` (insert, update, delete) of ``row`` in ``table`` raises, in
    the order the flow declares its operations."""
    return raising(flow, table)(row, change)


#: The operations a change (insert, update, delete) of a row raises.
Raising = Callable[[Mapping[str, Any], str], tuple[str, ...]]


def raising(flow: FlowDeclaration, table: str) -> Raising:
    """``raised_operations`` of ``table`` (given the row, then the change), with its rules sorted
    out once: intake asks it of every row."""
    order = {operation.name: n for n, operation in enumerate(flow.operations)}
    by_change: dict[str, list[Raise]] = {}
    for rule in flow.raises:
        if rule.table == table:
            for change in rule.changes:
                by_change.setdefault(change, []).append(rule)

    def declared(rule: Raise) -> tuple[str, ...]:
        """A rule's operations in the flow's order; those the flow does not declare raise nothing."""
        return tuple(sorted((name for name in rule.operations if name in order), key=order.__getitem__))

    rules = {change: [(rule.when, declared(rule)) for rule in found] for change, found in by_change.items()}

    def raised(row: Mapping[str, Any], change: str) -> tuple[str, ...]:
        names: tuple[str, ...] = ()
        for when, operations in rules.get(change, ()):
            if not when or all_hold(when, row):
                names += operations
        if len(names) < 2:
            return names
        return tuple(sorted(set(names), key=order.__getitem__))

    return raised
