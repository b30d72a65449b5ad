"""A flow as one declaration (DESIGN section 11): what it reads, which rows raise which
operations, its state machine, what each operation waits for, the wide tables it writes and
where every column comes from, its snapshots, ADS aggregates, index document and events.

Declarations are frozen Python dataclasses, not YAML validated by pydantic, because:

- the flows already are dataclasses (``flows.Flow``, ``flows.SourceTable``), and a declaration
  reuses their vocabulary: column types as ``inputs.columns`` reads them, operation names and
  status codes as constants a typo in which mypy and ruff catch before anything runs;
- everything that varies between flows is still data (predicates are ``Where`` values, not
  lambdas), so a declaration can be printed (``tdc flow show``), compared with the engine
  (``tests/unit/test_flow_declarations.py``) and checked as a whole (``flows.validation``);
- the checks that matter are across fields (a measure naming a wide column, a predecessor naming
  an operation, a cycle), which pydantic's per-field validation does not give for free: the same
  checks would be written by hand either way, and no new dependency or file format is needed.

The engine reads declarations through ``flows.registry`` (routing, state machines) and
``strategies`` (completeness checks, wide rows).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Change types a source row arrives with.
CHANGES = ("insert", "update", "delete")
#: Comparison operators of ``Where``; ``is null`` and ``not null`` take no value.
OPERATORS = ("=", "!=", "<", "<=", ">", ">=", "in", "not in", "is null", "not null")
#: The search conditions an ``IndexDocument`` may give fields for (``tdc search --store`` ...);
#: the entity id (``--order``) and the amount and day bounds are always the key, ``amount`` and ``day``.
SEARCH_CONDITIONS = ("store_id", "status", "member_id", "channel", "sku_id")


@dataclass(frozen=True)
class Where:
    """A column predicate: ``Where("status", "in", (20, 30))``."""

    column: str
    op: str
    value: Any = None

    def __str__(self) -> str:
        return f"{self.column} {self.op}" + ("" if self.op in ("is null", "not null") else f" {self.value!r}")


@dataclass(frozen=True)
class Source:
    """A CDC source table: its columns (types as ``inputs.columns`` reads them), its unique key,
    and the column naming the entity (order, document) a row belongs to."""

    name: str
    key: tuple[str, ...]
    columns: Mapping[str, str]
    #: The column naming the entity; each row belongs to exactly one.
    entity_key: str
    #: Operation -> the columns it reads of a row (absent: all): a newer row differing only
    #: elsewhere is stored but does not run that operation again.
    reads: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: On the header: the column whose time says when the entity was settled (reconciliation).
    settled_at: str | None = None
    #: On the header (one row per entity, keyed by ``entity_key``): a delete of its row deletes
    #: the entity, as Kingdee deletes a document with its entries.  Once the newest record of that
    #: row is a delete, no operation of the entity waits for data any more (it is gone for good:
    #: ``strategies.checkers``); each merges what is left, so the deleted entity's root row keeps
    #: its key and status, its copied columns NULL and its sums over no rows, and its child rows
    #: go with their source rows.  A later record of the row (newer than the delete) revives it.
    deletes_entity: bool = False


@dataclass(frozen=True)
class Business:
    """A business system pushing writes for an entity, and the operations it may feed."""

    name: str
    payload: Mapping[str, str]
    operations: tuple[str, ...]


@dataclass(frozen=True)
class Dimension:
    """A dimension kept in Redis from its source table (CDC and the T+1 reload), by key."""

    name: str
    table: str
    key: str
    columns: Mapping[str, str]


@dataclass(frozen=True)
class Raise:
    """Rows of ``table`` (a source, or a business source) with a change in ``changes`` and all
    of ``when`` true raise ``operations``."""

    table: str
    operations: tuple[str, ...]
    when: tuple[Where, ...] = ()
    changes: tuple[str, ...] = CHANGES


# --- completeness: what an operation's data must hold before it may run -------------------------

@dataclass(frozen=True)
class RowArrived:
    """A live row of ``table`` (that satisfies ``when``) has arrived."""

    table: str
    when: tuple[Where, ...] = ()


@dataclass(frozen=True)
class RowsCounted:
    """The number of live rows of ``table`` equals ``count_column`` of the one row of ``header``."""

    table: str
    header: str
    count_column: str


@dataclass(frozen=True)
class ValueMatched:
    """Some live row of ``table`` has ``column`` equal to ``other_column`` of the one row of ``other``."""

    table: str
    column: str
    other: str
    other_column: str


@dataclass(frozen=True)
class DetailsSum:
    """For every row of ``header`` satisfying ``when``: the rows of ``details`` with the same
    ``link`` sum ``column`` to its ``total_column``."""

    details: str
    column: str
    header: str
    total_column: str
    link: str
    when: tuple[Where, ...] = ()


@dataclass(frozen=True)
class RowsPaired:
    """Every live row of ``table`` has a live row of ``other`` with the same ``link`` (an ERP
    entry and its finance entry)."""

    table: str
    other: str
    link: str


Completeness = RowArrived | RowsCounted | ValueMatched | DetailsSum | RowsPaired


@dataclass(frozen=True)
class Operation:
    """One step of the flow's state machine."""

    name: str
    #: Operations that must be DONE before this one may run.
    after: tuple[str, ...] = ()
    #: Operations whose completion makes this one illegal (a data error, not a wait).
    illegal_after: tuple[str, ...] = ()
    #: The status the wide row reaches (it keeps the highest); None: it does not move the status.
    status: int | None = None
    #: What its data must hold, all of it, before it may run.
    complete_when: tuple[Completeness, ...] = ()


