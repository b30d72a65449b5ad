"""Tables that live once in every shard database: the index outbox, fences, failures, quarantine
(the wide tables and snapshots are made from the flows' declarations: ``models.wide``)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from models.types import BigId, Timestamp


class ShardBase(DeclarativeBase):
    """Declarative base of the fixed tables in each shard database."""


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


class DimensionUse(ShardBase):
    """Which entity's wide rows used which key of a dimension that refreshes open entities
    (``Lookup.refreshes``): written in the merge's transaction, so a rename finds exactly the
    entities to merge again (``dimensions.refresh``).  ``used_at`` is the merge's time: an entity
    not merged within ``TDC_REFRESH_DAYS`` is settled and left alone."""

    __tablename__ = "dimension_use"
    __table_args__ = (Index("ix_dimension_use_order", "order_id"),)

    dimension: Mapped[str] = mapped_column(String(32), primary_key=True)
    dim_key: Mapped[str] = mapped_column(String(128), primary_key=True)
    order_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    used_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)


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
