"""The safety net: find due tasks in a slice of the task tables.

Job ``k`` of ``n`` scans tables ``t`` with ``t % n == k``, one indexed select per table
(``status IN (...) AND next_run_at <= now``, on the ``(status, next_run_at)`` index),
holding one connection per shard database for the whole slice.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict

from sqlalchemy import select

from models.sharded import TaskStatus, task_table
from models.shards import database_for_shard
from models.storage import Storage
from pipeline.intake import TaskKey


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
                task = task_table(shard)
                query = (
                    select(task.c.order_id, task.c.operation_type)
                    .where(task.c.status.in_(TaskStatus.DUE) & (task.c.next_run_at <= now))
                    .limit(per_table)
                )
                due += [(row.order_id, row.operation_type) for row in connection.execute(query)]
    return due
