"""Analytics events derived from the changelog: what a change of an order's wide rows means.

Each event type is a function from an image (``models.changelog.image``) to the facts it holds,
by natural key; an event is the difference between the facts before and after one change:
a new fact is ``create``, a fact whose data changed is ``update``, a fact gone is ``delete``.
An event's id is a UUID5 of its type and natural key, so a replay or a correction of the same
fact never makes a second id; its ``version`` is the order's wide-row version of the change
(consumers keep the highest).  ``FirstConsumeDate`` is the exception: the first paid order of a
member in a channel spans orders, so it is kept in the warehouse (``models.changelog.FirstConsume``)
and its version is the record's revision.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import Connection, and_, or_, select, update

from models.changelog import FIRST_CONSUME
from models.storage import Storage
from models.writes import insert_if_absent
from reliability.transient import retry_on_contention
from streams.sinks import Message

#: Namespace of every event id (uuid5 of ``TYPE|KEY|...``): fixed forever, or ids change.
EVENT_NAMESPACE = uuid.UUID("4f1f2d0c-0b7e-5d35-9a57-6c1f0d6e7a11")
#: ``dwd_order.status`` of a cancelled order (``flows.state_machine.STATUS_AFTER``).
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


def order_events(change: Change) -> list[Event]:
    """The events one change makes: its facts' differences, type by type, keys in order."""
    events: list[Event] = []
    for kind, facts_of in ORDER_FACTS.items():
        before, after = facts_of(change.before), facts_of(change.after)
        found = [(key, "create" if key not in before else "update", data) for key, data in sorted(after.items())
                 if before.get(key) != data]
        found += [(key, "delete", before[key]) for key in sorted(before.keys() - after.keys())]
        events += [Event(kind, event_id(kind, *key), change.version, op, change.changed_at, change.order_id,
                         change.order_id, data) for key, op, data in found]
    return events


@dataclass(frozen=True)
class Payment:
    """A paid order, offered as the first of its member in its channel."""

    change_id: int
    member_id: str
    channel: str
    order_id: str
    paid_at: dt.datetime
    first_date: dt.date | None
    store_id: str | None


def new_payments(changes: Iterable[Change]) -> list[Payment]:
    """The changes that make an order paid, or change who paid, in which channel or when."""
    offered: list[Payment] = []
    for change in changes:
        after = change.after["order"]
        if not _paid(after) or not after.get("member_id"):
            continue
        before = change.before["order"] if change.before else None
        same = before is not None and _paid(before) and all(
            before.get(name) == after.get(name) for name in ("member_id", "channel", "paid_at"))
        if not same:
            day = after.get("biz_date")
            offered.append(Payment(change.id, after["member_id"], after.get("channel") or "", change.order_id,
                                   dt.datetime.fromisoformat(after["paid_at"]),
                                   dt.date.fromisoformat(day) if day else None, after.get("store_id")))
    return offered


def _offer(connection: Connection, payment: Payment, now: dt.datetime) -> Any:
    """Make ``payment`` its member's first in its channel if none is kept or it is earlier than
    the one kept (ties: the smaller order id); returns the record as it is now.  The insert's
    outcome is not relied on (a skipped insert's row count is -1 through psycopg 3 and
    SQLAlchemy 2.1): the conditional update after it changes nothing when the insert was ours."""
    table = FIRST_CONSUME
    where = and_(table.c.member_id == payment.member_id, table.c.channel == payment.channel)
    values = dict(order_id=payment.order_id, first_paid_at=payment.paid_at, first_date=payment.first_date,
                  store_id=payment.store_id, updated_at=now)
    insert_if_absent(connection, table, dict(values, member_id=payment.member_id, channel=payment.channel, revision=1))
    connection.execute(update(table).where(where, or_(
        table.c.first_paid_at > payment.paid_at,
        and_(table.c.first_paid_at == payment.paid_at, table.c.order_id > payment.order_id),
    )).values(dict(values, revision=table.c.revision + 1)))
    return connection.execute(select(table).where(where)).one()


def first_consume_events(storage: Storage, changes: list[Change], now: dt.datetime) -> dict[int, list[Event]]:
    """Offer the payments of ``changes`` to the warehouse's first-consumption records (one
    transaction, records in key order); a change whose order is (still) the first of its member
    and channel gets a ``FirstConsumeDate`` event with the record's revision as its version, by
    change id.  Offering the same change again yields the same event, so a relay that crashed
    after this commit publishes it on its next pass."""
    payments = sorted(new_payments(changes), key=lambda p: (p.member_id, p.channel, p.paid_at, p.order_id))
    if not payments:
        return {}
    occurred = {change.id: change.changed_at for change in changes}

    def offer_all() -> dict[int, list[Event]]:
        events: dict[int, list[Event]] = {}
        with storage.dws_engine.begin() as connection:
            for payment in payments:
                record = _offer(connection, payment, now)
                if record.order_id != payment.order_id or record.first_paid_at != payment.paid_at:
                    continue  # an earlier payment is the first
                kind = "FirstConsumeDate"
                events.setdefault(payment.change_id, []).append(Event(
                    kind, event_id(kind, payment.member_id, payment.channel), record.revision,
                    "create" if record.revision == 1 else "update", occurred[payment.change_id], payment.order_id,
                    f"{payment.member_id}:{payment.channel}",
                    {"member_id": payment.member_id, "channel": payment.channel,
                     "first_paid_at": payment.paid_at.isoformat(timespec="milliseconds"),
                     "first_date": payment.first_date.isoformat() if payment.first_date else None,
                     "order_id": payment.order_id, "store_id": payment.store_id}))
        return events

    return retry_on_contention(offer_all)
