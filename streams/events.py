"""Analytics events derived from the changelog: what a change of an entity's wide rows means,
as its flow declares (``flows.declaration.PublishedEvent``).

An event of one entity is the difference between the facts its before and after images hold
(``streams.facts``): a new fact is ``create``, a fact whose data changed is ``update``, a fact
gone is ``delete``.  An event's id is a UUID5 of its type and natural key, so a replay or a
correction of the same fact never makes a second id; its ``version`` is the entity's wide-row
version of the change (consumers keep the highest).  A first-of event (``FirstOf``) spans
entities: it is kept in the warehouse and its version is the record's revision
(``streams.firsts``).
"""

from __future__ import annotations

import datetime as dt

from flows.registry import flow_of
from models.storage import Storage
from reliability.transient import retry_on_contention
from streams.facts import Change, DeclaredEvent, Event, declared_events, event_id
from streams.firsts import Move, first_of, settle_firsts

__all__ = ["Change", "Event", "event_id", "first_events", "order_events"]


def _declared(change: Change) -> tuple[DeclaredEvent, ...]:
    """The events the changed entity's flow declares."""
    return declared_events(flow_of(change.order_id).name)


def order_events(change: Change) -> list[Event]:
    """The events one change makes of its own entity: its facts' differences, event by event in
    the flow's order, keys in order (first-of events are ``first_events``')."""
    events: list[Event] = []
    for declared in _declared(change):
        if declared.event.first is not None:
            continue
        kind = declared.name
        before, after = declared.facts(change.before), declared.facts(change.after)
        found = [(key, "create" if key not in before else "update", data) for key, data in sorted(after.items())
                 if before.get(key) != data]
        found += [(key, "delete", before[key]) for key in sorted(before.keys() - after.keys())]
        events += [Event(kind, event_id(kind, *key), change.version, op, change.changed_at, change.order_id,
                         change.order_id, data) for key, op, data in found]
    return events


def first_events(storage: Storage, changes: list[Change], now: dt.datetime) -> dict[int, list[Event]]:
    """Keep the candidacies ``changes`` make, take back or move for every first-of event their
    flows declare, and settle the record of every group they touch, before or after (one
    warehouse transaction); the events, by change id.  Relaying the same changes again yields the
    same events, so a relay that crashed after this commit publishes them on its next pass."""
    moves: list[Move] = []
    for change in sorted(changes, key=lambda c: c.id):
        for declared in _declared(change):
            if declared.event.first is None:
                continue
            event = first_of(declared.flow, declared.name)
            before = event.candidate(change.before, change.order_id)
            after = event.candidate(change.after, change.order_id)
            if before != after:
                moves.append((event, change, before, after))
    if not moves:
        return {}

    def settle_all() -> dict[int, list[Event]]:
        with storage.dws_engine.begin() as connection:
            return settle_firsts(connection, moves, now)

    return retry_on_contention(settle_all)
