"""Analytics events derived from the changelog: what a change of an order's wide rows means.

Each event type is a function from an image (``models.changelog.image``) to the facts it holds,
by natural key; an event is the difference between the facts before and after one change:
a new fact is ``create``, a fact whose data changed is ``update``, a fact gone is ``delete``.
An event's id is a UUID5 of its type and natural key, so a replay or a correction of the same
fact never makes a second id; its ``version`` is the order's wide-row version of the change
(consumers keep the highest).  ``FirstConsumeDate`` is the exception: the first paid order of a
member in a channel spans orders, so it is kept in the warehouse (``models.changelog.FirstConsume``,
chosen from every paid order kept in ``FirstConsumeOrder``) and its version is the record's
revision.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, select, update

from flows.registry import flow_of
from models.changelog import FIRST_CONSUME, FIRST_CONSUME_ORDERS
from models.storage import Storage
from models.writes import insert_if_absent
from reliability.transient import retry_on_contention
from streams.sinks import Message

#: Namespace of every event id (uuid5 of ``TYPE|KEY|...``): fixed forever, or ids change.
EVENT_NAMESPACE = uuid.UUID("4f1f2d0c-0b7e-5d35-9a57-6c1f0d6e7a11")
#: ``dwd_order.status`` of a cancelled order (``flows.declared.gqsh``).
CANCELLED = 50
#: Fields of the order and of the line each event carries; a change of any of them is an update.
PAY_ORDER_FIELDS = ("store_id", "member_id", "channel", "biz_date", "paid_at", "pay_channel", "pay_txn_id",
                    "total_amount", "discount_amount", "pay_amount")
PAY_LINE_FIELDS = ("item_id", "sku_id", "quantity", "unit_price", "amount")
CANCEL_FIELDS = ("store_id", "member_id", "channel", "biz_date", "created_at", "item_count", "total_amount",
                 "pay_amount")
RETURN_ORDER_FIELDS = ("store_id", "member_id", "channel", "biz_date")
RETURN_LINE_FIELDS = ("item_id", "sku_id", "quantity", "amount", "refund_quantity", "refund_amount")

Image = dict[str, Any]
Facts = dict[tuple[str, ...], dict[str, Any]]


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
    #: What per-key order is kept on (the order; member and channel for FirstConsumeDate).
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


def _paid(order: dict[str, Any]) -> bool:
    return order.get("paid_at") is not None and order.get("status") != CANCELLED


def pay_order_details(image: Image | None) -> Facts:
    """One fact per line of a paid order."""
    if image is None or not _paid(image["order"]):
        return {}
    order = image["order"]
    head = {name: order.get(name) for name in PAY_ORDER_FIELDS}
    return {(order["order_id"], str(item["item_id"])): head | {name: item.get(name) for name in PAY_LINE_FIELDS}
            for item in image["items"]}


def cancel_orders(image: Image | None) -> Facts:
    """One fact per cancelled order."""
    if image is None or image["order"].get("status") != CANCELLED:
        return {}
    order = image["order"]
    return {(order["order_id"],): {name: order.get(name) for name in CANCEL_FIELDS}}


def apply_returns(image: Image | None) -> Facts:
    """One fact per order line with anything refunded: what of it has been returned so far (the
    wide rows keep refunds per line; a later return of the same line updates its fact)."""
    if image is None:
        return {}
    order = image["order"]
    head = {name: order.get(name) for name in RETURN_ORDER_FIELDS}
    return {(order["order_id"], str(item["item_id"])): head | {name: item.get(name) for name in RETURN_LINE_FIELDS}
            for item in image["items"]
            if (item.get("refund_quantity") or 0) > 0 or Decimal(item.get("refund_amount") or "0") > 0}


#: Event type -> the facts an image holds for it.
ORDER_FACTS: dict[str, Callable[[Image | None], Facts]] = {
    "PayOrderDetail": pay_order_details,
    "CancelOrder": cancel_orders,
    "ApplyReturn": apply_returns,
}


#: The first paid order per member and channel (recomputed from every paid order, not one change).
FIRST_CONSUME_DATE = "FirstConsumeDate"


def publishes(change: Change, kind: str) -> bool:
    """Whether the changed entity's flow declares events of ``kind`` (``FlowDeclaration.events``)."""
    return any(event.name == kind for event in flow_of(change.order_id).events)


