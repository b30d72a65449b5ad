"""Reading and moving task rows: due, running, waiting with back-off, done, failed.

The chain's reads are batch reads over the orders of one database (``tasks_of``, ``facts_of``:
one indexed select per order, joined with UNION ALL), and its writes are driver SQL made once per
task table (``models.driver_sql``), each a compare-and-set on the version it read: new data or a
wake-up that bumped the version since wins, and the task is left as it made it."""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import Connection, Row, insert, select, tuple_, update

from flows.machine import WAITING_FOR
from models.driver_sql import driver_time, marks, run_together, statement, union_all
from models.orders import FailedTask
from models.sharded import TaskStatus, meta_table, task_table
from models.shards import meta_table_name, task_table_name
from settings import Settings
from strategies.facts import OrderFacts

log = logging.getLogger(__name__)
T = TypeVar("T")

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


def load_facts(connection: Connection, shard: int, order_id: str) -> tuple[OrderFacts, list[Row[Any]]]:
    meta = meta_table(shard)
    rows = list(connection.execute(select(meta).where(meta.c.order_id == order_id)))
    return OrderFacts.from_metadata(order_id, (row._mapping for row in rows)), rows


def _history(task: Row[Any], entry: dict[str, Any]) -> str:
    history = json.loads(task.history or "[]")
    history.append(entry)
    return json.dumps(history[-HISTORY_LIMIT:])


def parked_by(task: Row[Any]) -> int | None:
    history = json.loads(task.history or "[]")
    return history[-1].get("token") if history else None


_TASK_COLUMNS = "id, order_id, operation_type, status, version, done_version, attempts, last_error, history"
_ORDER_TASKS = "SELECT " + _TASK_COLUMNS + " FROM {task} WHERE order_id = ?"
_ORDER_META = ("SELECT order_id, operation_type, source, unique_key, kind, content, position, input_format "
               "FROM {meta} WHERE order_id = ?")
_PENDING = "SELECT order_id, operation_type FROM {task} WHERE order_id = ? AND status = 'PENDING'"


def tasks_of(connection: Connection, shards: dict[str, int]) -> dict[str, dict[str, Row[Any]]]:
    """The task rows of each order (order -> its shard, all in ``connection``'s database), by
    order and operation, in a few round trips.  No row locks: every write is a compare-and-set."""
    found: dict[str, dict[str, Row[Any]]] = {order_id: {} for order_id in shards}
    terms = [({"task": task_table_name(shard)}, (order_id,)) for order_id, shard in shards.items()]
    for row in union_all(connection, _ORDER_TASKS, terms):
        found[row.order_id][row.operation_type] = row
    return found


def facts_of(connection: Connection, shards: dict[str, int]) -> dict[str, tuple[OrderFacts, list[Row[Any]]]]:
    """What tdc knows of each order and the metadata rows it comes from, in a few round trips.
    Read after the orders' task rows, the facts are at least as new as the versions read."""
    rows: dict[str, list[Row[Any]]] = {order_id: [] for order_id in shards}
    terms = [({"meta": meta_table_name(shard)}, (order_id,)) for order_id, shard in shards.items()]
    for row in union_all(connection, _ORDER_META, terms):
        rows[row.order_id].append(row)
    return {order_id: (OrderFacts.from_metadata(order_id, (r._mapping for r in found)), found)
            for order_id, found in rows.items()}


def pending_of(connection: Connection, shards: dict[str, int]) -> list[tuple[str, str]]:
    """The (order, operation) tasks of the orders that wait to be submitted."""
    terms = [({"task": task_table_name(shard)}, (order_id,)) for order_id, shard in shards.items()]
    return [(row.order_id, row.operation_type) for row in union_all(connection, _PENDING, terms)]


_MARK_RUNNING = "UPDATE {task} SET status = 'RUNNING', next_run_at = ?, updated_at = ? WHERE order_id = ?"
_PARK = ("UPDATE {task} SET status = 'WAITING', attempts = ?, last_error = ?, history = ?, next_run_at = ?, "
         "updated_at = ? WHERE id = ? AND version = ?")
