"""What the CDC readers keep, in shard database 0: where each binlog tail has safely got to,
and every schema change seen on a followed table."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import BigInteger, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from models.orders import ShardBase
from models.types import BigId, Timestamp


class CdcPosition(ShardBase):
    """A tail's position: the binlog coordinates after the last transaction whose changes are
    committed to metadata, and the tail's commit clock there (see ``cdc.binlog``)."""

    __tablename__ = "cdc_position"

    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    log_file: Mapped[str] = mapped_column(String(255))
    log_pos: Mapped[int] = mapped_column(BigInteger)
    #: The server's GTID position there, where it has one (MariaDB ``domain-server-seq`` list).
    gtid: Mapped[str | None] = mapped_column(String(1024))
    clock_ms: Mapped[int] = mapped_column(BigInteger)
    #: "tail" when the tail stored it, "snapshot" when a snapshot handed over to the tail.
    stored_by: Mapped[str] = mapped_column(String(16))
    updated_at: Mapped[dt.datetime] = mapped_column(Timestamp)


class SchemaChangeRecord(ShardBase):
    """A DDL statement on a followed source table, as it arrived; one row per table and source
    position, however often it is replayed."""

    __tablename__ = "schema_change"
    __table_args__ = (UniqueConstraint("source_database", "source_table", "position", name="uq_schema_change_at"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    received_at: Mapped[dt.datetime] = mapped_column(Timestamp, index=True)
    input_format: Mapped[str] = mapped_column(String(16))
    source_database: Mapped[str] = mapped_column(String(128))
    source_table: Mapped[str] = mapped_column(String(128))
    position: Mapped[str] = mapped_column(String(64))
    sql: Mapped[str] = mapped_column(Text)
