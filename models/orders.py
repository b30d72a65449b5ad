"""Tables that live once in every shard database: wide rows, snapshots, failures, quarantine."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from sqlalchemy import BigInteger, Date, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.types import BigId, Money, Timestamp


class ShardBase(DeclarativeBase):
    """Declarative base of the fixed tables in each shard database."""


class DwdOrder(ShardBase):
    """One row per order, always the latest and fullest state; ``version`` is the optimistic lock."""

    __tablename__ = "dwd_order"
    #: What search needs (``search.sql``): a store's days, a member's orders, newest first.
    __table_args__ = (Index("ix_dwd_order_store_day", "store_id", "biz_date"),
                      Index("ix_dwd_order_member", "member_id"), Index("ix_dwd_order_created", "created_at"))

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    store_id: Mapped[str | None] = mapped_column(String(32))
    store_name: Mapped[str | None] = mapped_column(String(128))
    city: Mapped[str | None] = mapped_column(String(64))
    region: Mapped[str | None] = mapped_column(String(64))
    member_id: Mapped[str | None] = mapped_column(String(32))
    channel: Mapped[str | None] = mapped_column(String(16))
    status: Mapped[int] = mapped_column(Integer, default=0)
    item_count: Mapped[int | None] = mapped_column(Integer)
    total_amount: Mapped[Decimal | None] = mapped_column(Money)
    discount_amount: Mapped[Decimal | None] = mapped_column(Money)
    pay_amount: Mapped[Decimal | None] = mapped_column(Money)
    pay_channel: Mapped[str | None] = mapped_column(String(32))
    pay_txn_id: Mapped[str | None] = mapped_column(String(64))
    paid_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    delivery_type: Mapped[str | None] = mapped_column(String(32))
    refund_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    refund_count: Mapped[int] = mapped_column(Integer, default=0)
    perf_staff_id: Mapped[str | None] = mapped_column(String(32))
    perf_amount: Mapped[Decimal | None] = mapped_column(Money)
    created_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    biz_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    last_operation: Mapped[str | None] = mapped_column(String(16))
    version: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)
    #: The digest of the source columns of this row and its lines as the chain wrote them
    #: (``chain.wide_rows.source_digest``): reconciliation proves a row unchanged by comparing it
    #: with the same digest of the stored columns, in SQL.  NULL on rows written before it existed.
    source_digest: Mapped[int | None] = mapped_column(BigInteger)


class DwdOrderItem(ShardBase):
    """One row per order line, with its SKU attributes and refunds."""

    __tablename__ = "dwd_order_item"

    item_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    order_id: Mapped[str] = mapped_column(String(64), index=True)
    store_id: Mapped[str | None] = mapped_column(String(32))
    #: Indexed: reconciliation sums a day's lines by their own copy of the order's day.
    biz_date: Mapped[dt.date | None] = mapped_column(Date, index=True)
    #: Indexed: search finds the orders with a line of a SKU.
    sku_id: Mapped[str | None] = mapped_column(String(32), index=True)
    sku_name: Mapped[str | None] = mapped_column(String(128))
    category: Mapped[str | None] = mapped_column(String(64))
    quantity: Mapped[int] = mapped_column(Integer, default=0)
    unit_price: Mapped[Decimal | None] = mapped_column(Money)
    amount: Mapped[Decimal | None] = mapped_column(Money)
    refund_quantity: Mapped[int] = mapped_column(Integer, default=0)
    refund_amount: Mapped[Decimal] = mapped_column(Money, default=Decimal("0.00"))
    status: Mapped[int] = mapped_column(Integer, default=0)


class OrderSnapshot(ShardBase):
    """The wide row as it was when one operation finished; a re-run overwrites it."""

    __tablename__ = "dwd_order_snapshot"
    __table_args__ = (UniqueConstraint("order_id", "operation_type", name="uq_snapshot_order_op"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(64))
    operation_type: Mapped[str] = mapped_column(String(16))
    task_version: Mapped[int] = mapped_column(Integer)
    order_row: Mapped[str] = mapped_column(Text)
    item_rows: Mapped[str] = mapped_column(Text)
    taken_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)


class IndexOutbox(ShardBase):
    """Orders whose wide row changed and whose index document has not been sent yet: written in
    the transaction that writes the wide row (only when an index is configured), deleted once
    Elasticsearch holds that version or a newer one (``search.outbox``)."""

    __tablename__ = "index_outbox"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: The wide row's version to send (or newer).
    version: Mapped[int] = mapped_column(Integer)
    due_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text)


class OrderFence(ShardBase):
    """The largest fencing token a chain has claimed the order with (``reliability.fencing``):
    a step whose token is not this one writes nothing."""

    __tablename__ = "order_fence"

    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    token: Mapped[int] = mapped_column(BigInteger)
    claimed_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class FailedTask(ShardBase):
    """A task that ran out of attempts: why, what it last saw, and where its data came from."""

    __tablename__ = "failed_task"
    __table_args__ = (UniqueConstraint("order_id", "operation_type", name="uq_failed_order_op"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    order_id: Mapped[str] = mapped_column(String(64))
    operation_type: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str] = mapped_column(String(255))
    last_error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    history: Mapped[str] = mapped_column(Text)
    sources: Mapped[str] = mapped_column(Text)
    failed_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    resolved_at: Mapped[dt.datetime | None] = mapped_column(Timestamp)


class QuarantinedInput(ShardBase):
    """Input tdc could not accept, kept verbatim with the precise reason; one row per input
    (``raw_hash``: its format and exact text), however often it is replayed."""

    __tablename__ = "quarantine"
    __table_args__ = (UniqueConstraint("raw_hash", name="uq_quarantine_raw"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    input_format: Mapped[str] = mapped_column(String(16))
    order_id: Mapped[str | None] = mapped_column(String(64), index=True)
    reason: Mapped[str] = mapped_column(String(512))
    raw: Mapped[str] = mapped_column(Text)
    #: sha1 of the format and the raw text (NULL on rows kept before it existed).
    raw_hash: Mapped[str | None] = mapped_column(String(40))
