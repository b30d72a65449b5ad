"""A flow declaration as text for people (``tdc flow show``), with its state machine drawn as a
tree: each operation under the one it waits for."""

from __future__ import annotations

from collections.abc import Mapping

from flows.declaration import (
    Bookkeeping,
    BusinessDay,
    Chosen,
    Completeness,
    Condition,
    Copy,
    DetailsSum,
    FlowDeclaration,
    Looked,
    Origin,
    Parent,
    PublishedEvent,
    Raise,
    RowArrived,
    RowsCounted,
    RowsPaired,
    Status,
    Sum,
    ValueMatched,
    WideTable,
)


def _where(when: tuple[Condition, ...]) -> str:
    return " and ".join(map(str, when))


def _columns(columns: Mapping[str, str]) -> str:
    return ", ".join(f"{name} {kind}" for name, kind in columns.items())


def origin_text(origin: Origin) -> str:
    """Where a wide column comes from, in a few words."""
    if isinstance(origin, Copy):
        return f"{origin.table}.{origin.column}"
    if isinstance(origin, Sum):
        what = f"sum of {origin.table}.{origin.column}" if origin.column else f"count of {origin.table} rows"
        if origin.when:
            what += f" where {_where(origin.when)}"
        if origin.through is not None:
            through = origin.through
            what += f" whose {through.key} is a {through.table}" + (
                f" with {_where(through.when)}" if through.when else "")
        if origin.per_row is not None:
            what += f", per line by {origin.per_row}"
        if origin.null_when_empty:
            what += " (NULL when none)"
        return what
    if isinstance(origin, Looked):
        return f"dimension {origin.dimension}.{origin.attribute}"
    if isinstance(origin, Parent):
        return f"parent row's {origin.column}"
    if isinstance(origin, Status):
        return "the highest status of the operations merged"
    if isinstance(origin, BusinessDay):
        return f"business day of {', else '.join(origin.columns)}"
    if isinstance(origin, Chosen):
        what = f"{origin.table}.{origin.column} of the newest row by {origin.newest_by}"
        if origin.when:
            what += f" where {_where(origin.when)}"
        if origin.match is not None:
            what += f", preferring {origin.match[0]} = {origin.match[1]}"
        return what
    if isinstance(origin, Bookkeeping):
        return f"bookkeeping: {origin.kind}"
    return repr(origin)


def rule_text(rule: Completeness) -> str:
    """A completeness rule, in a few words."""
    if isinstance(rule, RowArrived):
        return f"a {rule.table} row" + (f" with {_where(rule.when)}" if rule.when else "")
    if isinstance(rule, RowsCounted):
        return f"as many {rule.table} rows as {rule.header}.{rule.count_column}"
    if isinstance(rule, ValueMatched):
        return f"a {rule.table} row whose {rule.column} equals {rule.other}.{rule.other_column}"
    if isinstance(rule, RowsPaired):
        return f"a {rule.other} row for every {rule.table} row (by {rule.link})"
    if isinstance(rule, DetailsSum):
        return (f"{rule.details}.{rule.column} summing to {rule.total_column} of every {rule.header}"
                + (f" with {_where(rule.when)}" if rule.when else "") + f" (by {rule.link})")
    return repr(rule)


def _raise_text(rule: Raise) -> str:
    changes = "" if len(rule.changes) == 3 else f" ({', '.join(rule.changes)})"
    when = f" where {_where(rule.when)}" if rule.when else ""
    return f"{rule.table}{changes}{when} -> {', '.join(rule.operations)}"


def diagram(flow: FlowDeclaration) -> list[str]:
    """The state machine as a tree: every operation under each operation it waits for."""
    children: dict[str, list[str]] = {o.name: [] for o in flow.operations}
    for operation in flow.operations:
        for before in operation.after:
            children.setdefault(before, []).append(operation.name)
    notes = {o.name: f"  (illegal after {', '.join(o.illegal_after)})" if o.illegal_after else ""
             for o in flow.operations}
    lines: list[str] = []

    def draw(name: str, prefix: str, last: bool, path: tuple[str, ...], top: bool) -> None:
        branch = "" if top else ("└── " if last else "├── ")
        if name in path:
            lines.append(f"{prefix}{branch}{name}  (cycle)")
            return
        lines.append(f"{prefix}{branch}{name}{notes.get(name, '')}")
        below = prefix if top else prefix + ("    " if last else "│   ")
        for index, child in enumerate(children.get(name, [])):
            draw(child, below, index == len(children[name]) - 1, (*path, name), False)

    for operation in flow.operations:
        if not operation.after:
            draw(operation.name, "", True, (), True)
    return lines