def order_events(change: Change) -> list[Event]:
    """The events one change makes: its facts' differences, type by type, keys in order (only
    the types its flow declares)."""
    events: list[Event] = []
    for kind, facts_of in ORDER_FACTS.items():
        if not publishes(change, kind):
            continue
        before, after = facts_of(change.before), facts_of(change.after)
        found = [(key, "create" if key not in before else "update", data) for key, data in sorted(after.items())
                 if before.get(key) != data]
        found += [(key, "delete", before[key]) for key in sorted(before.keys() - after.keys())]
        events += [Event(kind, event_id(kind, *key), change.version, op, change.changed_at, change.order_id,
                         change.order_id, data) for key, op, data in found]
    return events


#: A member and a channel: what a first consumption is per.
Key = tuple[str, str]


@dataclass(frozen=True)
class PaidOrder:
    """A paid order as a first consumption: who paid, in which channel, when."""

    member_id: str
    channel: str
    order_id: str
    paid_at: dt.datetime
    first_date: dt.date | None
    store_id: str | None

    @property
    def key(self) -> Key:
        return (self.member_id, self.channel)

    @property
    def rank(self) -> tuple[dt.datetime, str]:
        """What the first is the smallest of: the payment time, then the order id."""
        return (self.paid_at, self.order_id)


def paid_order(image: Image | None) -> PaidOrder | None:
    """The paid order an image shows (None: not paid, cancelled, or no member)."""
    if image is None:
        return None
    order = image["order"]
    if not _paid(order) or not order.get("member_id"):
        return None
    day = order.get("biz_date")
    return PaidOrder(order["member_id"], order.get("channel") or "", order["order_id"],
                     dt.datetime.fromisoformat(order["paid_at"]), dt.date.fromisoformat(day) if day else None,
                     order.get("store_id"))


def _paid_row(row: Any) -> PaidOrder | None:
    """A ``first_consume_order`` row's paid order."""
    if row is None or row.paid_at is None:
        return None
    return PaidOrder(row.member_id, row.channel, row.order_id, row.paid_at, row.first_date, row.store_id)


def _record_order(connection: Connection, change: Change, paid: PaidOrder | None, now: dt.datetime) -> PaidOrder | None:
    """Keep ``change``'s order as ``paid`` (None: not a paid order), unless a newer version of it
    is kept already; returns what was kept before."""
    table = FIRST_CONSUME_ORDERS
    kept = connection.execute(select(table).where(table.c.order_id == change.order_id).with_for_update()).first()
    values = dict(version=change.version, member_id=paid.member_id if paid else None,
                  channel=paid.channel if paid else None, paid_at=paid.paid_at if paid else None,
                  first_date=paid.first_date if paid else None, store_id=paid.store_id if paid else None,
                  updated_at=now)
    if kept is None and insert_if_absent(connection, table, dict(values, order_id=change.order_id)):
        return None
    connection.execute(update(table).where(table.c.order_id == change.order_id, table.c.version < change.version)
                       .values(values))
    return _paid_row(kept)


def _first_paid(connection: Connection, key: Key, record: Any) -> PaidOrder | None:
    """The earliest paid order of ``key`` (a locking read: what other relays committed since this
    transaction began counts).  A first an older tdc recorded without keeping its order counts
    too, until that order changes."""
    table = FIRST_CONSUME_ORDERS
    first = _paid_row(connection.execute(
        select(table).where(table.c.member_id == key[0], table.c.channel == key[1], table.c.paid_at.is_not(None))
        .order_by(table.c.paid_at, table.c.order_id).limit(1).with_for_update(read=True)).first())
    if record is None or record.gone_at is not None or record.moved_by_order is not None:
        return first
    if connection.execute(select(table.c.order_id).where(table.c.order_id == record.order_id)).first() is not None:
        return first
    legacy = _recorded(record)
    return legacy if first is None or legacy.rank < first.rank else first


def _recorded(record: Any) -> PaidOrder:
    return PaidOrder(record.member_id, record.channel, record.order_id, record.first_paid_at, record.first_date,
                     record.store_id)