_FAIL = ("UPDATE {task} SET status = 'FAILED', attempts = ?, last_error = ?, history = ?, updated_at = ? "
         "WHERE id = ? AND version = ?")
_MARK_DONE = ("UPDATE {task} SET status = 'DONE', done_version = version, attempts = 0, last_error = NULL, "
              "updated_at = ? WHERE order_id = ? AND status = 'RUNNING'")


class TasksChanged(RuntimeError):
    """A task row changed between its read and its compare-and-set (new data bumped it): the
    transaction's decisions rest on the read, so it is run again (``rerun_on_change``)."""


#: Transactions run again after TasksChanged before the step falls back to one order at a time.
CHANGE_ATTEMPTS = 3


def rerun_on_change(work: Callable[[], T]) -> T:
    """Run ``work`` (one whole transaction) again while a task row changed under it."""
    for attempt in range(CHANGE_ATTEMPTS):
        try:
            return work()
        except TasksChanged:
            if attempt == CHANGE_ATTEMPTS - 1:
                raise
            log.info("a task row changed under the step; running its transaction again")
    raise AssertionError("unreachable")


def _write(connection: Connection, template: str, shard: int, parameters: tuple[Any, ...]) -> bool:
    sql = statement(connection, template, task=task_table_name(shard))
    return bool(connection.exec_driver_sql(sql, parameters).rowcount)