def _wide(wide: WideTable) -> list[str]:
    rows = f"one row per {wide.rows_from} row, under {wide.parent}" if wide.rows_from else "one row per entity"
    lines = [f"  {wide.name}  ({rows}; key {', '.join(wide.key)})"]
    for lookup in wide.lookups:
        refresh = "a change refreshes open entities" if lookup.refreshes else "kept as merged"
        lines.append(f"    looks up {lookup.dimension} by {lookup.by} ({refresh})")
    width = max(len(c.name) for c in wide.columns)
    kinds = max(len(c.type) for c in wide.columns)
    lines += [f"    {c.name:<{width}}  {c.type:<{kinds}}  {origin_text(c.origin)}" for c in wide.columns]
    return lines


def entity_keys(flow: FlowDeclaration) -> str:
    """The column naming the entity, as its first source has it."""
    return flow.sources[0].entity_key if flow.sources else "?"


def describe(flow: FlowDeclaration) -> list[str]:
    """Every part of ``flow``, as lines of text."""
    ids = f"{flow.entity_prefix}<{entity_keys(flow)}>" if flow.entity_prefix else f"<{entity_keys(flow)}>"
    lines = [f"flow {flow.name}: {flow.description}", f"source databases: {', '.join(flow.databases)}",
             f"entity ids: {ids}", "", "sources"]
    for source in flow.sources:
        settled = f"; settled at {source.settled_at}" if source.settled_at else ""
        settled += "; its delete deletes the entity" if source.deletes_entity else ""
        lines += [f"  {source.name}  (key {', '.join(source.key)}; entity {source.entity_key}{settled})",
                  f"    {_columns(source.columns)}"]
        lines += [f"    {operation} reads {', '.join(names) or 'nothing but that the row raises it'}"
                  for operation, names in source.reads.items()]
    for business in flow.business:
        lines += [f"  {business.name}  (business write for {', '.join(business.operations)})",
                  f"    {_columns(business.payload)}"]
    lines += ["", "dimensions"]
    lines += [f"  {d.name}  ({d.table} by {d.key}): {_columns(d.columns)}" for d in flow.dimensions]
    lines += ["", "raised operations"] + [f"  {_raise_text(rule)}" for rule in flow.raises]
    lines += ["", "state machine  (each operation waits for the one above it to be DONE)"]
    lines += [f"  {line}" for line in diagram(flow)]
    lines += ["", "operations"]
    for operation in flow.operations:
        status = f"; status {operation.status}" if operation.status is not None else ""
        after = f"after {', '.join(operation.after)}" if operation.after else "first"
        lines.append(f"  {operation.name}  ({after}{status})")
        lines += [f"    complete when {rule_text(rule)}" for rule in operation.complete_when]
    lines += ["", "wide tables"]
    for wide in flow.wide:
        lines += _wide(wide)
    if flow.snapshots is not None:
        lines += ["", f"snapshots: {flow.snapshots.table} holds {', '.join(flow.snapshots.tables)} "
                      "as each operation left them"]
    lines += ["", "ads"]
    for aggregate in flow.aggregates:
        measures = ", ".join(
            f"{m.name} = " + ("count" if m.column is None else f"sum({m.column}" + (f" - {m.less})" if m.less else ")"))
            for m in aggregate.measures)
        lines += [f"  {aggregate.name}  (from {aggregate.source} by {', '.join(aggregate.keys)})",
                  f"    {measures}",
                  f"    contributes while {_where(aggregate.when)}",
                  f"    retraction: ledger {aggregate.retraction.ledger} by {aggregate.retraction.version}"]
    index = flow.index
    if index is not None:
        lines += ["", f"index {index.index}: {', '.join(index.fields)}"]
        lines += [f"  {index.nested_as} ({table} rows): {', '.join(names)}" for table, names in index.nested.items()]
        if index.text:
            lines.append(f"  text (with a keyword): {', '.join(index.text)}")
        searched = [f"--{name.split('_')[0]} {field}" for name, field in index.conditions.items()]
        searched += [f"--{name} {field}" for name, field in (("min-amount/--max-amount", index.amount),
                                                             ("from/--to", index.day)) if field]
        lines.append(f"  search: {', '.join(searched) or 'by id only'}; newest first by "
                     f"{index.newest_by or 'id'}")
    if flow.events:
        lines += ["", "events"]
    for event in flow.events:
        lines += _event(event)
    return lines


def _event(event: PublishedEvent) -> list[str]:
    """An event: what one fact is, when it exists, what it carries."""
    fields = ", ".join(f"{name}={column}" if name != column.rpartition(".")[2] else column
                       for name, column in event.field_names().items())
    if event.first is not None:
        what = (f"the first by {event.first.by} per {', '.join(event.key)} (kept in {event.first.table}, "
                f"{event.first.entities})")
    else:
        what = f"one per {event.table} row, by {', '.join(event.key)}"
    lines = [f"  {event.name}  ({what})"]
    if event.when:
        lines.append(f"    while {_where(event.when)}")
    if event.row_when:
        lines.append(f"    for rows where {_where(event.row_when)}")
    return lines + [f"    carries {fields}"]
