"""Declared flows: which source tables and business sources feed which orders and operations.

A flow is data.  ``route`` turns one parsed input into metadata records (or dimension
changes) using only the declaration, so onboarding another flow means declaring it, not
changing the pipeline.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import cached_property, lru_cache
from typing import Any
from zoneinfo import ZoneInfo

from inputs.columns import UTC, ColumnType, Reading, column_type, read_instant
from inputs.events import BadInput, BusinessWrite, ChangeEvent, Ignored, Parsed, SchemaChange
from inputs.positions import Position, encode

#: (row, change: insert, update or delete) -> the operations it raises.
RowOperations = Callable[[Mapping[str, Any], str], tuple[str, ...]]
#: (operation, row) -> what of the row that operation reads.
RowReads = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]


def _declared(owner: str, columns: Mapping[str, str]) -> dict[str, ColumnType]:
    """Column name -> type, checked when the flow is declared (ValueError naming the column)."""
    types = {}
    for name, declaration in columns.items():
        try:
            types[name] = column_type(declaration)
        except ValueError as error:
            raise ValueError(f"{owner} column {name!r}: {error}") from None
    return types


@dataclass(frozen=True)
class SourceTable:
    """A CDC source table: its unique key, its columns with their types in the source database
    (``inputs.columns``: ``varchar(32)``, ``decimal(12,2)``, ``datetime(3)``, ...) and the
    operations a row feeds."""

    name: str
    key: str
    columns: Mapping[str, str]
    operations: RowOperations = lambda row, change: ()
    order_key: str | None = "order_id"
    #: Set for a dimension table: changes go to this Redis dimension, not to tasks.
    dimension: str | None = None
    #: What each operation reads of a row.  A newer row that differs only elsewhere is stored for
    #: the operation but does not run it again (``intake``: refreshed, not corrected).  None: all.
    reads: RowReads | None = None
    #: On an order's header table: the column whose time says when the order was settled (paid),
    #: which reconciliation uses to find a day's orders in the source database.
    settled_at: str | None = None
    #: What the entity ids of its flow start with (``FlowDeclaration.entity_prefix``).
    entity_prefix: str = ""
    #: ``columns`` read: name -> ColumnType.
    types: Mapping[str, ColumnType] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _declared(f"source table {self.name!r}", self.columns))
        if self.key not in self.columns:
            raise ValueError(f"source table {self.name!r}: key {self.key!r} is not one of its columns")
        if self.order_key is not None and self.order_key not in self.columns:
            raise ValueError(f"source table {self.name!r}: order key {self.order_key!r} is not one of its columns")
        settled = self.types[self.settled_at] if self.settled_at is not None else None
        if settled is not None and settled.name not in ("datetime", "timestamp"):
            raise ValueError(f"source table {self.name!r}: settled_at {self.settled_at!r} is not a datetime or "
                             "timestamp column")


@dataclass(frozen=True)
class BusinessSource:
    """A business system pushing writes, the operations it may feed and its typed payload."""

    name: str
    operations: tuple[str, ...]
    payload: Mapping[str, str]
    entity_prefix: str = ""
    types: Mapping[str, ColumnType] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "types", _declared(f"business source {self.name!r}", self.payload))


@dataclass(frozen=True)
class Flow:
    name: str
    tables: Mapping[str, SourceTable]
    business: Mapping[str, BusinessSource] = field(default_factory=dict)
    #: The source databases whose tables it follows (a deployment may override them:
    #: ``TDC_SOURCE_DATABASES``).  Rows of the same tables in other databases are not its own.
    databases: tuple[str, ...] = ()
    #: The entity prefixes of the flows routed together: an id of a flow without one must not
    #: read as another flow's.
    prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class MetadataRecord:
    """One input as stored for one task: unique on (order, operation, source, key)."""

    order_id: str
    operation_type: str
    source: str
    unique_key: str
    kind: str
    content: dict[str, Any]
    position: Position
    input_format: str
    #: What the operation reads of ``content`` (None: all of it).
    reads: Mapping[str, Any] | None = field(default=None, compare=False)

    # Computed once per record (intake judges, stores and compares each record several times);
    # the record and its content are not changed once made.
    @cached_property
    def position_text(self) -> str:
        return encode(self.position)

    @cached_property
    def content_json(self) -> str:
        return json.dumps(self.content, sort_keys=True, separators=(",", ":"))

    @cached_property
    def content_hash(self) -> str:
        """Two halves: what the operation reads (``reads``), then the whole content.  Records
        with the same first half differ in nothing their operation reads."""
        # An insert and an update of the same values read the same; a delete does not.
        read_kind = "gone" if self.kind == "delete" else "row"
        if self.reads is None:
            read = _sha1(f"{read_kind}|{self.content_json}")
        else:
            read = _digest(read_kind, self.reads)
        return read[:20] + _sha1(f"{self.kind}|{self.content_json}")[:20]

    @property
    def legacy_hash(self) -> str:
        """The content hash tdc stored before hashes had two halves: the same content, stored
        by an older tdc, is still the same."""
        return hashlib.sha1(f"{self.kind}|{self.content_json}".encode()).hexdigest()

    def same_content(self, stored_hash: str) -> bool:
        return stored_hash in (self.content_hash, self.legacy_hash)

    def reads_as(self, stored_hash: str) -> bool:
        """True when the operation reads the same of this record as of the one stored with
        ``stored_hash``."""
        return self.content_hash[:20] == stored_hash[:20]


def _digest(kind: str, content: Mapping[str, Any]) -> str:
    return _sha1(f"{kind}|{json.dumps(content, sort_keys=True, separators=(',', ':'), default=str)}")


def _sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


@dataclass(frozen=True)
class DimensionChange:
    dimension: str
    key: str
    #: None deletes the dimension entry.
    attributes: dict[str, Any] | None
    #: Where the change came from: an older change never overwrites a newer one.
    position: Position


@dataclass
class Routed:
    records: list[MetadataRecord] = field(default_factory=list)
    dimensions: list[DimensionChange] = field(default_factory=list)
    schema_changes: list[SchemaChange] = field(default_factory=list)
    #: Why valid input was left alone, one entry per message part.
    ignored: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Route:
    """What routing needs besides the flow, from the deployment's settings: the source's time
    zone, and which source databases are followed (None: the flows' own; ``*`` wildcards)."""

    zone: ZoneInfo = UTC
    databases: tuple[str, ...] | None = None

    def reading(self, input_format: str) -> Reading:
        return Reading(self.zone, debezium=input_format == "debezium")

    def follows(self, flow: Flow, database: str) -> bool:
        return _matches(self.databases if self.databases is not None else flow.databases, database)


@lru_cache(maxsize=4096)
def _matches(names: tuple[str, ...], database: str) -> bool:
    """Whether ``database`` matches one of ``names`` (``*`` wildcards); asked of every row."""
    return any(fnmatchcase(database, name) for name in names)


DEFAULT_READING = Reading()


def typed_row(types: Mapping[str, ColumnType], row: Mapping[str, Any], what: str,
              reading: Reading = DEFAULT_READING) -> dict[str, Any]:
    """The declared columns of ``row`` in stored form; raises BadInput naming a bad column."""
    typed: dict[str, Any] = {}
    for name, kind in types.items():
        try:
            typed[name] = kind.read(row.get(name), reading)
        except BadInput as error:
            raise BadInput(f"{what} column {name!r}: {error.reason}") from None
    return typed


def _route_change(flow: Flow, event: ChangeEvent, input_format: str, route_: Route, routed: Routed) -> None:
    table = flow.tables.get(event.table)
    if not route_.follows(flow, event.database):
        routed.ignored.append("database not followed")
        return
    if table is None:
        routed.ignored.append("table not followed")
        return
    what = f"{event.table}"
    raw_order_id = event.row.get(table.order_key) if table.order_key else None
    # Errors about this row keep its order id, so the line shows up in that order's lineage.
    order_hint = None if raw_order_id is None else table.entity_prefix + str(raw_order_id)
    try:
        row = typed_row(table.types, event.row, what, route_.reading(input_format))
    except BadInput as error:
        raise BadInput(error.reason, order_hint) from None
    key = row.get(table.key)
    if key is None:
        raise BadInput(f"{what} row has no {table.key!r}", order_hint)
    if table.dimension is not None:
        attributes = None if event.kind == "delete" else row
        routed.dimensions.append(DimensionChange(table.dimension, str(key), attributes, event.position))
        return
    assert table.order_key is not None
    raw = row.get(table.order_key)
    if raw is None:
        raise BadInput(f"{what} row {key} has no {table.order_key!r}")
    order_id = _entity_id(flow, table.entity_prefix, str(raw), what)
    operations = table.operations(row, event.kind)
    if not operations:
        raise BadInput(f"{what} row {key} feeds no operation (status {row.get('status')!r})", str(order_id))
    for operation in operations:
        routed.records.append(
            MetadataRecord(str(order_id), operation, table.name, str(key), event.kind, row,
                           event.position, input_format, None if table.reads is None else table.reads(operation, row))
        )


def _entity_id(flow: Flow, prefix: str, key: str, what: str) -> str:
    """The entity id of a row or write: its flow's prefix and its key.  A key of a flow without
    a prefix that reads as another flow's entity is refused."""
    if not prefix:
        taken = next((other for other in flow.prefixes if other and key.startswith(other)), None)
        if taken is not None:
            raise BadInput(f"{what} id {key!r} starts with {taken!r}, another flow's entity prefix", key)
    return prefix + key


def _route_write(flow: Flow, write: BusinessWrite, input_format: str, route_: Route, routed: Routed) -> None:
    source = flow.business.get(write.source)
    if source is None:
        raise BadInput(f"business source {write.source!r} is not part of flow {flow.name!r}", write.order_id)
    order_id = _entity_id(flow, source.entity_prefix, write.order_id, f"{write.source} order")
    if write.operation_type not in source.operations:
        raise BadInput(
            f"business source {write.source!r} cannot feed {write.operation_type}; "
            f"it feeds {', '.join(source.operations)}",
            write.order_id,
        )
    try:
        reading = route_.reading(input_format)
        occurred_at = read_instant(write.occurred_at, reading, "business write 'occurred_at'")
        payload = typed_row(source.types, write.payload, f"{write.source} payload", reading)
    except BadInput as error:
        raise BadInput(error.reason, order_id) from None
    missing = [name for name, value in payload.items() if value is None]
    if missing:
        raise BadInput(f"{write.source} payload has no {', '.join(map(repr, missing))}", order_id)
    routed.records.append(
        MetadataRecord(order_id, write.operation_type, write.source, write.unique_key, "insert",
                       payload, Position(int(occurred_at.timestamp() * 1000)), input_format)
    )


def route(flow: Flow, parsed: Parsed, input_format: str, route_: Route = Route()) -> Routed:
    """Metadata records and dimension changes for one parsed input, or why it is ignored.

    Raises BadInput for an unknown business source, a mistyped or missing value, or a row
    that feeds no operation.  Rows and DDL of tables or databases the flow does not follow
    are ignored, not refused.
    """
    routed = Routed()
    if isinstance(parsed, Ignored):
        routed.ignored.append(parsed.why)
    elif isinstance(parsed, SchemaChange):
        if parsed.table in flow.tables and route_.follows(flow, parsed.database):
            routed.schema_changes.append(parsed)
        else:
            routed.ignored.append("DDL on a table not followed")
    elif isinstance(parsed, ChangeEvent):
        _route_change(flow, parsed, input_format, route_, routed)
    else:
        _route_write(flow, parsed, input_format, route_, routed)
    return routed
