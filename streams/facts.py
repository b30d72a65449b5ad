"""A change as the relay reads it, an event and its stable id, and the facts a changelog image
holds for a declared event (``flows.declaration.PublishedEvent``): which rows make one, its
natural key, the data it carries.

An image (``models.changelog.image``) holds the root wide row under ``order`` and the child rows
under ``items``, every value as JSON carries it (amounts and times as text); the event's
conditions are read on the values in their columns' types, its data is the image's values as
they are.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from typing import Any

from flows.declaration import AnyOf, Condition, PublishedEvent
from flows.declared import BY_NAME
from flows.rules import all_hold
from models.changelog import IMAGES
from streams.sinks import Message

Image = dict[str, Any]
Row = Mapping[str, Any]
#: A fact's natural key (each value as text) -> its data.
Facts = dict[tuple[str, ...], dict[str, Any]]
#: Where a value comes from: the root row (True) or the child row (False), and its column.
Ref = tuple[bool, str]

#: Namespace of every event id (uuid5 of ``TYPE|KEY|...``): fixed forever, or ids change.
EVENT_NAMESPACE = uuid.UUID("4f1f2d0c-0b7e-5d35-9a57-6c1f0d6e7a11")


@dataclass(frozen=True)
class Change:
    """A changelog outbox row as the relay reads it (images parsed)."""

    id: int
    order_id: str
    version: int
    operation: str
    operations: str
    before: Image | None
    after: Image
    changed_at: dt.datetime


@dataclass(frozen=True)
class Event:
    """One analytics event."""

    type: str
    event_id: str
    version: int
    op: str
    occurred_at: dt.datetime
    order_id: str
    #: What per-key order is kept on (the entity; the group for a first-of event).
    key: str
    data: dict[str, Any]

    def document(self) -> dict[str, Any]:
        return {"event_id": self.event_id, "type": self.type, "version": self.version, "op": self.op,
                "occurred_at": self.occurred_at.isoformat(timespec="milliseconds"), "order_id": self.order_id,
                "data": self.data}

    def message(self) -> Message:
        return Message(key=self.key, dedup_id=f"{self.event_id}:{self.version}", topic=self.type,
                       body=json.dumps(self.document(), separators=(",", ":"), sort_keys=True))


def event_id(kind: str, *key: str) -> str:
    """The stable id of the fact ``key`` of type ``kind``."""
    return str(uuid.uuid5(EVENT_NAMESPACE, "|".join((kind, *key))))


def typed(kind: str, value: Any) -> Any:
    """An image's value back in its column's type (``models.digests.kind_of``'s kinds), for
    comparing: amounts as Decimal, times and days as datetime and date."""
    if value is None or kind in ("text", "int"):
        return value
    if kind == "money":
        return Decimal(str(value))
    if kind == "time":
        return dt.datetime.fromisoformat(value)
    return dt.date.fromisoformat(value)


@dataclass(frozen=True)
class DeclaredEvent:
    """A flow's event, resolved against its images' columns."""

    flow: str
    event: PublishedEvent
    #: One fact per child row (else one per entity).
    per_row: bool
    key: tuple[Ref, ...]
    #: Data field -> where its value comes from.
    fields: tuple[tuple[str, Ref], ...]
    #: Column -> kind, of the root row and of the child row; the root's decimal places.
    root_kinds: Mapping[str, str]
    row_kinds: Mapping[str, str]
    root_places: Mapping[str, int]

    @property
    def name(self) -> str:
        return self.event.name

    def holds(self, row: Row, conditions: tuple[Condition, ...], kinds: Mapping[str, str]) -> bool:
        columns = {p.column for c in conditions for p in (c.predicates if isinstance(c, AnyOf) else (c,))}
        return all_hold(conditions, {name: typed(kinds.get(name, "text"), row.get(name)) for name in columns})

    def exists(self, root: Row) -> bool:
        """Whether the root row satisfies the event's ``when``."""
        return self.holds(root, self.event.when, self.root_kinds)

    def value(self, ref: Ref, root: Row, row: Row | None) -> Any:
        return (root if ref[0] or row is None else row).get(ref[1])

    def data(self, root: Row, row: Row | None = None) -> dict[str, Any]:
        return {name: self.value(ref, root, row) for name, ref in self.fields}

    def facts(self, image: Image | None) -> Facts:
        """The facts ``image`` holds: by natural key, their data (none when no image)."""
        if image is None or not self.exists(image["order"]):
            return {}
        root = image["order"]
        if not self.per_row:
            return {tuple(str(self.value(ref, root, None)) for ref in self.key): self.data(root)}
        return {tuple(str(self.value(ref, root, row)) for ref in self.key): self.data(root, row)
                for row in image["items"] if self.holds(row, self.event.row_when, self.row_kinds)}


def _ref(flow: str, event: PublishedEvent, name: str) -> Ref:
    """Where ``name`` (a column of the event's table, or ``root_table.column``) is read."""
    table, _, column = name.rpartition(".")
    root = BY_NAME[flow].wide[0].name
    return (table == root or event.table == root, column)


def declare(flow: str, event: PublishedEvent) -> DeclaredEvent:
    """``event`` of ``flow`` resolved against the flow's images (it is valid: ``flows.validation``)."""
    root, child, _ = IMAGES[flow]
    return DeclaredEvent(
        flow, event, per_row=event.table != BY_NAME[flow].wide[0].name,
        key=tuple(_ref(flow, event, name) for name in event.key),
        fields=tuple((name, _ref(flow, event, column)) for name, column in event.field_names().items()),
        root_kinds={name: kind for name, kind, _ in root}, row_kinds={name: kind for name, kind, _ in child},
        root_places={name: places for name, _, places in root})


@cache
def declared_events(flow: str) -> tuple[DeclaredEvent, ...]:
    """The events ``flow`` declares, in its declaration's order."""
    return tuple(declare(flow, event) for event in BY_NAME[flow].events)
