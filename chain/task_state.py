"""Reading and moving task rows: due, running, waiting with back-off, done, failed."""

from __future__ import annotations

import datetime as dt
import json
import random
from typing import Any

from sqlalchemy import Connection, Row, insert, select, update

from flows.state_machine import WAITING_FOR
from models.orders import FailedTask
from models.sharded import TaskStatus, meta_table, task_table
from settings import Settings
from strategies.facts import OrderFacts

#: Entries kept in a task's attempt history.
HISTORY_LIMIT = 20


def backoff_seconds(settings: Settings, attempts: int) -> float:
    """Exponential back-off with +/-20% jitter: base * 2**(attempts-1), capped."""
    delay = min(settings.retry_cap_seconds, settings.retry_base_seconds * 2 ** max(attempts - 1, 0))
    return delay * random.uniform(0.8, 1.2)


def load_task(connection: Connection, shard: int, order_id: str, operation: str) -> Row[Any] | None:
    task = task_table(shard)
    return connection.execute(
        select(task).where((task.c.order_id == order_id) & (task.c.operation_type == operation))
    ).first()


def order_tasks(connection: Connection, shard: int, order_id: str, lock: bool = False) -> list[Row[Any]]:
    """The order's task rows; ``lock``: with row locks to the end of the transaction, taken in
    index order (order, operation) as every writer of task rows takes them."""
    task = task_table(shard)
    query = select(task).where(task.c.order_id == order_id).order_by(task.c.operation_type)
    return list(connection.execute(query.with_for_update() if lock else query))


def pending_operations(connection: Connection, shard: int, order_id: str) -> list[str]:
    """The order's operations waiting to be submitted (new data or a wake-up arrived)."""
    task = task_table(shard)
    return list(connection.execute(select(task.c.operation_type).where(
        (task.c.order_id == order_id) & (task.c.status == TaskStatus.PENDING))).scalars())


def load_facts(connection: Connection, shard: int, order_id: str) -> tuple[OrderFacts, list[Row[Any]]]:
    meta = meta_table(shard)
    rows = list(connection.execute(select(meta).where(meta.c.order_id == order_id)))
    return OrderFacts.from_metadata(order_id, (row._mapping for row in rows)), rows


def _history(task: Row[Any], entry: dict[str, Any]) -> str:
    history = json.loads(task.history or "[]")
    history.append(entry)
    return json.dumps(history[-HISTORY_LIMIT:])


def _parked_by(task: Row[Any]) -> int | None:
    history = json.loads(task.history or "[]")
    return history[-1].get("token") if history else None


def _unchanged(table: Any, task: Row[Any]) -> Any:
    """The task row as it was read: nothing (new data, a wake-up) bumped its version since."""
    return (table.c.id == task.id) & (table.c.version == task.version)


def mark_running(connection: Connection, shard: int, task: Row[Any], settings: Settings, now: dt.datetime) -> bool:
    """RUNNING with a lease; False when the task changed since it was read."""
    table = task_table(shard)
    return bool(connection.execute(update(table).where(_unchanged(table, task)).values(
        status=TaskStatus.RUNNING, next_run_at=now + dt.timedelta(seconds=settings.lease_seconds),
        updated_at=now,
    )).rowcount)


def park(connection: Connection, shard: int, task: Row[Any], reason: str, settings: Settings,
         now: dt.datetime, sources: list[Row[Any]], token: int | None = None) -> bool:
    """Count one more attempt and park the task with back-off, or send it to the failed-task
    table when that was its last attempt (then True).  A task that changed since it was read
    is left as it is (its new version is due).

    ``token``: the chain's fencing token.  A chain counts one attempt per task however often its
    step is retried: a task this chain already parked (its last history entry has the token)
    is left as it is."""
    if token is not None and task.status == TaskStatus.WAITING and _parked_by(task) == token:
        return False
    attempts = task.attempts + 1
    if attempts >= settings.max_attempts:
        return fail(connection, shard, task, reason, now, sources)
    table = task_table(shard)
    history = _history(task, {"at": now.isoformat(timespec="seconds"), "attempt": attempts, "reason": reason,
                              "token": token})
    connection.execute(update(table).where(_unchanged(table, task)).values(
        status=TaskStatus.WAITING, attempts=attempts, last_error=reason, history=history,
        next_run_at=now + dt.timedelta(seconds=backoff_seconds(settings, attempts)), updated_at=now,
    ))
    return False


