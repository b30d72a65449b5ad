"""The steps of a task's chain: check, merge, aggregate, finish.

Each step takes a batch of task keys ``{"order_id", "operation_type", "token"}`` (a batch
of one is the ordinary case), re-reads what it needs, and returns the keys that go on.
Running any step twice changes nothing the second time.  A fault that is not transient
parks only the task that hit it; transient faults propagate so Celery retries the step.
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections.abc import Callable
from typing import Any

import redis
from sqlalchemy import Connection

from chain.task_state import (
    fail,
    load_facts,
    load_task,
    mark_done,
    mark_running,
    order_tasks,
    park,
    wake,
)
from chain.wide_rows import OptimisticLockConflict, merge_order_rows
from flows.state_machine import SUCCESSORS, Illegal, blocking_reason
from inputs.events import BadInput
from intake.receiver import TaskKey, quarantine, utcnow
from models.sharded import TaskStatus
from models.storage import Storage
from reliability.alarms import raise_alarm
from reliability.leases import TaskLocks
from reliability.transient import TRANSIENT_ERRORS
from settings import Settings
from strategies import CHECKERS
from strategies.generators import Dimensions
from warehouse.aggregates import apply_orders

log = logging.getLogger(__name__)

Key = dict[str, Any]

#: Read-modify-write rounds of one merge before the conflict is left to Celery's retry.
MERGE_ATTEMPTS = 8


def _owned(key: Key) -> tuple[str, str, str]:
    return key["order_id"], key["operation_type"], key.get("token", "")


def park_key(storage: Storage, locks: TaskLocks, settings: Settings, key: Key, reason: str) -> None:
    """Count one failed attempt for the task of ``key`` (unless it finished or moved on since);
    when that was its last attempt it goes to the failed-task table and an alarm is raised."""
    order_id, operation = key["order_id"], key["operation_type"]
    shard = storage.shard_of(order_id)
    with storage.order_transaction(order_id) as connection:
        task = load_task(connection, shard, order_id, operation)
        if task is None or task.status in (TaskStatus.DONE, TaskStatus.FAILED):
            return
        _, sources = load_facts(connection, shard, order_id)
        failed = park(connection, shard, task, reason, settings, utcnow(), sources)
    if failed:
        raise_alarm(locks.client, "task_failed", reason, order_id=order_id, operation=operation)


def _isolated(storage: Storage, locks: TaskLocks, settings: Settings, key: Key, step: Callable[[], object]) -> bool:
    """Run one key's part of a step; a non-transient error parks that task only."""
    try:
        step()
        return True
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:  # noqa: BLE001 - one bad order must not block the batch
        log.exception("task %s/%s failed", key["order_id"], key["operation_type"])
        park_key(storage, locks, settings, key, f"{type(error).__name__}: {error}")
        return False


def valid_keys(keys: Any, client: redis.Redis | None = None) -> list[Key]:
    """The well-formed task keys of a message; anything else is logged and alarmed, not run
    (a poison message must not keep failing, nor stop the keys next to it)."""
    good: list[Key] = []
    for key in keys if isinstance(keys, list) else [keys]:
        if (isinstance(key, dict) and isinstance(key.get("order_id"), str)
                and isinstance(key.get("operation_type"), str) and key["operation_type"] in SUCCESSORS):
            good.append(key)
        else:
            raise_alarm(client, "poison_message", f"malformed task key dropped from a chain message: {key!r:.200}")
    return good


def give_up(storage: Storage, locks: TaskLocks, settings: Settings, keys: list[Key], reason: str) -> None:
    """A chain step ran out of Celery retries: count one attempt for each of its tasks (the
    failed-task table when it was their last) and release their locks so new data or the
    rescan can run them again."""
    keys = valid_keys(keys, locks.client)
    for key in keys:
        park_key(storage, locks, settings, key, reason)
    locks.release(_owned(key) for key in keys)


def _operation_input(sources: list[Any], operation: str) -> str:
    """The metadata that raised ``operation``, as JSON lines, to keep with a data error."""
    return "\n".join(
        json.dumps({"source": m.source, "unique_key": m.unique_key, "position": m.position,
                    "content": json.loads(m.content)}, sort_keys=True)
        for m in sources if m.operation_type == operation
    )


def _pending_after_release(storage: Storage, keys: list[Key]) -> list[TaskKey]:
    """Tasks among ``keys`` that became PENDING while we held their locks: data or a wake-up
    that arrived then could not submit (the lock was ours), so we must."""
    again: list[TaskKey] = []
    for key in keys:
        order_id, operation = key["order_id"], key["operation_type"]
        with storage.read_engine_for_order(order_id).connect() as connection:
            task = load_task(connection, storage.shard_of(order_id), order_id, operation)
        if task is not None and task.status == TaskStatus.PENDING:
            again.append((order_id, operation))
    return again


