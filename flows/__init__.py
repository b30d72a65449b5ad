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
from typing import Any

from inputs.events import BadInput, BusinessWrite, ChangeEvent, Parsed, SchemaChange
from inputs.values import READERS

RowOperations = Callable[[Mapping[str, Any]], tuple[str, ...]]


@dataclass(frozen=True)
class SourceTable:
    """A CDC source table: its unique key, typed columns and the operations a row feeds."""

    name: str
    key: str
    columns: Mapping[str, str]
    operations: RowOperations = lambda row: ()
    order_key: str | None = "order_id"
    #: Set for a dimension table: changes go to this Redis dimension, not to tasks.
    dimension: str | None = None


@dataclass(frozen=True)
class BusinessSource:
    """A business system pushing writes, the operations it may feed and its typed payload."""

    name: str
    operations: tuple[str, ...]
    payload: Mapping[str, str]


@dataclass(frozen=True)
class Flow:
    name: str
    tables: Mapping[str, SourceTable]
    business: Mapping[str, BusinessSource] = field(default_factory=dict)


@dataclass(frozen=True)
class MetadataRecord:
    """One input as stored for one task: unique on (order, operation, source, key)."""

    order_id: str
    operation_type: str
    source: str
    unique_key: str
    kind: str
    content: dict[str, Any]
    position: str
    input_format: str

    @property
    def content_json(self) -> str:
        return json.dumps(self.content, sort_keys=True, separators=(",", ":"))

    @property
    def content_hash(self) -> str:
        return hashlib.sha1(f"{self.kind}|{self.content_json}".encode()).hexdigest()


@dataclass(frozen=True)
class DimensionChange:
    dimension: str
    key: str
    #: None deletes the dimension entry.
    attributes: dict[str, Any] | None
    #: Where the change came from, in commit order: an older change never overwrites a newer one.
    position: str


@dataclass
class Routed:
    records: list[MetadataRecord] = field(default_factory=list)
    dimensions: list[DimensionChange] = field(default_factory=list)
    schema_changes: list[SchemaChange] = field(default_factory=list)


def typed_row(columns: Mapping[str, str], row: Mapping[str, Any], what: str) -> dict[str, Any]:
    """The declared columns of ``row`` in canonical form; raises BadInput naming a bad column."""
    typed: dict[str, Any] = {}
    for name, kind in columns.items():
        value = row.get(name)
        if value is None:
            typed[name] = None
            continue
        try:
            typed[name] = READERS[kind](value)
        except BadInput as error:
            raise BadInput(f"{what} column {name!r}: {error.reason}") from None
    return typed


def _route_change(flow: Flow, event: ChangeEvent, input_format: str, routed: Routed) -> None:
    table = flow.tables.get(event.table)
    if table is None:
        raise BadInput(f"table {event.database}.{event.table} is not part of flow {flow.name!r}")
    what = f"{event.table}"
    raw_order_id = event.row.get(table.order_key) if table.order_key else None
    # Errors about this row keep its order id, so the line shows up in that order's lineage.
    order_hint = None if raw_order_id is None else str(raw_order_id)
    try:
        row = typed_row(table.columns, event.row, what)
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
    order_id = row.get(table.order_key)
    if order_id is None:
        raise BadInput(f"{what} row {key} has no {table.order_key!r}")
    operations = table.operations(row)
    if not operations:
        raise BadInput(f"{what} row {key} feeds no operation (status {row.get('status')!r})", str(order_id))
    for operation in operations:
        routed.records.append(
            MetadataRecord(str(order_id), operation, table.name, str(key), event.kind, row,
                           event.position, input_format)
        )


def _route_write(flow: Flow, write: BusinessWrite, input_format: str, routed: Routed) -> None:
    source = flow.business.get(write.source)
    if source is None:
        raise BadInput(f"business source {write.source!r} is not part of flow {flow.name!r}", write.order_id)
    if write.operation_type not in source.operations:
        raise BadInput(
            f"business source {write.source!r} cannot feed {write.operation_type}; "
            f"it feeds {', '.join(source.operations)}",
            write.order_id,
        )
    try:
        payload = typed_row(source.payload, write.payload, f"{write.source} payload")
    except BadInput as error:
        raise BadInput(error.reason, write.order_id) from None
    missing = [name for name, value in payload.items() if value is None]
    if missing:
        raise BadInput(f"{write.source} payload has no {', '.join(map(repr, missing))}", write.order_id)
    routed.records.append(
        MetadataRecord(write.order_id, write.operation_type, write.source, write.unique_key, "insert",
                       payload, write.position, input_format)
    )


def route(flow: Flow, parsed: Parsed, input_format: str) -> Routed:
    """Metadata records and dimension changes for one parsed input.

    Raises BadInput for an unknown table or source, a mistyped or missing value, or a row
    that feeds no operation.
    """
    routed = Routed()
    if isinstance(parsed, SchemaChange):
        # DDL on a table the flow does not follow is none of its business.
        if parsed.table in flow.tables:
            routed.schema_changes.append(parsed)
    elif isinstance(parsed, ChangeEvent):
        _route_change(flow, parsed, input_format, routed)
    else:
        _route_write(flow, parsed, input_format, routed)
    return routed