def _first_consume_event(key: Key, first: PaidOrder, revision: int, op: str, change: Change) -> Event:
    kind = FIRST_CONSUME_DATE
    return Event(kind, event_id(kind, *key), revision, op, change.changed_at, first.order_id, f"{key[0]}:{key[1]}",
                 {"member_id": key[0], "channel": key[1],
                  "first_paid_at": first.paid_at.isoformat(timespec="milliseconds"),
                  "first_date": first.first_date.isoformat() if first.first_date else None,
                  "order_id": first.order_id, "store_id": first.store_id})


def _settle(connection: Connection, key: Key, changes: list[Change], now: dt.datetime) -> tuple[Change, Event] | None:
    """Make ``key``'s record the earliest of its paid orders after ``changes`` (the relay's
    changes that touched it, in order); the event to send, and with which change: a change of the
    record (create, update, or delete when no paid order is left) goes with the last of
    ``changes``; an unchanged record's event goes again with the change that made it, if that is
    one of ``changes`` (the relay sends it again), else nothing."""
    table = FIRST_CONSUME
    where = and_(table.c.member_id == key[0], table.c.channel == key[1])
    last = changes[-1]
    made_by = dict(moved_by_order=last.order_id, moved_by_version=last.version, updated_at=now)
    while True:
        record = connection.execute(select(table).where(where).with_for_update()).first()
        first = _first_paid(connection, key, record)
        if record is None:
            if first is None:
                return None
            if not insert_if_absent(connection, table, dict(_first_values(first), member_id=key[0], channel=key[1],
                                                            revision=1, gone_at=None, **made_by)):
                continue  # another relay recorded it meanwhile: lock it and look again
            return last, _first_consume_event(key, first, 1, "create", last)
        shown = None if record.gone_at is not None else _recorded(record)
        if first != shown:
            revision = record.revision + 1
            values = dict(_first_values(first), gone_at=None) if first is not None else dict(gone_at=now)
            connection.execute(update(table).where(where).values(revision=revision, **values, **made_by))
            if first is None:
                return last, _first_consume_event(key, _recorded(record), revision, "delete", last)
            return last, _first_consume_event(key, first, revision, "update", last)
        maker = next((c for c in changes if (c.order_id, c.version) == (record.moved_by_order,
                                                                         record.moved_by_version)), None)
        if maker is None:
            return None
        op = "delete" if record.gone_at is not None else "create" if record.revision == 1 else "update"
        return maker, _first_consume_event(key, _recorded(record), record.revision, op, maker)


def _first_values(first: PaidOrder) -> dict[str, Any]:
    return dict(order_id=first.order_id, first_paid_at=first.paid_at, first_date=first.first_date,
                store_id=first.store_id)


def first_consume_events(storage: Storage, changes: list[Change], now: dt.datetime) -> dict[int, list[Event]]:
    """Keep the paid orders ``changes`` make, take back or move (whose member, channel, payment
    time, business date or store changes), and settle the first-consumption record of every
    (member, channel) they touch, before or after (one warehouse transaction, records in key
    order); the ``FirstConsumeDate`` events, by change id.  Relaying the same changes again
    yields the same events, so a relay that crashed after this commit publishes them on its
    next pass."""
    moves = [(change, paid_order(change.before), paid_order(change.after))
             for change in sorted(changes, key=lambda c: c.id) if publishes(change, FIRST_CONSUME_DATE)]
    moves = [(change, before, after) for change, before, after in moves if before != after]
    if not moves:
        return {}

    def settle_all() -> dict[int, list[Event]]:
        events: dict[int, list[Event]] = {}
        touched: dict[Key, list[Change]] = defaultdict(list)
        with storage.dws_engine.begin() as connection:
            for change, before, after in moves:
                kept = _record_order(connection, change, after, now)
                for paid in {p.key for p in (before, kept, after) if p is not None}:
                    touched[paid].append(change)
            for key in sorted(touched):
                settled = _settle(connection, key, touched[key], now)
                if settled is not None:
                    events.setdefault(settled[0].id, []).append(settled[1])
        return events

    return retry_on_contention(settle_all)