def check_tasks(storage: Storage, locks: TaskLocks, settings: Settings,
                keys: list[Key]) -> tuple[list[Key], list[TaskKey]]:
    """Check predecessor and completeness; ready tasks become RUNNING and go on, the others
    wait with back-off (or fail when illegal or out of attempts) and release their lock.

    Returns the ready keys and the tasks that need a new chain now."""
    ready: list[Key] = []
    stopped: list[Key] = []
    data_errors: list[tuple[str, str, str]] = []
    failures: list[tuple[str, str, str]] = []

    for key in keys:
        order_id, operation = key["order_id"], key["operation_type"]
        shard = storage.shard_of(order_id)

        def check(key: Key = key, order_id: str = order_id, operation: str = operation,
                  shard: int = shard) -> None:
            now = utcnow()
            with storage.order_transaction(order_id) as connection:
                tasks = {t.operation_type: t for t in order_tasks(connection, shard, order_id)}
                task = tasks.get(operation)
                if task is None or task.status in (TaskStatus.DONE, TaskStatus.FAILED):
                    stopped.append(key)  # already processed, or failed until revived
                    return
                facts, sources = load_facts(connection, shard, order_id)
                done = {op for op, t in tasks.items() if t.status == TaskStatus.DONE}
                ever_done = {op for op, t in tasks.items() if t.done_version > 0}
                try:
                    reason = blocking_reason(operation, done, ever_done) or CHECKERS[operation].check(facts)
                except Illegal as illegal:
                    reason = f"data error: {illegal}"
                    # The order stays as it is: the task fails, its input is kept in quarantine.
                    fail(connection, shard, task, reason, now, sources)
                    quarantine(connection, "task", _operation_input(sources, operation),
                               BadInput(reason, order_id), now)
                    data_errors.append((reason, order_id, operation))
                    stopped.append(key)
                    return
                if reason is not None:
                    if park(connection, shard, task, reason, settings, now, sources):
                        failures.append((reason, order_id, operation))
                    stopped.append(key)
                    return
                if mark_running(connection, shard, task, settings, now):
                    ready.append({**key, "version": task.version})
                else:
                    stopped.append(key)

        if not _isolated(storage, locks, settings, key, check):
            stopped.append(key)
    # Alarms only for what was committed.
    for reason, order_id, operation in data_errors:
        raise_alarm(locks.client, "data_error", reason, order_id=order_id, operation=operation)
    for reason, order_id, operation in failures:
        raise_alarm(locks.client, "task_failed", f"out of attempts: {reason}", order_id=order_id, operation=operation)
    locks.release(_owned(key) for key in stopped)
    return ready, _pending_after_release(storage, stopped)


def merge_orders(storage: Storage, locks: TaskLocks, settings: Settings, dims: Dimensions,
                 keys: list[Key]) -> list[Key]:
    """Merge each ready task into the wide rows and its snapshot under the optimistic lock."""
    merged: list[Key] = []
    failed: list[Key] = []
    for key in keys:

        def merge(key: Key = key) -> None:
            for attempt in range(MERGE_ATTEMPTS):
                try:
                    with storage.order_transaction(key["order_id"]) as connection:
                        _merge_one(storage, connection, dims, key)
                    return
                except OptimisticLockConflict:
                    log.info("wide row of %s changed under us; merging again", key["order_id"])
                    time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
            raise OptimisticLockConflict(f"{key['order_id']}: {MERGE_ATTEMPTS} conflicting merges in a row")

        (merged if _isolated(storage, locks, settings, key, merge) else failed).append(key)
    locks.release(_owned(key) for key in failed)
    return merged


def _merge_one(storage: Storage, connection: Connection, dims: Dimensions, key: Key) -> None:
    shard = storage.shard_of(key["order_id"])
    facts, _ = load_facts(connection, shard, key["order_id"])
    merge_order_rows(connection, facts, key["operation_type"], key["version"], dims, utcnow())


def aggregate_orders(storage: Storage, locks: TaskLocks, settings: Settings, keys: list[Key]) -> list[Key]:
    """Bring the ADS aggregates up to date with the merged orders of ``keys``: one warehouse
    transaction for the batch, or one per order when the batch hits a fault that is not
    transient (so only the order that caused it is parked)."""
    if not keys:
        return keys
    try:
        apply_orders(storage, [key["order_id"] for key in keys])
        return keys
    except TRANSIENT_ERRORS:
        raise
    except Exception:  # noqa: BLE001 - find the order that causes it, spare the others
        log.exception("aggregating %d orders failed; retrying them one by one", len(keys))
    done: list[Key] = []
    failed: list[Key] = []
    for key in keys:

        def alone(key: Key = key) -> None:
            apply_orders(storage, [key["order_id"]])

        (done if _isolated(storage, locks, settings, key, alone) else failed).append(key)
    locks.release(_owned(key) for key in failed)
    return done


def finish_tasks(storage: Storage, locks: TaskLocks, keys: list[Key]) -> list[TaskKey]:
    """Mark each task DONE (unless newer data arrived meanwhile), release its lock and wake
    its successors; returns the tasks that need a chain now."""
    again: list[TaskKey] = []
    now = utcnow()
    for key in keys:
        order_id, operation = key["order_id"], key["operation_type"]
        shard = storage.shard_of(order_id)
        with storage.order_transaction(order_id) as connection:
            if mark_done(connection, shard, order_id, operation, key["version"], now):
                again += [(order_id, woken) for woken in wake(connection, shard, order_id,
                                                               SUCCESSORS[operation], now)]
    locks.release(_owned(key) for key in keys)
    return again + _pending_after_release(storage, keys)