# --- wide tables: where each column comes from -------------------------------------------------

@dataclass(frozen=True)
class Copy:
    """The value of ``column`` in the entity's row of ``table`` (a table with several rows per
    entity: the first live one).  On a child wide row: its own source row, or the row of
    ``table`` with the same key (an entry's finance entry)."""

    table: str
    column: str


@dataclass(frozen=True)
class Through:
    """Only rows whose ``key`` names a row of ``table`` satisfying ``when``."""

    table: str
    key: str
    when: tuple[Where, ...] = ()


@dataclass(frozen=True)
class Sum:
    """The sum of ``column`` (None: the number of rows) over the entity's live rows of ``table``
    satisfying ``when`` (and ``through``); on a child wide row, only rows whose ``per_row``
    column equals the child's key."""

    table: str
    column: str | None
    when: tuple[Where, ...] = ()
    through: Through | None = None
    per_row: str | None = None
    #: What a sum over no rows is: 0, or NULL (a column that only has a value once rows exist).
    null_when_empty: bool = False


@dataclass(frozen=True)
class Looked:
    """An attribute of a dimension, looked up by one of the wide table's ``lookups``."""

    dimension: str
    attribute: str


@dataclass(frozen=True)
class Parent:
    """A child wide row's copy of its parent row's column."""

    column: str


@dataclass(frozen=True)
class Status:
    """The highest ``Operation.status`` of the operations merged so far (a row never goes back)."""


@dataclass(frozen=True)
class BusinessDay:
    """The business day, in the deployment's business time zone, of the first of ``columns``
    (datetime columns of this wide row) that is not NULL."""

    columns: tuple[str, ...]


@dataclass(frozen=True)
class Chosen:
    """``column`` of one live row of ``table``: of the rows satisfying ``when`` (narrowed, when
    any match, to those whose ``match[0]`` equals this wide row's ``match[1]``), the newest by
    ``newest_by``; NULL when there is none.  The payment a merge takes, the last refund."""

    table: str
    column: str
    newest_by: str
    when: tuple[Where, ...] = ()
    match: tuple[str, str] | None = None


#: What ``Bookkeeping`` may record.
BOOKKEEPING = ("last_operation", "version", "updated_at", "source_digest")


@dataclass(frozen=True)
class Bookkeeping:
    """Written by the engine about the write itself, not the entity: ``last_operation`` (the
    operation merged last), ``version`` (the optimistic lock: one more per change),
    ``updated_at`` (when the row last changed) or ``source_digest`` (a digest of the row's
    source columns and its child rows', which reconciliation recomputes in SQL)."""

    kind: str


Origin = Copy | Sum | Looked | Parent | Status | BusinessDay | Chosen | Bookkeeping


@dataclass(frozen=True)
class Column:
    """A wide column and where its value comes from.  A value from a source table (``Copy``,
    ``Sum``, ``Chosen``) is written when an operation that table raises is merged, so an
    operation's columns change only once its own completeness rules hold (a refund's amount
    waits for REFUND, not for the next SUBMIT); the other origins are written at every merge."""

    name: str
    type: str
    origin: Origin


@dataclass(frozen=True)
class Lookup:
    """The wide table looks ``dimension`` up by its column ``by``; ``refreshes``: a change of
    the dimension re-merges the open entities that used the changed key."""

    dimension: str
    by: str
    refreshes: bool = False


@dataclass(frozen=True)
class WideTable:
    """A wide table: one row per entity, or (``rows_from``) one per live row of a source table,
    belonging to the row of ``parent``."""

    name: str
    key: tuple[str, ...]
    columns: tuple[Column, ...]
    lookups: tuple[Lookup, ...] = ()
    rows_from: str | None = None
    parent: str | None = None
    #: Secondary indexes, name -> columns (what search and reconciliation read by).
    indexes: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    def column(self, name: str) -> Column | None:
        return next((c for c in self.columns if c.name == name), None)


@dataclass(frozen=True)
class Snapshots:
    """The wide rows of ``tables`` as they were when each operation finished, in ``table``."""

    table: str
    tables: tuple[str, ...]


@dataclass(frozen=True)
class Measure:
    """A sum of ``column`` (None: 1 per contributing entity) less ``less``."""

    name: str
    column: str | None = None
    less: str | None = None


@dataclass(frozen=True)
class Retraction:
    """How re-processing stays exact: ``ledger`` keeps each entity's last contribution and the
    wide row's ``version`` it came from, and a newer version applies (new - old)."""

    ledger: str
    version: str = "version"