def fail(connection: Connection, shard: int, task: Row[Any], reason: str, now: dt.datetime,
         sources: list[Row[Any]]) -> bool:
    """Fail the task: a data error waiting cannot fix, or its last attempt ran out; True when
    it was failed.  A task that changed since it was read is left as it is."""
    table = task_table(shard)
    history = _history(task, {"at": now.isoformat(timespec="seconds"), "attempt": task.attempts + 1,
                              "reason": reason})
    if not connection.execute(update(table).where(_unchanged(table, task)).values(
        status=TaskStatus.FAILED, attempts=task.attempts + 1, last_error=reason, history=history,
        updated_at=now,
    )).rowcount:
        return False
    record_failure(connection, task, reason, task.attempts + 1, history, sources, now)
    return True


def record_failure(connection: Connection, task: Row[Any], reason: str, attempts: int, history: str,
                   sources: list[Row[Any]], now: dt.datetime) -> None:
    """Write or refresh the failed-task row: reason, last error, attempts, data sources."""
    origin = json.dumps(sorted({f"{m.input_format}:{m.source}:{m.unique_key}@{m.position}" for m in sources}))
    values = dict(reason=reason[:255], last_error=reason, attempts=attempts, history=history,
                  sources=origin, failed_at=now, resolved_at=None)
    where = (FailedTask.order_id == task.order_id) & (FailedTask.operation_type == task.operation_type)
    if not connection.execute(update(FailedTask).where(where).values(**values)).rowcount:
        connection.execute(insert(FailedTask).values(
            order_id=task.order_id, operation_type=task.operation_type, **values))


def mark_done(connection: Connection, shard: int, order_id: str, operation: str, version: int,
              now: dt.datetime) -> bool:
    """DONE only if no newer version arrived while the chain ran; True when marked."""
    table = task_table(shard)
    result = connection.execute(update(table).where(
        (table.c.order_id == order_id) & (table.c.operation_type == operation)
        & (table.c.version == version) & (table.c.status == TaskStatus.RUNNING)
    ).values(status=TaskStatus.DONE, done_version=version, attempts=0, last_error=None, updated_at=now))
    if result.rowcount:
        connection.execute(update(FailedTask).where(
            (FailedTask.order_id == order_id) & (FailedTask.operation_type == operation)
            & FailedTask.resolved_at.is_(None)
        ).values(resolved_at=now))
    return bool(result.rowcount)


def wake(connection: Connection, shard: int, order_id: str, operations: tuple[str, ...],
         now: dt.datetime) -> list[str]:
    """Make the order's tasks among ``operations`` that wait for a predecessor due now, with
    fresh attempts, including those that failed for waiting too long; returns those woken.

    Waking bumps the version like new data does, so a checker that read the task before the
    wake-up cannot park it over the wake-up (its conditional update finds a newer version)."""
    if not operations:
        return []
    table = task_table(shard)
    waiting = table.c.status.in_((TaskStatus.WAITING, TaskStatus.PENDING)) | (
        (table.c.status == TaskStatus.FAILED) & table.c.last_error.like(f"{WAITING_FOR}%"))
    where = (table.c.order_id == order_id) & table.c.operation_type.in_(operations) & waiting
    woken = [row.operation_type for row in connection.execute(select(table.c.operation_type).where(where))]
    if woken:
        connection.execute(update(table).where(where).values(
            version=table.c.version + 1, status=TaskStatus.PENDING, attempts=0, next_run_at=now, updated_at=now))
    return woken
