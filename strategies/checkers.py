"""Completeness checks (DESIGN section 3): has the data an operation needs arrived?  Read from the
flow's declaration (``Operation.complete_when``), each rule checked on the entity's facts.

``check`` returns None when the operation may run, or the reason it must wait, naming the
tables and values that fall short.  A deleted entity (``Source.deletes_entity``) waits for
nothing: its data is gone and will not come back.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from flows.declaration import (
    Completeness,
    DetailsSum,
    FlowDeclaration,
    RowArrived,
    RowsCounted,
    RowsPaired,
    ValueMatched,
    Where,
)
from flows.rules import all_hold
from strategies.facts import OrderFacts


def same_value(one: Any, other: Any) -> bool:
    """Equal as values: amounts compare as numbers (``"30.0"`` is ``"30.00"``)."""
    if one == other:
        return True
    try:
        return one is not None and other is not None and Decimal(str(one)) == Decimal(str(other))
    except InvalidOperation:
        return False


def _number(value: Any) -> Decimal:
    return Decimal(0) if value is None else Decimal(str(value))


def _where(predicates: tuple[Where, ...]) -> str:
    return " and ".join(map(str, predicates))


def _row_arrived(rule: RowArrived, facts: OrderFacts) -> str | None:
    rows = facts.all(rule.table)
    if not rows:
        return f"no {rule.table} row yet"
    if rule.when and not any(all_hold(rule.when, row) for row in rows):
        return f"no {rule.table} row with {_where(rule.when)} yet"
    return None


def _rows_counted(rule: RowsCounted, facts: OrderFacts) -> str | None:
    header = facts.one(rule.header)
    if header is None:
        return f"no {rule.header} row yet"
    have, expected = len(facts.all(rule.table)), header.get(rule.count_column) or 0
    return None if have == expected else f"{have} of {expected} {rule.table} rows have arrived"


def _value_matched(rule: ValueMatched, facts: OrderFacts) -> str | None:
    rows, other = facts.all(rule.table), facts.one(rule.other)
    if other is None:
        return f"no {rule.other} row yet"
    if not rows:
        return f"no {rule.table} row yet"
    expected = other.get(rule.other_column)
    if any(same_value(row.get(rule.column), expected) for row in rows):
        return None
    have = ", ".join(str(row.get(rule.column)) for row in rows)
    return f"{rule.table} {rule.column} {have} does not match {rule.other}.{rule.other_column} {expected}"


def _details_sum(rule: DetailsSum, facts: OrderFacts) -> str | None:
    details = facts.all(rule.details)
    for header in facts.all(rule.header):
        if not all_hold(rule.when, header):
            continue
        link = header.get(rule.link)
        total = sum((_number(d.get(rule.column)) for d in details if d.get(rule.link) == link), Decimal(0))
        expected = _number(header.get(rule.total_column))
        if total != expected:
            return f"{rule.header} {link}: {rule.details} {rule.column} sums to {total} of {expected}"
    return None


def _rows_paired(rule: RowsPaired, facts: OrderFacts) -> str | None:
    paired = {row.get(rule.link) for row in facts.all(rule.other)}
    for row in facts.all(rule.table):
        if row.get(rule.link) not in paired:
            return f"{rule.table} {row.get(rule.link)}: no {rule.other} row yet"
    return None


_RULES = {RowArrived: _row_arrived, RowsCounted: _rows_counted, ValueMatched: _value_matched,
          DetailsSum: _details_sum, RowsPaired: _rows_paired}


def check_rule(rule: Completeness, facts: OrderFacts) -> str | None:
    return _RULES[type(rule)](rule, facts)  # type: ignore[operator]


def deleted(flow: FlowDeclaration, facts: OrderFacts) -> bool:
    """Whether the entity is deleted: its row of a source that ``deletes_entity`` is gone (the
    newest record of it is a delete)."""
    return any(facts.deleted(source.name) for source in flow.sources if source.deletes_entity)


def check(flow: FlowDeclaration, operation: str, facts: OrderFacts) -> str | None:
    """None when every completeness rule of ``operation`` holds on ``facts``, or when the entity
    is deleted (``deleted``: what the rules wait for is gone for good, so the operation runs on
    what is left instead of waiting forever); else the first reason it must wait."""
    if deleted(flow, facts):
        return None
    declared = next(o for o in flow.operations if o.name == operation)
    for rule in declared.complete_when:
        reason = check_rule(rule, facts)
        if reason is not None:
            return reason
    return None
