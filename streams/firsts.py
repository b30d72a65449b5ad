"""Events of a declared ``FirstOf``: the first entity of each group across entities (a member's
first paid order in a channel), kept in the warehouse (``models.firsts``) because it spans
entities and shard databases.

The relay keeps each entity's candidacy as its changes say (with the wide-row version it came
from, so a change relayed again never undoes a newer one) and settles the record of every group a
change touches, before or after: the earliest candidacy by the declared ``by``, ties by entity
id.  The record's ``revision`` is the event's version: a new first is an ``update`` of the same
id, none left a ``delete`` (the record is kept, ``gone_at`` set, so a later first gets a higher
version still).  A record's event goes with the change that last moved it; the same change
relayed again gets the same event.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache, cached_property
from typing import Any

from sqlalchemy import Connection, and_, select, update

from models.changelog import image_value
from models.firsts import FIRST_TABLES, FirstTables
from models.writes import insert_if_absent
from streams.facts import Change, DeclaredEvent, Event, declared_events, event_id, typed

#: A group: the values of the event's key columns.
Group = tuple[Any, ...]


@dataclass(frozen=True)
class Candidate:
    """An entity as a candidate first of its group: its group, id, ``by`` value and other fields
    (in their columns' types)."""

    group: Group
    order_id: str
    by: Any
    others: tuple[tuple[str, Any], ...]

    @property
    def rank(self) -> tuple[Any, str]:
        """What the first is the smallest of: ``by``, then the entity id."""
        return (self.by, self.order_id)


@dataclass(frozen=True)
class FirstOfEvent:
    """A declared first-of event with its tables."""

    declared: DeclaredEvent
    tables: FirstTables

    @property
    def name(self) -> str:
        return self.declared.name

    @cached_property
    def columns(self) -> dict[str, str]:
        """Each data field -> the root column it carries."""
        return {name: column.rpartition(".")[2] for name, column in self.declared.event.field_names().items()}

    def carried(self, name: str, value: Any) -> Any:
        """``value`` of field ``name`` as the event carries it: as the images hold its column."""
        column = self.columns[name]
        return image_value(self.declared.root_kinds.get(column, "text"), value, self.declared.root_places[column])

    def candidate(self, image: Mapping[str, Any] | None, order_id: str) -> Candidate | None:
        """The candidacy an image shows (None: the root row does not satisfy ``when``, or a group
        column that is not text, or ``by``, is NULL; a NULL text group value counts as '')."""
        if image is None or not self.declared.exists(image["order"]):
            return None
        root, kinds = image["order"], self.declared.root_kinds
        group = []
        for name in self.tables.group:
            value = typed(kinds.get(name, "text"), root.get(name))
            if value is None and kinds.get(name, "text") != "text":
                return None
            group.append("" if value is None else value)
        by = typed(kinds.get(self.tables.by_column, "text"), root.get(self.tables.by_column))
        if by is None:
            return None
        columns = self.columns
        return Candidate(tuple(group), order_id, by, tuple(
            (name, typed(kinds.get(columns[name], "text"), root.get(columns[name]))) for name in self.tables.others))

    def from_entity(self, row: Any) -> Candidate | None:
        """A candidacy row's candidate (None: the entity is no candidate)."""
        if row is None or row._mapping[self.tables.by_column] is None:
            return None
        values = row._mapping
        return Candidate(tuple(values[g] for g in self.tables.group), row.order_id, values[self.tables.by_column],
                         tuple((name, values[name]) for name in self.tables.others))

    def from_record(self, record: Any) -> Candidate:
        values = record._mapping
        return Candidate(tuple(values[g] for g in self.tables.group), record.order_id, values[self.tables.by_field],
                         tuple((name, values[name]) for name in self.tables.others))

    def event(self, group: Group, first: Candidate, revision: int, op: str, change: Change) -> Event:
        stored = dict(zip(self.tables.group, group, strict=True)) | dict(first.others) | {
            self.tables.by_field: first.by, "order_id": first.order_id}
        data = {name: stored[name] if name == "order_id" else self.carried(name, stored[name]) for name in self.columns}
        key = tuple(str(value) for value in group)
        return Event(self.name, event_id(self.name, *key), revision, op, change.changed_at, first.order_id,
                     ":".join(key), data)


def _record_entity(connection: Connection, first_of: FirstOfEvent, change: Change, now: dt.datetime,
                   candidate: Candidate | None) -> Candidate | None:
    """Keep ``change``'s entity as ``candidate`` (None: no candidate), unless a newer version of it
    is kept already; returns what was kept before."""
    tables, table = first_of.tables, first_of.tables.entities
    kept = connection.execute(select(table).where(table.c.order_id == change.order_id).with_for_update()).first()
    values: dict[str, Any] = dict(version=change.version, updated_at=now)
    if candidate is None:
        values |= dict.fromkeys((*tables.group, tables.by_column, *tables.others))
    else:
        values |= dict(zip(tables.group, candidate.group, strict=True)) | dict(candidate.others)
        values[tables.by_column] = candidate.by
    if kept is None and insert_if_absent(connection, table, dict(values, order_id=change.order_id)):
        return None
    connection.execute(update(table).where(table.c.order_id == change.order_id, table.c.version < change.version)
                       .values(values))
    return first_of.from_entity(kept)


def _first(connection: Connection, first_of: FirstOfEvent, group: Group, record: Any) -> Candidate | None:
    """The earliest candidate of ``group`` (a locking read: what other relays committed since this
    transaction began counts).  A first an older tdc recorded without keeping its entity counts
    too, until that entity changes."""
    tables, table = first_of.tables, first_of.tables.entities
    by = table.c[tables.by_column]
    first = first_of.from_entity(connection.execute(
        select(table).where(*(table.c[g] == v for g, v in zip(tables.group, group, strict=True)), by.is_not(None))
        .order_by(by, table.c.order_id).limit(1).with_for_update(read=True)).first())
    if record is None or record.gone_at is not None or record.moved_by_order is not None:
        return first
    if connection.execute(select(table.c.order_id).where(table.c.order_id == record.order_id)).first() is not None:
        return first
    legacy = first_of.from_record(record)
    return legacy if first is None or legacy.rank < first.rank else first


def _first_values(first_of: FirstOfEvent, first: Candidate) -> dict[str, Any]:
    return {"order_id": first.order_id, first_of.tables.by_field: first.by, **dict(first.others)}


def _settle(connection: Connection, first_of: FirstOfEvent, group: Group, changes: list[Change],
            now: dt.datetime) -> tuple[Change, Event] | None:
    """Make ``group``'s record the earliest of its candidates after ``changes`` (the relay's
    changes that touched it, in order); the event to send, and with which change: a change of the
    record (create, update, or delete when no candidate is left) goes with the last of
    ``changes``; an unchanged record's event goes again with the change that made it, if that is
    one of ``changes`` (the relay sends it again), else nothing."""
    table = first_of.tables.first
    where = and_(*(table.c[g] == v for g, v in zip(first_of.tables.group, group, strict=True)))
    last = changes[-1]
    made_by = dict(moved_by_order=last.order_id, moved_by_version=last.version, updated_at=now)
    while True:
        record = connection.execute(select(table).where(where).with_for_update()).first()
        first = _first(connection, first_of, group, record)
        if record is None:
            if first is None:
                return None
            if not insert_if_absent(connection, table, dict(_first_values(first_of, first), revision=1, gone_at=None,
                                                            **dict(zip(first_of.tables.group, group, strict=True)),
                                                            **made_by)):
                continue  # another relay recorded it meanwhile: lock it and look again
            return last, first_of.event(group, first, 1, "create", last)
        shown = None if record.gone_at is not None else first_of.from_record(record)
        if first != shown:
            revision = record.revision + 1
            values = dict(_first_values(first_of, first), gone_at=None) if first is not None else dict(gone_at=now)
            connection.execute(update(table).where(where).values(revision=revision, **values, **made_by))
            if first is None:
                return last, first_of.event(group, first_of.from_record(record), revision, "delete", last)
            return last, first_of.event(group, first, revision, "update", last)
        maker = next((c for c in changes if (c.order_id, c.version) == (record.moved_by_order,
                                                                         record.moved_by_version)), None)
        if maker is None:
            return None
        op = "delete" if record.gone_at is not None else "create" if record.revision == 1 else "update"
        return maker, first_of.event(group, first_of.from_record(record), record.revision, op, maker)


#: A change's candidacies before and after, for one first-of event.
Move = tuple[FirstOfEvent, Change, Candidate | None, Candidate | None]


def settle_firsts(connection: Connection, moves: list[Move], now: dt.datetime) -> dict[int, list[Event]]:
    """Keep the candidacies ``moves`` make, take back or move, and settle every group they touch,
    before or after (events in declaration order, groups in key order); the events by change id."""
    events: dict[int, list[Event]] = {}
    touched: dict[str, dict[Group, list[Change]]] = defaultdict(lambda: defaultdict(list))
    by_name = {first_of.name: first_of for first_of, *_ in moves}
    for first_of, change, before, after in moves:
        kept = _record_entity(connection, first_of, change, now, after)
        for group in {c.group for c in (before, kept, after) if c is not None}:
            touched[first_of.name][group].append(change)
    for name in sorted(touched):  # one lock order for every relay
        groups = touched[name]
        for group in sorted(groups):
            settled = _settle(connection, by_name[name], group, groups[group], now)
            if settled is not None:
                events.setdefault(settled[0].id, []).append(settled[1])
    return events


@cache
def first_of(flow: str, name: str) -> FirstOfEvent:
    """``flow``'s first-of event ``name`` with its tables."""
    declared = next(event for event in declared_events(flow) if event.name == name)
    return FirstOfEvent(declared, FIRST_TABLES[name])
