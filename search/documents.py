"""A flow's index document, as its declaration says (``flows.declaration.IndexDocument``): the
root wide row's declared fields, its child rows nested under a name, and the index template that
maps every field explicitly (``dynamic: strict``: a field the mapping does not know is refused,
not guessed).  Nothing here names a flow: each flow's ``SearchDocument`` is made from its
declaration and its wide tables (``models.wide``)."""

from __future__ import annotations

import copy
import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Column, Numeric, Table

from flows.declaration import FlowDeclaration, IndexDocument
from flows.declared import DECLARATIONS
from flows.memo import per_flow
from flows.registry import flow_of
from models.digests import kind_of
from models.wide import schema_of
from settings import ES_ALIAS_STEM, Settings

#: The wide-row column only reconciliation reads.
NOT_INDEXED = frozenset({"source_digest"})
#: Decimal digits a ``scaled_float`` (a long underneath) holds; wider decimals are ``double``.
_LONG_DIGITS = 18

_TIME_FORMATS = "strict_date_hour_minute_second_fraction||strict_date_hour_minute_second"
_KINDS: dict[str, dict[str, Any]] = {
    "text": {"type": "keyword"}, "int": {"type": "long"},
    "date": {"type": "date", "format": "strict_date"}, "time": {"type": "date", "format": _TIME_FORMATS}}
_TEXT = {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}}


def _mapped(column: Column[Any], text: bool) -> dict[str, Any]:
    if text:
        return copy.deepcopy(_TEXT)
    kind = kind_of(column)
    if kind != "money":
        return dict(_KINDS[kind])
    numeric = column.type
    assert isinstance(numeric, Numeric)
    scale, precision = numeric.scale or 0, numeric.precision or _LONG_DIGITS
    if precision > _LONG_DIGITS:
        return {"type": "double"}  # values in _source keep every digit (decimal strings)
    return {"type": "scaled_float", "scaling_factor": 10 ** scale}


def _value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime):
        return value.isoformat(timespec="milliseconds")
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _parsed(column: Column[Any] | None, value: Any) -> Any:
    if value is None or column is None:
        return value
    kind = kind_of(column)
    if kind == "money":
        scale = getattr(column.type, "scale", None) or 0
        return Decimal(str(value)).quantize(Decimal(1).scaleb(-scale))
    if kind == "time":
        return dt.datetime.fromisoformat(str(value))
    if kind == "date":
        return dt.date.fromisoformat(str(value))
    return value


@dataclass(frozen=True)
class SearchDocument:
    """One flow's document, worked out once from its declaration."""

    flow: FlowDeclaration
    declared: IndexDocument
    root: Table
    #: The root's key column; the document's id is the entity id (the flow's prefix + the key).
    key: str
    #: The nested child table, its column naming the entity, its key; None and "" without one.
    child: Table | None
    child_entity: str
    child_key: str
    nested_as: str
    child_fields: tuple[str, ...]

    @classmethod
    def of(cls, flow: FlowDeclaration) -> SearchDocument:
        declared = flow.index
        if declared is None:
            raise ValueError(f"flow {flow.name!r} declares no index document")
        schema = schema_of(flow)
        nested = schema.child is not None and schema.child.name in declared.nested
        child = schema.child if nested else None
        return cls(flow, declared, schema.root, schema.entity, child,
                   (schema.child_entity or "") if child is not None else "",
                   (schema.child_key or "") if child is not None else "",
                   declared.nested_as, tuple(declared.nested[child.name]) if child is not None else ())

    @property
    def fields(self) -> tuple[str, ...]:
        return self.declared.fields

    def mappings(self) -> dict[str, Any]:
        """The explicit mappings of the flow's index."""
        text = set(self.declared.text)
        properties = {name: _mapped(self.root.c[name], name in text) for name in self.fields}
        if self.child is not None:
            properties[self.nested_as] = {"type": "nested", "properties": {
                name: _mapped(self.child.c[name], f"{self.nested_as}.{name}" in text) for name in self.child_fields}}
        return {"dynamic": "strict", "properties": properties}

    def document(self, row: dict[str, Any], children: Iterable[dict[str, Any]]) -> dict[str, Any]:
        """The document of one entity: JSON values, amounts as decimal strings, times in UTC."""
        doc = {name: _value(row.get(name)) for name in self.fields}
        if self.child is not None:
            doc[self.nested_as] = [{name: _value(child.get(name)) for name in self.child_fields}
                                   for child in sorted(children, key=lambda c: c[self.child_key])]
        return doc

    def entity_id(self, doc: dict[str, Any]) -> str:
        """The entity id of a document (or of a root wide row): its ``_id``."""
        return self.flow.entity_prefix + str(doc[self.key])

    def key_of(self, entity_id: str) -> Any:
        """The root key value of an entity id of this flow (its prefix taken off)."""
        key = entity_id.removeprefix(self.flow.entity_prefix)
        python = getattr(self.root.c[self.key].type, "python_type", str)
        return int(key) if python is int and key.lstrip("-").isdigit() else key

    def found(self, source: dict[str, Any]) -> dict[str, Any]:
        """A document found by search, in the shape the SQL fallback gives: Python values back."""
        row = {name: _parsed(self.root.c.get(name), value) for name, value in source.items()
               if name != self.nested_as or self.child is None}
        if self.child is not None:
            row[self.nested_as] = [{name: _parsed(self.child.c.get(name), value) for name, value in child.items()}
                                   for child in source.get(self.nested_as, [])]
        return row

    def alias(self, settings: Settings | None = None) -> str:
        """The alias of the flow's index: as declared, with ``TDC_ES_ALIAS`` in place of the stem
        ``tdc-orders`` the declared aliases begin with (two deployments can share a cluster)."""
        declared = self.declared.index
        if settings is None or not declared.startswith(ES_ALIAS_STEM):
            return declared
        return settings.es_alias + declared.removeprefix(ES_ALIAS_STEM)


#: Headings of the tables of found entities (``tdc search``, the console), each with the part of
#: the document it shows: the key, the day, a condition's field, the amount, the nested rows
#: (counted), the time sorted by.
HEADINGS = (("order", "key"), ("day", "day"), ("store", "store_id"), ("status", "status"), ("member", "member_id"),
            ("channel", "channel"), ("paid", "amount"), ("lines", "nested"), ("created", "newest_by"))


def table_columns(document: SearchDocument) -> list[tuple[str, str, str]]:
    """(field, heading, part) of the table's columns: those the flow's document has."""
    declared = document.declared
    fields = {"key": document.key, "day": declared.day, "amount": declared.amount,
              "nested": document.nested_as if document.child is not None else None,
              "newest_by": declared.newest_by, **declared.conditions}
    return [(name, heading, part) for heading, part in HEADINGS
            if (name := fields.get(part)) is not None and "." not in name]


@per_flow
def search_document(flow: FlowDeclaration) -> SearchDocument:
    """The flow's document (ValueError when it declares none)."""
    return SearchDocument.of(flow)


def indexed_flows(flows: Iterable[FlowDeclaration] = DECLARATIONS) -> tuple[FlowDeclaration, ...]:
    """Those of ``flows`` that declare an index document."""
    return tuple(flow for flow in flows if flow.index is not None)


def bare_flow() -> FlowDeclaration:
    """The flow whose entity ids carry no prefix: what the calls below that name no flow mean
    (they were written before flows shared tdc's tables).  KeyError when every flow has one."""
    return flow_of("")


