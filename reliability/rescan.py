"""The safety net: find due tasks in a slice of the task tables.

Job ``k`` of ``n`` scans tables ``t`` with ``t % n == k``, one indexed select per table
(``status IN (...) AND next_run_at <= now``, on the ``(status, next_run_at)`` index, longest
due first), a few hundred of them joined with UNION ALL per round trip, holding one connection
per shard database for the whole slice.  A due task whose
order's lease is held (its chain is alive) is postponed to the next pass, behind everything due
before it, so a backlog of held rows never hides an orphaned task behind the per-table limit.

The statements are driver SQL (``models.driver_sql``): 4096 differently named tables defeat
SQLAlchemy's compiled-statement cache, and compiling each select cost more than running it (an
idle pass over 4096 SQLite tables took 6.5 s compiled, see `tdc bench rescan`).  Table
names come from the shard map only.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import Connection

from intake.receiver import TaskKey
from models.driver_sql import driver_time, marks, statement, union_all
from models.sharded import TaskStatus
from models.shards import database_for_shard, task_table_name
from models.storage import Storage
from reliability.transient import retry_on_contention

#: Due tasks of one table, longest due first: a derived table, so UNION ALL can join many.
_STATUSES = ", ".join(f"'{status}'" for status in TaskStatus.DUE)
_DUE = ("SELECT * FROM (SELECT order_id, operation_type FROM {task} WHERE status IN (" + _STATUSES + ") "
        "AND next_run_at <= ? ORDER BY next_run_at LIMIT ?) AS due")


def due_in_tables(connection: Connection, shards: list[int], now: dt.datetime, limit: int) -> list[TaskKey]:
    """Due tasks of the task tables ``shards`` (all in ``connection``'s database), at most
    ``limit`` from each, in a few round trips (``models.driver_sql.union_all``)."""
    at = driver_time(connection, now)
    rows = union_all(connection, _DUE, [({"task": task_table_name(shard)}, (at, limit)) for shard in shards])
    return [(row[0], row[1]) for row in rows]


def due_in_table(connection: Connection, shard: int, now: dt.datetime, limit: int) -> list[TaskKey]:
    return due_in_tables(connection, [shard], now, limit)


_POSTPONE = ("UPDATE {task} SET next_run_at = ? WHERE order_id IN ({orders}) AND status IN (" + _STATUSES + ") "
             "AND next_run_at <= ?")


def postpone(storage: Storage, keys: list[TaskKey], now: dt.datetime, seconds: float) -> int:
    """Make the orders of ``keys`` (due, but their chain is alive and holds the order) due again
    ``seconds`` from now; returns how many task rows moved.  Only rows still due move.  One
    transaction per shard database."""
    later = now + dt.timedelta(seconds=seconds)
    by_database: dict[int, dict[int, set[str]]] = defaultdict(lambda: defaultdict(set))
    for order_id, _ in keys:
        by_database[storage.database_of(order_id)][storage.shard_of(order_id)].add(order_id)

    def move(database: int, shards: dict[int, set[str]]) -> int:
        moved = 0
        with storage.shard_engine(database).begin() as connection:
            for shard, orders in sorted(shards.items()):
                sql = statement(connection, _POSTPONE, task=task_table_name(shard),
                                orders=marks(connection, len(orders)))
                moved += connection.exec_driver_sql(sql, (
                    driver_time(connection, later), *sorted(orders), driver_time(connection, now))).rowcount
        return moved

    # A deadlock with a chain or an intake on the same rows rolls the whole transaction back; it
    # only moves rows still due, so running it again is safe.
    return sum(retry_on_contention(lambda: move(database, shards))  # noqa: B023 - called at once
               for database, shards in sorted(by_database.items()))


def due_tasks(storage: Storage, job: int, jobs: int, now: dt.datetime, per_table: int) -> list[TaskKey]:
    """Due tasks of rescan job ``job`` of ``jobs``, at most ``per_table`` from each table."""
    shards = storage.settings.shards
    by_database: dict[int, list[int]] = defaultdict(list)
    for shard in range(job, shards, jobs):
        by_database[database_for_shard(shard, shards)].append(shard)
    due: list[TaskKey] = []
    for database, tables in by_database.items():
        with storage.read_engine(database).connect() as connection:
            due += due_in_tables(connection, tables, now, per_table)
    return due
