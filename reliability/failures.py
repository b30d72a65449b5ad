"""The failed-task table across the shard databases: listing, one failure, retrying."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from sqlalchemy import select

from chain.task_state import load_task
from intake.receiver import TaskKey, bump_task, utcnow
from models.orders import FailedTask
from models.sharded import TaskStatus
from models.storage import Storage


def failure_id(order_id: str, operation: str) -> str:
    """How a user names a failure: ``ORDER_ID/OPERATION`` (unique across the databases)."""
    return f"{order_id}/{operation}"


def parse_failure_id(text: str) -> TaskKey:
    """``ORDER_ID/OPERATION`` as a task key; raises ValueError naming the expected form."""
    order_id, _, operation = text.rpartition("/")
    if not order_id or not operation:
        raise ValueError(f"{text!r} is not a failure id; expected ORDER_ID/OPERATION as `tdc failed list` shows")
    return order_id, operation.upper()


def _row(row: Any) -> dict[str, Any]:
    entry = dict(row._mapping)
    entry["id"] = failure_id(row.order_id, row.operation_type)
    entry["history"] = json.loads(row.history or "[]")
    entry["sources"] = json.loads(row.sources or "[]")
    return entry


def list_failures(storage: Storage, limit: int | None = None, since: dt.datetime | None = None) -> list[dict[str, Any]]:
    """Unresolved failures, newest first (optionally only those failed since ``since``)."""
    found: list[dict[str, Any]] = []
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            query = select(FailedTask.__table__).where(FailedTask.resolved_at.is_(None))
            if since is not None:
                query = query.where(FailedTask.failed_at >= since)
            query = query.order_by(FailedTask.failed_at.desc())
            if limit is not None:
                query = query.limit(limit)
            found += [_row(row) for row in connection.execute(query)]
    found.sort(key=lambda entry: entry["failed_at"], reverse=True)
    return found[:limit] if limit is not None else found


def get_failure(storage: Storage, order_id: str, operation: str) -> dict[str, Any] | None:
    with storage.read_engine_for_order(order_id).connect() as connection:
        row = connection.execute(select(FailedTask.__table__).where(
            (FailedTask.order_id == order_id) & (FailedTask.operation_type == operation))).first()
    return None if row is None else _row(row)


def revive(storage: Storage, keys: list[TaskKey]) -> list[TaskKey]:
    """Make FAILED tasks among ``keys`` due again with fresh attempts; returns those revived
    (the caller submits them).  A task that is not FAILED any more is left alone."""
    revived: list[TaskKey] = []
    now = utcnow()
    for order_id, operation in keys:
        shard = storage.shard_of(order_id)
        with storage.order_transaction(order_id) as connection:
            task = load_task(connection, shard, order_id, operation)
            if task is not None and task.status == TaskStatus.FAILED:
                bump_task(connection, shard, order_id, operation, now)
                revived.append((order_id, operation))
    return revived
