"""The safety net: find due tasks in a slice of the task tables.

Job ``k`` of ``n`` scans tables ``t`` with ``t % n == k``, one indexed select per table
(``status IN (...) AND next_run_at <= now``, on the ``(status, next_run_at)`` index, longest
due first), holding one connection per shard database for the whole slice.  A due task whose
order's lease is held (its chain is alive) is postponed to the next pass, behind everything due
before it, so a backlog of held rows never hides an orphaned task behind the per-table limit.

The statement text is made once per table and sent as is: 4096 differently named tables
defeat SQLAlchemy's compiled-statement cache, and compiling each select cost more than running
it (an idle pass over 4096 SQLite tables took 6.5 s compiled, see `tdc bench rescan`).  Table
names come from the shard map only.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from functools import lru_cache

from sqlalchemy import Connection, update

from intake.receiver import TaskKey
from models.driver_sql import PLACEHOLDER, driver_time
from models.sharded import TaskStatus, task_table
from models.shards import database_for_shard, task_table_name
from models.storage import Storage


@lru_cache(maxsize=16384)
def _due_sql(shard: int, paramstyle: str) -> str:
    mark = PLACEHOLDER[paramstyle]
    statuses = ", ".join([mark] * len(TaskStatus.DUE))
    return (f"SELECT order_id, operation_type FROM {task_table_name(shard)} "
            f"WHERE status IN ({statuses}) AND next_run_at <= {mark} ORDER BY next_run_at LIMIT {mark}")


def due_in_table(connection: Connection, shard: int, now: dt.datetime, limit: int) -> list[TaskKey]:
    sql = _due_sql(shard, connection.dialect.paramstyle)
    rows = connection.exec_driver_sql(sql, (*TaskStatus.DUE, driver_time(connection, now), limit))
    return [(row[0], row[1]) for row in rows]


def postpone(storage: Storage, keys: list[TaskKey], now: dt.datetime, seconds: float) -> int:
    """Make the orders of ``keys`` (due, but their chain is alive and holds the order) due again
    ``seconds`` from now; returns how many task rows moved.  Only rows still due move."""
    later = now + dt.timedelta(seconds=seconds)
    by_shard: dict[int, set[str]] = defaultdict(set)
    for order_id, _ in keys:
        by_shard[storage.shard_of(order_id)].add(order_id)
    moved = 0
    for shard, orders in sorted(by_shard.items()):
        table = task_table(shard)
        with storage.engine_for_shard(shard).begin() as connection:
            moved += connection.execute(update(table).where(
                table.c.order_id.in_(sorted(orders)) & table.c.status.in_(TaskStatus.DUE)
                & (table.c.next_run_at <= now)).values(next_run_at=later)).rowcount
    return moved


def due_tasks(storage: Storage, job: int, jobs: int, now: dt.datetime, per_table: int) -> list[TaskKey]:
    """Due tasks of rescan job ``job`` of ``jobs``, at most ``per_table`` from each table."""
    shards = storage.settings.shards
    by_database: dict[int, list[int]] = defaultdict(list)
    for shard in range(job, shards, jobs):
        by_database[database_for_shard(shard, shards)].append(shard)
    due: list[TaskKey] = []
    for database, tables in by_database.items():
        with storage.read_engine(database).connect() as connection:
            for shard in tables:
                due += due_in_table(connection, shard, now, per_table)
    return due
