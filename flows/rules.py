"""Reading a declaration's rules: does a row satisfy a predicate, which operations does a source
row raise (intake routes by it: ``flows.registry``)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flows.declaration import AnyOf, Condition, FlowDeclaration, Where


def holds(predicate: Where, row: Mapping[str, Any]) -> bool:
    """True when ``row`` satisfies ``predicate`` (a comparison with NULL is false)."""
    value, op, wanted = row.get(predicate.column), predicate.op, predicate.value
    if op == "is null":
        return value is None
    if op == "not null":
        return value is not None
    if value is None:
        return False
    if op == "in":
        return value in wanted
    if op == "not in":
        return value not in wanted
    comparisons = {"=": value == wanted, "!=": value != wanted}
    if op in comparisons:
        return comparisons[op]
    ordered = {"<": value < wanted, "<=": value <= wanted, ">": value > wanted, ">=": value >= wanted}
    return ordered[op]


def all_hold(predicates: tuple[Condition, ...], row: Mapping[str, Any]) -> bool:
    """True when ``row`` satisfies every predicate (an ``AnyOf``: one of its own)."""
    return all(any(holds(p, row) for p in predicate.predicates) if isinstance(predicate, AnyOf)
               else holds(predicate, row) for predicate in predicates)


def raised_operations(flow: FlowDeclaration, table: str, change: str, row: Mapping[str, Any]) -> tuple[str, ...]:
    """The operations a ``change`` (insert, update, delete) of ``row`` in ``table`` raises, in
    the order the flow declares its operations."""
    raised = {name for rule in flow.raises
              if rule.table == table and change in rule.changes and all_hold(rule.when, row)
              for name in rule.operations}
    return tuple(operation.name for operation in flow.operations if operation.name in raised)