class CompareAndSets:
    """A transaction's per-order task compare-and-sets, in the order they were added (the order
    every writer takes task rows), sent together by ``flush`` (``models.driver_sql.run_together``:
    a few round trips for hundreds of orders on MySQL/MariaDB).  TasksChanged when one matched
    fewer rows than it expected.  Flush before any other write to task rows, and before commit."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self._writes: list[tuple[str, tuple[Any, ...]]] = []
        self._expected: list[tuple[int, str, str]] = []

    def add(self, sql: str, parameters: tuple[Any, ...], expected: int, order_id: str, before: str) -> None:
        """``sql`` should match ``expected`` task rows of ``order_id``; ``before``: what a task
        that changed was changed before, for the error."""
        self._writes.append((sql, parameters))
        self._expected.append((expected, order_id, before))

    def flush(self) -> None:
        writes, expected = self._writes, self._expected
        self._writes, self._expected = [], []
        for changed, (wanted, order_id, before) in zip(run_together(self.connection, writes), expected, strict=True):
            if changed != wanted:
                raise TasksChanged(f"{order_id}: {wanted - changed} of {wanted} tasks changed before {before}")


def mark_running(sets: CompareAndSets, shard: int, tasks: list[Row[Any]], settings: Settings,
                 now: dt.datetime) -> None:
    """Make an order's ``tasks`` (as read, all in table ``shard``) RUNNING with a lease, in one
    compare-and-set added to ``sets``; its flush raises TasksChanged when any of them changed
    since it was read."""
    if not tasks:
        return
    connection = sets.connection
    lease_end = now + dt.timedelta(seconds=settings.lease_seconds)
    matches = " OR ".join(["(id = ? AND version = ?)"] * len(tasks))
    sql = statement(connection, _MARK_RUNNING + " AND (" + matches + ")", task=task_table_name(shard))
    sets.add(sql, (driver_time(connection, lease_end), driver_time(connection, now), tasks[0].order_id,
                   *(value for task in tasks for value in (task.id, task.version))),
             len(tasks), tasks[0].order_id, "they could run")


def park(connection: Connection, shard: int, task: Row[Any], reason: str, settings: Settings,
         now: dt.datetime, sources: list[Row[Any]], token: int | None = None) -> bool:
    """Count one more attempt and park the task with back-off, or send it to the failed-task
    table when that was its last attempt (then True).  A task that changed since it was read
    is left as it is (its new version is due).

    ``token``: the chain's fencing token.  A chain counts one attempt per task however often its
    step is retried: a task this chain already parked (its last history entry has the token)
    is left as it is."""
    if token is not None and task.status == TaskStatus.WAITING and parked_by(task) == token:
        return False
    attempts = task.attempts + 1
    if attempts >= settings.max_attempts:
        return fail(connection, shard, task, reason, now, sources)
    history = _history(task, {"at": now.isoformat(timespec="seconds"), "attempt": attempts, "reason": reason,
                              "token": token})
    due = now + dt.timedelta(seconds=backoff_seconds(settings, attempts))
    _write(connection, _PARK, shard, (attempts, reason, history, driver_time(connection, due),
                                      driver_time(connection, now), task.id, task.version))
    return False


def fail(connection: Connection, shard: int, task: Row[Any], reason: str, now: dt.datetime,
         sources: list[Row[Any]]) -> bool:
    """Fail the task: a data error waiting cannot fix, or its last attempt ran out; True when
    it was failed.  A task that changed since it was read is left as it is."""
    history = _history(task, {"at": now.isoformat(timespec="seconds"), "attempt": task.attempts + 1,
                              "reason": reason})
    if not _write(connection, _FAIL, shard, (task.attempts + 1, reason, history, driver_time(connection, now),
                                             task.id, task.version)):
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


def mark_done(sets: CompareAndSets, shard: int, order_id: str, done: list[tuple[str, int]],
              now: dt.datetime) -> None:
    """Mark an order's (operation, version) tasks DONE in one compare-and-set added to ``sets``,
    each only if it is still RUNNING at that version (the caller read so); the flush raises
    TasksChanged when any is not any more (newer data arrived since the read).  (Their rows in
    the failed-task table, if any, are resolved by ``resolve_failures``.)"""
    if not done:
        return
    connection = sets.connection
    matches = " OR ".join(["(operation_type = ? AND version = ?)"] * len(done))
    sql = statement(connection, _MARK_DONE + " AND (" + matches + ")", task=task_table_name(shard))
    sets.add(sql, (driver_time(connection, now), order_id, *(value for pair in done for value in pair)),
             len(done), order_id, "they were done")


def resolve_failures(connection: Connection, done: list[tuple[str, str]], now: dt.datetime) -> None:
    """Mark the failed-task rows of the (order, operation) tasks that are DONE now resolved."""
    if done:
        connection.execute(update(FailedTask).where(
            tuple_(FailedTask.order_id, FailedTask.operation_type).in_(done) & FailedTask.resolved_at.is_(None)
        ).values(resolved_at=now))


def wakeable(tasks: dict[str, Row[Any]], operations: tuple[str, ...]) -> list[str]:
    """Those of ``operations`` whose task (as read) waits for a predecessor: WAITING or PENDING,
    or FAILED for waiting too long."""
    return [op for op in operations if op in tasks and (
        tasks[op].status in (TaskStatus.WAITING, TaskStatus.PENDING)
        or (tasks[op].status == TaskStatus.FAILED and (tasks[op].last_error or "").startswith(WAITING_FOR)))]


_WAITING = ("WHERE order_id = ? AND operation_type IN ({operations}) AND (status IN ('WAITING', 'PENDING') "
            "OR (status = 'FAILED' AND last_error LIKE ?))")


def wake(connection: Connection, shard: int, order_id: str, operations: tuple[str, ...],
         now: dt.datetime) -> list[str]:
    """Make the order's tasks among ``operations`` that wait for a predecessor due now, with
    fresh attempts, including those that failed for waiting too long; returns those woken.

    Waking bumps the version like new data does, so a checker that read the task before the
    wake-up cannot park it over the wake-up (its conditional update finds a newer version)."""
    if not operations:
        return []
    table, listed = task_table_name(shard), marks(connection, len(operations))
    where = (order_id, *operations, f"{WAITING_FOR}%")
    woken = [row.operation_type for row in connection.exec_driver_sql(statement(
        connection, "SELECT operation_type FROM {task} " + _WAITING, task=table, operations=listed), where)]
    if woken:
        at = driver_time(connection, now)
        connection.exec_driver_sql(statement(
            connection, "UPDATE {task} SET version = version + 1, status = 'PENDING', attempts = 0, next_run_at = ?, "
            "updated_at = ? " + _WAITING, task=table, operations=listed), (at, at, *where))
    return woken
