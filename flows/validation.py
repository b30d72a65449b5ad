"""Checking a flow declaration as a whole: every name it uses is declared, every column exists,
the state machine has no cycle.  ``problems`` lists every error at once, each naming the flow,
the part and the field: ``flow 'pos': ads 'ads_pos_order_sales' measure 'amount': no column
'amount' in wide table 'dwd_gqsh_pos_order_t_order_info'``."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from flows.declaration import (
    BOOKKEEPING,
    CHANGES,
    OPERATORS,
    SEARCH_CONDITIONS,
    Bookkeeping,
    BusinessDay,
    Chosen,
    Column,
    Completeness,
    Copy,
    DetailsSum,
    FlowDeclaration,
    IndexDocument,
    Looked,
    Parent,
    RowArrived,
    RowsCounted,
    RowsPaired,
    Source,
    Status,
    Sum,
    ValueMatched,
    Where,
    WideTable,
)
from flows.event_validation import check_events
from inputs.columns import column_type


class DeclarationError(ValueError):
    """A declaration does not hold together; ``problems`` lists every reason."""

    def __init__(self, problems: list[str]):
        super().__init__("\n".join(problems))
        self.problems = problems


def checked(flows: Iterable[FlowDeclaration]) -> tuple[FlowDeclaration, ...]:
    """``flows`` when they hold together, alone and side by side; raises DeclarationError."""
    flows = tuple(flows)
    found = [problem for flow in flows for problem in problems(flow)] + problems_across(flows)
    if found:
        raise DeclarationError(found)
    return flows


def problems_across(flows: Iterable[FlowDeclaration]) -> list[str]:
    """What is wrong between flows: a name used twice, a source table two flows claim, a
    dimension declared two ways, entity ids that could belong to two flows, a table two flows
    write."""
    found: list[str] = []
    owners: dict[str, str] = {}
    dimensions: dict[str, tuple[str, object]] = {}
    prefixes: dict[str, str] = {}
    outputs: dict[str, str] = {}
    aliases: dict[str, str] = {}
    publishers: dict[str, str] = {}
    for flow in flows:
        found += _alias_problems(flow, aliases)
        if flow.name in owners.values():
            found.append(f"flow {flow.name!r}: declared twice")
        mine = flow.entity_prefix
        if mine and not mine.endswith(":"):
            found.append(f"flow {flow.name!r}: entity_prefix {mine!r}: end it with ':' (pos:)")
        clash = next((prefix for prefix in prefixes
                      if prefix == mine or (prefix and mine and (prefix.startswith(mine) or mine.startswith(prefix)))),
                     None)
        if clash is not None:
            found.append(f"flow {flow.name!r}: entity_prefix {mine!r}: flow {prefixes[clash]!r} has {clash!r}; "
                         "an entity id must name one flow")
        prefixes.setdefault(mine, flow.name)
        for table in _outputs(flow):
            if table in outputs and outputs[table] != flow.name:
                found.append(f"flow {flow.name!r}: table {table!r}: already written by flow {outputs[table]!r}")
            outputs.setdefault(table, flow.name)
        for name in [s.name for s in flow.sources] + [b.name for b in flow.business]:
            if name in owners and owners[name] != flow.name:
                found.append(f"flow {flow.name!r}: source {name!r}: already a source of flow {owners[name]!r}")
            owners.setdefault(name, flow.name)
        for event in flow.events:
            if publishers.setdefault(event.name, flow.name) != flow.name:
                found.append(f"flow {flow.name!r}: event {event.name!r}: already published by flow "
                             f"{publishers[event.name]!r} (an event type and its ids are one for every flow)")
        for dimension in flow.dimensions:
            first = dimensions.setdefault(dimension.name, (flow.name, dimension))
            if first[1] != dimension:
                found.append(f"flow {flow.name!r}: dimension {dimension.name!r}: declared differently by flow "
                             f"{first[0]!r}")
    return found


def _alias_problems(flow: FlowDeclaration, aliases: dict[str, str]) -> list[str]:
    """An index alias used by two flows, or one inside another's versioned indices (ALIAS-v*),
    where that flow's index template would map it."""
    if flow.index is None:
        return []
    mine, found = flow.index.index, []
    for alias, owner in aliases.items():
        if alias == mine:
            found.append(f"flow {flow.name!r}: index {mine!r}: already the index of flow {owner!r}")
        elif mine.startswith(f"{alias}-v") or alias.startswith(f"{mine}-v"):
            found.append(f"flow {flow.name!r}: index {mine!r}: overlaps the versioned indices of index {alias!r} "
                         f"({alias}-v1, ...) of flow {owner!r}")
    aliases.setdefault(mine, flow.name)
    return found