@dataclass(frozen=True)
class Aggregate:
    """An ADS table: rows of wide table ``source`` summed by ``keys``; an entity contributes
    while its root wide row satisfies ``when``."""

    name: str
    source: str
    keys: tuple[str, ...]
    measures: tuple[Measure, ...]
    when: tuple[Where, ...]
    retraction: Retraction


@dataclass(frozen=True)
class IndexDocument:
    """The flow's search document (``search.documents``): one per entity, its id the entity id
    (``pos:PO0001``), in versioned indices behind the alias ``index``, written with the root wide
    row's ``version`` as an external version.  ``fields`` are root wide columns (they must hold
    the root's key and ``version``); ``nested`` names at most one child wide table of the root,
    whose rows are carried as ``nested_as`` (an Elasticsearch ``nested`` field) with its fields.
    The search conditions of ``tdc search`` read the fields the document declares for them."""

    index: str
    fields: tuple[str, ...]
    nested: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    #: The name the nested child rows are carried under.
    nested_as: str = "items"
    #: Free-text fields (``text``, for words) that also get a keyword (exact filters, sorting).
    text: tuple[str, ...] = ()
    #: Newest first: the root field documents are sorted by (descending), then the root's key.
    newest_by: str | None = None
    #: Search condition (``SEARCH_CONDITIONS``: ``store_id``, ``sku_id``, ...) -> the field
    #: it filters on; a nested field is ``nested_as.field`` (``items.sku_id``).
    conditions: Mapping[str, str] = field(default_factory=dict)
    #: The field ``--min-amount``/``--max-amount`` bound, and the day ``--from``/``--to`` bound.
    amount: str | None = None
    day: str | None = None


@dataclass(frozen=True)
class AnyOf:
    """True when any of ``predicates`` holds (a tuple of predicates must all hold; this is the
    one way to say "or"): a returned line is one with a refunded quantity or amount."""

    predicates: tuple[Where, ...]

    def __str__(self) -> str:
        return "(" + " or ".join(str(p) for p in self.predicates) + ")"


#: A condition of an event: a predicate, or several of which one must hold.
Condition = Where | AnyOf


@dataclass(frozen=True)
class Field:
    """An event field named otherwise than the wide column it carries."""

    name: str
    column: str


@dataclass(frozen=True)
class FirstOf:
    """The event's fact is not one entity's but a group's, across entities: of the entities whose
    root row satisfies the event's ``when``, the first by ``by`` (a root column; ties: the smaller
    entity id), one per value of the event's ``key`` (root columns: the group).  The relay keeps
    in the warehouse each entity's candidacy (``entities``: its group, its ``by`` value and the
    fields, with the wide-row version they came from) and each group's first (``table``: the
    fields, a revision that is the event's version, and when no entity is left)."""

    by: str
    table: str
    entities: str


@dataclass(frozen=True)
class PublishedEvent:
    """An analytics event the flow publishes from the changelog's images.  ``table`` is the
    root wide table (one fact per entity) or its child (one fact per child row); a fact exists
    while the root row satisfies ``when`` (and the child row ``row_when``); ``key`` is its
    natural key (what its id is made from) and ``fields`` what its data carries: in a child
    table's event, ``root_table.column`` names a column of the root row, a bare name one of the
    child row; ``Field(name, column)`` carries a column under another name.  A new fact is a
    ``create``, one whose data changed an ``update``, one gone a ``delete``.  With ``first``, the
    fact is the first entity of each ``key`` instead (``FirstOf``)."""

    name: str
    table: str
    key: tuple[str, ...]
    fields: tuple[str | Field, ...]
    when: tuple[Condition, ...] = ()
    row_when: tuple[Condition, ...] = ()
    first: FirstOf | None = None

    def field_names(self) -> dict[str, str]:
        """Each data field's name -> the column it carries (as declared: maybe ``root.column``)."""
        return {(f.name if isinstance(f, Field) else f.rpartition(".")[2]): (f.column if isinstance(f, Field) else f)
                for f in self.fields}


@dataclass(frozen=True)
class FlowDeclaration:
    """Everything a flow is.  The first wide table is the root: one row per entity."""

    name: str
    description: str
    databases: tuple[str, ...]
    sources: tuple[Source, ...]
    operations: tuple[Operation, ...]
    raises: tuple[Raise, ...]
    wide: tuple[WideTable, ...]
    dimensions: tuple[Dimension, ...] = ()
    business: tuple[Business, ...] = ()
    snapshots: Snapshots | None = None
    aggregates: tuple[Aggregate, ...] = ()
    index: IndexDocument | None = None
    events: tuple[PublishedEvent, ...] = ()
    #: What the ids of this flow's entities start with where flows share tdc's tables (task
    #: tables, leases, failures, ledgers): ``pos:`` makes till sale ``T1`` the entity ``pos:T1``.
    #: At most one flow has none: ``gqsh``, whose ids tdc stored before flows shared them.
    entity_prefix: str = ""

    @property
    def root(self) -> WideTable | None:
        return self.wide[0] if self.wide else None

    def predecessors(self) -> dict[str, tuple[str, ...]]:
        return {operation.name: operation.after for operation in self.operations}
