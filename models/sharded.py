"""The 4096-way sharded tables: ``task_NNNN`` (one row per order and operation) and
``meta_NNNN`` (one row per accepted input, unique on order, operation, source and key).

Building a full ``Table`` costs ~1.4 ms and ~16 KB (measured: 4096 tables, 5.6 s, 68 MB),
too much for a rescan touching every table, so DML uses light ``TableClause`` objects and
only ``tdc init`` builds the full tables, one at a time.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from sqlalchemy import (
    Column,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.sql.expression import TableClause, column, table

from models.shards import meta_table_name, task_table_name
from models.types import BigId, Timestamp


class TaskStatus:
    """Task states; a task is due for processing when PENDING, WAITING or RUNNING with
    ``next_run_at`` in the past (for RUNNING, ``next_run_at`` is the end of its lease)."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    WAITING = "WAITING"
    DONE = "DONE"
    FAILED = "FAILED"
    DUE = (PENDING, WAITING, RUNNING)


def _task_columns() -> list[Column]:
    return [
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("order_id", String(64), nullable=False),
        Column("operation_type", String(16), nullable=False),
        Column("status", String(16), nullable=False),
        # Bumped by every new or corrected input; the chain that processed it stores it as done_version.
        Column("version", Integer, nullable=False),
        Column("done_version", Integer, nullable=False),
        Column("attempts", Integer, nullable=False),
        Column("next_run_at", Timestamp, nullable=False),
        Column("last_error", Text),
        Column("history", Text),
        Column("created_at", Timestamp, nullable=False),
        Column("updated_at", Timestamp, nullable=False),
    ]


def _meta_columns() -> list[Column]:
    return [
        Column("id", BigId, primary_key=True, autoincrement=True),
        Column("order_id", String(64), nullable=False),
        Column("operation_type", String(16), nullable=False),
        Column("source", String(64), nullable=False),
        Column("unique_key", String(128), nullable=False),
        Column("kind", String(8), nullable=False),
        Column("content", Text, nullable=False),
        Column("content_hash", String(40), nullable=False),
        # Sortable source position (binlog, Canal id) or occurred_at: older never overwrites newer.
        Column("position", String(64), nullable=False),
        Column("input_format", String(16), nullable=False),
        Column("received_at", Timestamp, nullable=False),
        Column("updated_at", Timestamp, nullable=False),
    ]


#: Table options of the sharded tables.  On MySQL/MariaDB, InnoDB keeps their optimizer
#: statistics in memory (``STATS_PERSISTENT=0``, recomputed from a few sampled pages when a
#: table is opened or a sixteenth of it changed) instead of in ``mysql.innodb_*_stats``: with
#: persistent statistics, every write to a small table changes more than the tenth of it that
#: queues a recalculation, and each recalculation is a transaction of its own on the server,
#: with an fsync.  Measured: a transaction writing 100 different task tables cost 103 fsyncs
#: instead of 1, and the server spent 1.1 CPU-s instead of 0.45 on the binlog tail's 7,922 rows.
#: Every statement on these tables goes by the primary key, the unique key or the due index,
#: which need no more than sampled statistics.
SHARD_TABLE_OPTIONS: dict[str, Any] = {"mysql_stats_persistent": "0"}


def build_task_table(shard: int, metadata: MetaData) -> Table:
    """The full task table for DDL."""
    name = task_table_name(shard)
    return Table(
        name,
        metadata,
        *_task_columns(),
        UniqueConstraint("order_id", "operation_type", name=f"uq_{name}"),
        Index(f"ix_{name}_due", "status", "next_run_at"),
        **SHARD_TABLE_OPTIONS,
    )


def build_meta_table(shard: int, metadata: MetaData) -> Table:
    """The full metadata table for DDL."""
    name = meta_table_name(shard)
    return Table(
        name,
        metadata,
        *_meta_columns(),
        UniqueConstraint("order_id", "operation_type", "source", "unique_key", name=f"uq_{name}"),
        **SHARD_TABLE_OPTIONS,
    )


def _light(name: str, columns: list[Column]) -> TableClause:
    return table(name, *(column(c.name, c.type) for c in columns))


@lru_cache(maxsize=8192)
def task_table(shard: int) -> TableClause:
    """The task table of ``shard`` for queries."""
    return _light(task_table_name(shard), _task_columns())


@lru_cache(maxsize=8192)
def meta_table(shard: int) -> TableClause:
    """The metadata table of ``shard`` for queries."""
    return _light(meta_table_name(shard), _meta_columns())