def _outputs(flow: FlowDeclaration) -> list[str]:
    """The tables a flow writes: wide tables, snapshots, ADS and their ledger, the tables of its
    first-of events."""
    names = [wide.name for wide in flow.wide] + [a.name for a in flow.aggregates]
    names += [name for e in flow.events if e.first is not None for name in (e.first.table, e.first.entities)]
    names += list(dict.fromkeys(a.retraction.ledger for a in flow.aggregates))
    return names + ([flow.snapshots.table] if flow.snapshots is not None else [])


def problems(flow: FlowDeclaration) -> list[str]:
    """Every error in ``flow``, in declaration order; empty when it holds together."""
    return _Checker(flow).run()


class _Checker:
    def __init__(self, flow: FlowDeclaration):
        self.flow = flow
        self.found: list[str] = []
        #: Source or business source -> its columns.
        self.tables: dict[str, Mapping[str, str]] = {s.name: s.columns for s in flow.sources}
        self.tables.update({b.name: b.payload for b in flow.business})
        self.dimensions = {d.name: d for d in flow.dimensions}
        self.operations = {o.name for o in flow.operations}
        self.wide = {w.name: w for w in flow.wide}

    def error(self, where: str, problem: str) -> None:
        self.found.append(f"flow {self.flow.name!r}: {where}: {problem}")

    def run(self) -> list[str]:
        if not self.flow.name.isidentifier():
            self.error("name", f"{self.flow.name!r} is not a name (letters, digits, _)")
        self.duplicates()
        self.sources()
        self.state_machine()
        self.raises()
        for wide in self.flow.wide:
            self.wide_table(wide)
        self.outputs()
        return self.found

    # --- names ---------------------------------------------------------------------------------

    def duplicates(self) -> None:
        flow = self.flow
        groups = {
            "source": [s.name for s in flow.sources] + [b.name for b in flow.business],
            "dimension": [d.name for d in flow.dimensions], "operation": [o.name for o in flow.operations],
            "wide table": [w.name for w in flow.wide], "ads": [a.name for a in flow.aggregates],
            "event": [e.name for e in flow.events]}
        for what, names in groups.items():
            for name, count in Counter(names).items():
                if count > 1:
                    self.error(f"{what} {name!r}", f"declared {count} times")
        for name in self.tables.keys() & {d.table for d in flow.dimensions}:
            self.error(f"source {name!r}", "also the table of a dimension")
        for wide in flow.wide:
            for name, count in Counter(c.name for c in wide.columns).items():
                if count > 1:
                    self.error(f"wide table {wide.name!r} column {name!r}", f"declared {count} times")
        for aggregate in flow.aggregates:
            for name, count in Counter(m.name for m in aggregate.measures).items():
                if count > 1:
                    self.error(f"ads {aggregate.name!r} measure {name!r}", f"declared {count} times")

    def types(self, where: str, columns: Mapping[str, str]) -> None:
        for name, declared in columns.items():
            try:
                column_type(declared)
            except ValueError as error:
                self.error(f"{where} column {name!r}", str(error))

    def column(self, where: str, table: str, column: str) -> bool:
        """True when ``column`` is one of source ``table``'s; otherwise says why."""
        if table not in self.tables:
            self.error(where, f"no source {table!r}")
            return False
        if column not in self.tables[table]:
            self.error(where, f"no column {column!r} in source {table!r}")
            return False
        return True

    def wide_column(self, where: str, wide: str, column: str) -> None:
        if wide not in self.wide:
            self.error(where, f"no wide table {wide!r}")
        elif self.wide[wide].column(column) is None:
            self.error(where, f"no column {column!r} in wide table {wide!r}")

    def measured(self, where: str, wide: WideTable, name: str) -> None:
        """``name`` is a number column of ``wide``."""
        column = wide.column(name)
        if column is None:
            self.error(where, f"no column {name!r} in wide table {wide.name!r}")
            return
        try:
            kind = column_type(column.type).kind
        except ValueError:
            return  # said where the column is declared
        if kind not in ("int", "decimal"):
            self.error(where, f"column {name!r} of wide table {wide.name!r} is not a number ({column.type})")

    def predicates(self, where: str, table: str, when: tuple[Where, ...], wide: bool = False) -> None:
        for predicate in when:
            here = f"{where} when {str(predicate)!r}"
            if predicate.op not in OPERATORS:
                self.error(here, f"no operator {predicate.op!r} (one of {', '.join(OPERATORS)})")
                continue
            if wide:
                self.wide_column(here, table, predicate.column)
                column = self.wide[table].column(predicate.column) if table in self.wide else None
                declared = None if column is None else column.type
            else:
                found = self.column(here, table, predicate.column)
                declared = self.tables[table][predicate.column] if found else None
            if declared is not None:
                self.compared(here, predicate, declared)

    def compared(self, where: str, predicate: Where, declared: str) -> None:
        """The predicate's value fits its operator and the column's type."""
        op, value = predicate.op, predicate.value
        if op in ("is null", "not null"):
            if value is not None:
                self.error(where, f"{op!r} takes no value")
            return
        if op in ("in", "not in") and not (isinstance(value, tuple | list | frozenset) and value):
            self.error(where, f"{op!r} takes a non-empty tuple of values")
            return
        try:
            kind = column_type(declared).kind
        except ValueError:
            return  # said where the column is declared
        for one in value if op in ("in", "not in") else (value,):
            fits = {"int": isinstance(one, int) and not isinstance(one, bool), "text": isinstance(one, str)}
            if not fits.get(kind, one is not None):
                self.error(where, f"{one!r} is not a value of {declared} column {predicate.column!r}")

    def operation(self, where: str, name: str) -> None:
        if name not in self.operations:
            self.error(f"{where} {name!r}", f"no operation {name!r}")

    # --- inputs --------------------------------------------------------------------------------

    def sources(self) -> None:
        for source in self.flow.sources:
            where = f"source {source.name!r}"
            self.types(where, source.columns)
            if not source.key:
                self.error(f"{where} key", "no key columns")
            elif len(source.key) > 1:
                self.error(f"{where} key", f"{', '.join(source.key)}: tdc routes rows by a key of one column "
                                           "(a key of several columns is not supported yet)")
            for key in source.key:
                self.column(f"{where} key {key!r}", source.name, key)
            self.column(f"{where} entity_key {source.entity_key!r}", source.name, source.entity_key)
            if source.settled_at is not None and self.column(f"{where} settled_at {source.settled_at!r}",
                                                             source.name, source.settled_at):
                if column_type(source.columns[source.settled_at]).name not in ("datetime", "timestamp"):
                    self.error(f"{where} settled_at {source.settled_at!r}", "not a datetime or timestamp column")
            if source.deletes_entity:
                self.deleting(where, source)
            for operation, columns in source.reads.items():
                self.operation(f"{where} reads", operation)
                for name in columns:
                    self.column(f"{where} reads {operation!r}", source.name, name)
        for business in self.flow.business:
            self.types(f"source {business.name!r}", business.payload)
            for operation in business.operations:
                self.operation(f"source {business.name!r} operations", operation)
        for dimension in self.flow.dimensions:
            self.types(f"dimension {dimension.name!r}", dimension.columns)
            if dimension.key not in dimension.columns:
                self.error(f"dimension {dimension.name!r} key {dimension.key!r}",
                           f"no column {dimension.key!r} in dimension table {dimension.table!r}")

    def deleting(self, where: str, source: Source) -> None:
        """A source whose row's delete deletes the entity holds one row per entity, and its
        deletes raise an operation (otherwise a delete is refused at intake and never stored)."""
        if source.key != (source.entity_key,):
            self.error(f"{where} deletes_entity", f"its key {source.key!r} is not its entity_key "
                       f"{source.entity_key!r}: one row per entity is the entity's own")
        if not any(rule.table == source.name and "delete" in rule.changes for rule in self.flow.raises):
            self.error(f"{where} deletes_entity", "no raise takes its deletes")

    def raises(self) -> None:
        raised = {name for b in self.flow.business for name in b.operations}
        for rule in self.flow.raises:
            where = f"raise on {rule.table!r}"
            if rule.table not in self.tables:
                self.error(where, f"no source {rule.table!r}")
            for change in rule.changes:
                if change not in CHANGES:
                    self.error(f"{where} change {change!r}", f"not a change type ({', '.join(CHANGES)})")
            for name in rule.operations:
                self.operation(f"{where} operation", name)
            if rule.table in self.tables:
                self.predicates(where, rule.table, rule.when)
            raised.update(rule.operations)
        for operation in self.flow.operations:
            if operation.name not in raised:
                self.error(f"operation {operation.name!r}", "no source row or business write raises it")

    # --- the state machine ---------------------------------------------------------------------

    def state_machine(self) -> None:
        for operation in self.flow.operations:
            where = f"operation {operation.name!r}"
            for before in operation.after:
                self.operation(f"{where} after", before)
            for before in operation.illegal_after:
                self.operation(f"{where} illegal_after", before)
            for rule in operation.complete_when:
                self.completeness(f"{where} complete_when {type(rule).__name__}", rule)
        for cycle in cycles(self.flow.predecessors()):
            self.error("state machine", f"cycle {' -> '.join(cycle)} (each waits for the next)")

    def completeness(self, where: str, rule: Completeness) -> None:
        if isinstance(rule, RowArrived):
            if rule.table not in self.tables:
                self.error(where, f"no source {rule.table!r}")
            else:
                self.predicates(where, rule.table, rule.when)
        elif isinstance(rule, RowsCounted):
            if rule.table not in self.tables:
                self.error(where, f"no source {rule.table!r}")
            self.column(where, rule.header, rule.count_column)
        elif isinstance(rule, ValueMatched):
            self.column(where, rule.table, rule.column)
            self.column(where, rule.other, rule.other_column)
        elif isinstance(rule, RowsPaired):
            self.column(where, rule.table, rule.link)
            self.column(where, rule.other, rule.link)
        elif isinstance(rule, DetailsSum):
            self.column(where, rule.details, rule.column)
            self.column(where, rule.details, rule.link)
            self.column(where, rule.header, rule.total_column)
            self.column(where, rule.header, rule.link)
            if rule.header in self.tables:
                self.predicates(where, rule.header, rule.when)

    # --- wide tables ---------------------------------------------------------------------------

    def wide_table(self, wide: WideTable) -> None:
        where = f"wide table {wide.name!r}"
        is_root = wide is self.flow.wide[0]
        if is_root and (wide.rows_from or wide.parent):
            self.error(where, "the first wide table is the root: one row per entity, no rows_from or parent")
        if not is_root and not (wide.rows_from and wide.parent):
            self.error(where, "a child wide table needs rows_from (a source) and parent (a wide table)")
        if wide.rows_from is not None and wide.rows_from not in self.tables:
            self.error(f"{where} rows_from {wide.rows_from!r}", f"no source {wide.rows_from!r}")
        if wide.parent is not None and wide.parent not in self.wide:
            self.error(f"{where} parent {wide.parent!r}", f"no wide table {wide.parent!r}")
        if not is_root and wide is not self.flow.wide[1]:
            self.error(where, "the engine merges one root wide table and at most one child table under it "
                              "(a second child table is not supported yet)")
        elif not is_root and wide.parent is not None and wide.parent != self.flow.wide[0].name:
            self.error(f"{where} parent {wide.parent!r}", "the child table's parent must be the root wide table")
        if len(wide.key) > 1:
            self.error(f"{where} key", f"{', '.join(wide.key)}: a wide table's key is one column "
                                       "(a key of several columns is not supported yet)")
        for key in wide.key:
            if wide.column(key) is None:
                self.error(f"{where} key {key!r}", f"no column {key!r} in wide table {wide.name!r}")
        looked_up = {lookup.dimension for lookup in wide.lookups}
        for lookup in wide.lookups:
            if lookup.dimension not in self.dimensions:
                self.error(f"{where} lookup {lookup.dimension!r}", f"no dimension {lookup.dimension!r}")
            if wide.column(lookup.by) is None:
                self.error(f"{where} lookup {lookup.dimension!r} by {lookup.by!r}",
                           f"no column {lookup.by!r} in wide table {wide.name!r}")
        self.types(where, {c.name: c.type for c in wide.columns})
        for column in wide.columns:
            self.origin(f"{where} column {column.name!r}", wide, column.origin, looked_up)
            if isinstance(column.origin, Bookkeeping) and column.name != column.origin.kind:
                self.error(f"{where} column {column.name!r}", f"a Bookkeeping column is named after what it "
                                                              f"records: {column.origin.kind!r}")
        if is_root:
            kept = {c.origin.kind for c in wide.columns if isinstance(c.origin, Bookkeeping)}
            for kind, why in (("version", "the optimistic lock"), ("updated_at", "the change time"),
                              ("source_digest", "what reconciliation proves a day's rows by")):
                if kind not in kept:
                    self.error(where, f"the root wide table needs Column({kind!r}, ..., Bookkeeping({kind!r})): {why}")

    def origin(self, where: str, wide: WideTable, origin: object, looked_up: set[str]) -> None:
        if isinstance(origin, Copy):
            self.column(where, origin.table, origin.column)
        elif isinstance(origin, Sum):
            if origin.column is not None:
                self.column(where, origin.table, origin.column)
            elif origin.table not in self.tables:
                self.error(where, f"no source {origin.table!r}")
            if origin.table in self.tables:
                self.predicates(where, origin.table, origin.when)
            if origin.through is not None:
                self.column(f"{where} through", origin.table, origin.through.key)
                if self.column(f"{where} through", origin.through.table, origin.through.key):
                    self.predicates(f"{where} through", origin.through.table, origin.through.when)
            if origin.per_row is not None:
                if wide.rows_from is None:
                    self.error(f"{where} per_row {origin.per_row!r}", "only a child wide table has rows")
                self.column(f"{where} per_row", origin.table, origin.per_row)
        elif isinstance(origin, Looked):
            dimension = self.dimensions.get(origin.dimension)
            if dimension is None:
                self.error(where, f"no dimension {origin.dimension!r}")
            elif origin.attribute not in dimension.columns:
                self.error(where, f"no column {origin.attribute!r} in dimension {origin.dimension!r}")
            elif origin.dimension not in looked_up:
                self.error(where, f"wide table {wide.name!r} does not look up dimension {origin.dimension!r}")
        elif isinstance(origin, Parent):
            if wide.parent is None:
                self.error(where, f"wide table {wide.name!r} has no parent")
            elif wide.parent in self.wide:
                self.wide_column(where, wide.parent, origin.column)
        elif isinstance(origin, Status):
            if not any(operation.status is not None for operation in self.flow.operations):
                self.error(where, "no operation reaches a status")
        elif isinstance(origin, BusinessDay):
            for name in origin.columns:
                self.wide_column(where, wide.name, name)
        elif isinstance(origin, Chosen):
            for name in (origin.column, origin.newest_by):
                self.column(where, origin.table, name)
            if origin.table in self.tables:
                self.predicates(where, origin.table, origin.when)
            if origin.match is not None:
                self.column(f"{where} match", origin.table, origin.match[0])
                self.wide_column(f"{where} match", wide.name, origin.match[1])
        elif isinstance(origin, Bookkeeping):
            if origin.kind not in BOOKKEEPING:
                self.error(where, f"bookkeeping {origin.kind!r} is not one of {', '.join(BOOKKEEPING)}")
        else:
            self.error(where, f"{type(origin).__name__} is not an origin (Copy, Sum, Looked, Parent, Status, "
                              "BusinessDay, Chosen, Bookkeeping)")
        for name, columns in wide.indexes.items():
            for column in columns:
                self.wide_column(f"wide table {wide.name!r} index {name!r}", wide.name, column)

    # --- outputs -------------------------------------------------------------------------------

    def outputs(self) -> None:
        flow, root = self.flow, self.flow.root
        if root is None:
            self.error("wide", "no wide table")
            return
        ledgers = sorted({a.retraction.ledger for a in flow.aggregates})
        if len(ledgers) > 1:
            self.error("aggregates", f"one ledger per flow keeps what each entity contributes to all its aggregates; "
                                     f"declared: {', '.join(ledgers)}")
        if flow.snapshots is not None:
            for name in flow.snapshots.tables:
                if name not in self.wide:
                    self.error(f"snapshots {flow.snapshots.table!r} table {name!r}", f"no wide table {name!r}")
        for aggregate in flow.aggregates:
            where = f"ads {aggregate.name!r}"
            if aggregate.source not in self.wide:
                self.error(f"{where} source {aggregate.source!r}", f"no wide table {aggregate.source!r}")
                continue
            for key in aggregate.keys:
                self.wide_column(f"{where} key {key!r}", aggregate.source, key)
            for measure in aggregate.measures:
                for column in (measure.column, measure.less):
                    if column is not None:
                        self.measured(f"{where} measure {measure.name!r}", self.wide[aggregate.source], column)
            self.predicates(where, root.name, aggregate.when, wide=True)
            self.wide_column(f"{where} retraction version {aggregate.retraction.version!r}", root.name,
                             aggregate.retraction.version)
        if flow.index is not None:
            self.index_document(flow.index, root)
        check_events(self)

    def index_document(self, index: IndexDocument, root: WideTable) -> None:
        """Every field a column of the wide table it comes from; the id and version there; the
        text, sort, condition, amount and day fields among the document's."""
        where = f"index {index.index!r}"
        for name, count in Counter(index.fields).items():
            if count > 1:
                self.error(f"{where} field {name!r}", f"declared {count} times")
        for name in index.fields:
            self.wide_column(f"{where} field {name!r}", root.name, name)
        for needed, why in ((root.key[0] if root.key else None, "the root's key is the document's id"),
                            ("version", "documents are written at the root's version")):
            if needed is not None and needed not in index.fields:
                self.error(f"{where} fields", f"no {needed!r}: {why}")
        columns: dict[str, Column | None] = {name: root.column(name) for name in index.fields}
        readable = [w.name for w in self.flow.wide[1:] if w.parent == root.name][:1]
        if not index.nested_as or "." in index.nested_as:
            self.error(f"{where} nested_as {index.nested_as!r}", "not a field name (no dots)")
        if len(index.nested) > 1:
            self.error(f"{where} nested", f"{len(index.nested)} tables; a document nests one child wide table")
        for table, names in index.nested.items():
            here = f"{where} nested {table!r}"
            if table not in self.wide:
                self.error(here, f"no wide table {table!r}")
                continue
            parent = self.wide[table].parent
            if parent is not None and parent in self.wide and table not in readable:
                self.error(here, f"not the child wide table read with the root ({', '.join(readable)})"
                           if parent == root.name else f"a child of {parent!r}, not of the root {root.name!r}")
            if index.nested_as in index.fields:
                self.error(f"{here} as {index.nested_as!r}", "already a field of the document")
            for name in names:
                self.wide_column(f"{here} field {name!r}", table, name)
                columns[f"{index.nested_as}.{name}"] = self.wide[table].column(name)
        for name in index.text:
            if name not in columns:
                self.error(f"{where} text {name!r}", "not a field of the document")
            elif (column := columns[name]) is not None and not _text_column(column):
                self.error(f"{where} text {name!r}", f"not a text column ({column.type})")
        for role, field, kinds in (("newest_by", index.newest_by, ("date", "datetime", "timestamp")),
                                   ("amount", index.amount, None), ("day", index.day, ("date",))):
            if field is None:
                continue
            if field not in index.fields:
                self.error(f"{where} {role} {field!r}", "not a root field of the document")
            elif kinds is not None and (column := root.column(field)) is not None and not _typed(column, kinds):
                self.error(f"{where} {role} {field!r}", f"not a {' or '.join(kinds)} column ({column.type})")
        for condition, name in index.conditions.items():
            if condition not in SEARCH_CONDITIONS:
                self.error(f"{where} condition {condition!r}", f"no such condition ({', '.join(SEARCH_CONDITIONS)})")
            if name not in columns:
                self.error(f"{where} condition {condition!r} field {name!r}", "not a field of the document")
        if index.amount is not None and index.amount in index.fields:
            self.measured(f"{where} amount {index.amount!r}", root, index.amount)


def _text_column(column: Column) -> bool:
    try:
        return column_type(column.type).kind == "text"
    except ValueError:
        return True  # said where the column is declared


def _typed(column: Column, names: tuple[str, ...]) -> bool:
    """``column``'s declared type is one of ``names`` (date, datetime, ...)."""
    try:
        return column_type(column.type).name in names
    except ValueError:
        return True  # said where the column is declared


def cycles(after: Mapping[str, tuple[str, ...]]) -> list[list[str]]:
    """The cycles of the graph operation -> operations it needs, each once, as paths that end
    where they start (``['PAY', 'REFUND', 'PAY']``), starting at their smallest name."""
    found: dict[tuple[str, ...], list[str]] = {}
    state: dict[str, int] = {}  # 1: on the current path, 2: finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in after.get(node, ()):
            if nxt not in after:
                continue
            if state.get(nxt) == 1:
                loop = path[path.index(nxt):] + [node] if nxt in path else [node]
                start = loop.index(min(loop))
                ring = loop[start:] + loop[:start]
                found.setdefault(tuple(ring), ring + [ring[0]])
            elif state.get(nxt) is None:
                visit(nxt, path + [node])
        state[node] = 2

    for node in after:
        if node not in state:
            visit(node, [])
    return list(found.values())
