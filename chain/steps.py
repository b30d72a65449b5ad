"""The steps of a task's chain: check, merge, aggregate, finish.

Each step takes a batch of task keys ``{"order_id", "operation_type", "token"}`` (a batch
of one is the ordinary case), re-reads what it needs, and returns the keys that go on.
``token`` is the fencing token of the order's lease (``reliability.leases``): every step renews
the lease while it runs and drops the keys of orders another holder has taken over; every write
checks the token in its own transaction (``reliability.fencing``), so a late message from a dead
or slow holder writes nothing and is counted (``fenced_keys``).

Running any step twice changes nothing the second time.  Each order's work is its own
transaction, run again whole under lock contention; a fault that is not transient parks only
the order that hit it, and transient faults propagate so Celery retries the step (a retry counts
no task's attempt twice, and every alarm is raised after its own commit).
"""

from __future__ import annotations

import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import redis
from sqlalchemy import Connection

from chain.keys import Key, has_token, owned, well_formed
from chain.task_state import (
    fail,
    load_facts,
    load_task,
    mark_done,
    mark_running,
    order_tasks,
    park,
    pending_operations,
    wake,
)
from chain.wide_rows import OptimisticLockConflict, merge_order_rows
from flows.state_machine import SUCCESSORS, Illegal, blocking_reason
from inputs.events import BadInput
from intake.receiver import TaskKey, quarantine, utcnow
from models.sharded import TaskStatus
from models.storage import Storage
from reliability.alarms import raise_alarm
from reliability.counters import FENCED, count
from reliability.fencing import claim_order, holds_order
from reliability.leases import OrderLeases
from reliability.transient import TRANSIENT_ERRORS, retry_on_contention
from settings import Settings
from strategies import CHECKERS
from strategies.generators import Dimensions
from warehouse.aggregates import apply_orders

log = logging.getLogger(__name__)

#: An alarm to raise once the transaction that caused it has committed: kind, message, order, operation.
Alarm = tuple[str, str, str, str]

#: Read-modify-write rounds of one merge before the conflict is left to Celery's retry.
MERGE_ATTEMPTS = 8
#: Operations in state-machine order: an order's keys are checked in this order.
OPERATION_ORDER = {operation: index for index, operation in enumerate(SUCCESSORS)}


def _by_order(keys: Iterable[Key]) -> dict[tuple[str, int], list[Key]]:
    groups: dict[tuple[str, int], list[Key]] = defaultdict(list)
    for key in keys:
        groups[(key["order_id"], key["token"])].append(key)
    return groups


def _fenced(client: redis.Redis | None, keys: list[Key], why: str) -> None:
    if keys:
        log.info("%d keys fenced off (%s): %s", len(keys), why,
                 [f"{k['order_id']}/{k['operation_type']}" for k in keys[:5]])
        count(client, FENCED, len(keys))


def _fence_off(leases: OrderLeases, keys: list[Key], why: str) -> None:
    """Drop ``keys``, whose orders storage has seen a newer token for, and give back the leases
    their late message may have taken back: the newer holder, or new data, may need them."""
    _fenced(leases.client, keys, why)
    leases.release(owned(keys))


def _live(leases: OrderLeases, keys: list[Key], lost: set[str]) -> list[Key]:
    """``keys`` without those whose order another holder has taken over."""
    _fenced(leases.client, [key for key in keys if key["order_id"] in lost], "lease taken over")
    return [key for key in keys if key["order_id"] not in lost]


def _raise_alarms(client: redis.Redis | None, alarms: list[Alarm]) -> None:
    for kind, message, order_id, operation in alarms:
        raise_alarm(client, kind, message, order_id=order_id, operation=operation)


def park_key(storage: Storage, leases: OrderLeases, settings: Settings, key: Key, reason: str) -> None:
    """Count one failed attempt for the task of ``key`` (unless it finished or moved on since, or
    its order was taken over, or this chain counted it already); when that was its last attempt
    it goes to the failed-task table and an alarm is raised."""
    order_id, operation = key["order_id"], key["operation_type"]
    shard = storage.shard_of(order_id)

    def work() -> bool:
        with storage.order_transaction(order_id) as connection:
            if not claim_order(connection, order_id, key["token"], utcnow()):
                return False
            task = load_task(connection, shard, order_id, operation)
            if task is None or task.status in (TaskStatus.DONE, TaskStatus.FAILED):
                return False
            _, sources = load_facts(connection, shard, order_id)
            return park(connection, shard, task, reason, settings, utcnow(), sources, key["token"])
    if retry_on_contention(work):
        raise_alarm(leases.client, "task_failed", reason, order_id=order_id, operation=operation)


def _isolated(storage: Storage, leases: OrderLeases, settings: Settings, keys: list[Key],
              step: Callable[[], object]) -> bool:
    """Run one order's part of a step; a non-transient error parks that order's tasks only."""
    try:
        step()
        return True
    except TRANSIENT_ERRORS:
        raise
    except Exception as error:  # noqa: BLE001 - one bad order must not block the batch
        log.exception("tasks of %s failed", keys[0]["order_id"])
        for key in keys:
            park_key(storage, leases, settings, key, f"{type(error).__name__}: {error}")
        return False


def valid_keys(keys: Any, client: redis.Redis | None = None) -> list[Key]:
    """The well-formed task keys of a message; anything else is logged and alarmed, not run
    (a poison message must not keep failing, nor stop the keys next to it).  A key without a
    fencing token (sent by an older tdc, or replayed by hand) is fenced off and counted."""
    good: list[Key] = []
    untokened: list[Key] = []
    for key in keys if isinstance(keys, list) else [keys]:
        if well_formed(key):
            (good if has_token(key) else untokened).append(key)
        else:
            raise_alarm(client, "poison_message", f"malformed task key dropped from a chain message: {key!r:.200}")
    _fenced(client, untokened, "no fencing token")
    return good


def give_up(storage: Storage, leases: OrderLeases, settings: Settings, keys: list[Key], reason: str) -> None:
    """A chain step ran out of Celery retries: count one attempt for each of its tasks (the
    failed-task table when it was their last) and release their orders' leases so new data or
    the rescan can run them again."""
    keys = valid_keys(keys, leases.client)
    for key in keys:
        park_key(storage, leases, settings, key, reason)
    leases.release(owned(keys))


def _operation_input(sources: list[Any], operation: str) -> str:
    """The metadata that raised ``operation``, as JSON lines, to keep with a data error."""
    return "\n".join(
        json.dumps({"source": m.source, "unique_key": m.unique_key, "position": m.position,
                    "content": json.loads(m.content)}, sort_keys=True)
        for m in sources if m.operation_type == operation
    )


def _pending_after_release(storage: Storage, orders: Iterable[str]) -> list[TaskKey]:
    """Tasks of ``orders`` that became PENDING while we held their leases: data or a wake-up
    that arrived then could not submit (the lease was ours), so we must."""
    again: list[TaskKey] = []
    for order_id in orders:
        with storage.read_engine_for_order(order_id).connect() as connection:
            again += [(order_id, op) for op in pending_operations(connection, storage.shard_of(order_id), order_id)]
    return again


@dataclass
class _Checked:
    ready: list[Key] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    fenced: bool = False


def _check_order(storage: Storage, settings: Settings, order_id: str, token: int, keys: list[Key]) -> _Checked:
    """One transaction: claim the order for ``token``, lock its task rows, and check each key's
    predecessor and completeness against one consistent read of the order."""
    result = _Checked()
    shard = storage.shard_of(order_id)
    now = utcnow()
    with storage.order_transaction(order_id) as connection:
        if not claim_order(connection, order_id, token, now):
            result.fenced = True
            return result
        tasks = {t.operation_type: t for t in order_tasks(connection, shard, order_id, lock=True)}
        facts, sources = load_facts(connection, shard, order_id)
        done = {op for op, t in tasks.items() if t.status == TaskStatus.DONE}
        ever_done = {op for op, t in tasks.items() if t.done_version > 0}
        for key in sorted(keys, key=lambda k: OPERATION_ORDER[k["operation_type"]]):
            operation = key["operation_type"]
            task = tasks.get(operation)
            if task is None or task.status in (TaskStatus.DONE, TaskStatus.FAILED):
                continue  # already processed, or failed until revived
            try:
                reason = blocking_reason(operation, done, ever_done) or CHECKERS[operation].check(facts)
            except Illegal as illegal:
                reason = f"data error: {illegal}"
                # The order stays as it is: the task fails, its input is kept in quarantine.
                if fail(connection, shard, task, reason, now, sources):
                    quarantine(connection, "task", _operation_input(sources, operation),
                               BadInput(reason, order_id), now)
                    result.alarms.append(("data_error", reason, order_id, operation))
                continue
            if reason is not None:
                if park(connection, shard, task, reason, settings, now, sources, token):
                    result.alarms.append(("task_failed", f"out of attempts: {reason}", order_id, operation))
                continue
            if mark_running(connection, shard, task, settings, now):
                result.ready.append({**key, "version": task.version})
    return result


def check_tasks(storage: Storage, leases: OrderLeases, settings: Settings,
                keys: list[Key]) -> tuple[list[Key], list[TaskKey]]:
    """Check predecessor and completeness; ready tasks become RUNNING and go on, the others
    wait with back-off (or fail when illegal or out of attempts).  Orders with nothing ready
    are released.  Returns the ready keys and the tasks that need a new chain now."""
    ready: list[Key] = []
    stopped: dict[str, int] = {}
    with leases.kept(owned(keys)) as lost:
        for (order_id, token), group in _by_order(_live(leases, keys, lost)).items():
            checked = _Checked()

            def check(order_id: str = order_id, token: int = token, group: list[Key] = group) -> None:
                nonlocal checked
                checked = retry_on_contention(lambda: _check_order(storage, settings, order_id, token, group))

            if not _isolated(storage, leases, settings, group, check):
                stopped[order_id] = token
                continue
            _raise_alarms(leases.client, checked.alarms)
            if checked.fenced:
                _fence_off(leases, group, "order claimed by a newer holder")
            elif checked.ready:
                ready += checked.ready
            else:
                stopped[order_id] = token
    leases.release(stopped)
    return ready, _pending_after_release(storage, stopped)


def _merge_one(storage: Storage, connection: Connection, dims: Dimensions, key: Key) -> bool:
    order_id = key["order_id"]
    if not holds_order(connection, order_id, key["token"]):
        return False
    facts, _ = load_facts(connection, storage.shard_of(order_id), order_id)
    merge_order_rows(connection, facts, key["operation_type"], key["version"], dims, utcnow(),
                     storage.settings.business_zone)
    return True


def _continue(leases: OrderLeases, going_on: list[Key], stopped: list[Key]) -> None:
    """Release the orders left with nothing going on.  (The orders of ``going_on`` keep their
    running lease until their next message is published: ``tasks.lease_keeper``.)"""
    still = {key["order_id"] for key in going_on}
    leases.release({k: v for k, v in owned(stopped).items() if k not in still})


def merge_orders(storage: Storage, leases: OrderLeases, settings: Settings, dims: Dimensions,
                 keys: list[Key]) -> list[Key]:
    """Merge each ready task into the wide rows and its snapshot, under its order's fence and
    the wide row's optimistic lock."""
    merged: list[Key] = []
    failed: list[Key] = []
    with leases.kept(owned(keys)) as lost:
        for key in _live(leases, keys, lost):
            wrote = False

            def merge(key: Key = key) -> None:
                nonlocal wrote

                def transaction() -> bool:
                    with storage.order_transaction(key["order_id"]) as connection:
                        return _merge_one(storage, connection, dims, key)
                for attempt in range(MERGE_ATTEMPTS):
                    try:
                        wrote = retry_on_contention(transaction)
                        return
                    except OptimisticLockConflict:
                        log.info("wide row of %s changed under us; merging again", key["order_id"])
                        time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
                raise OptimisticLockConflict(f"{key['order_id']}: {MERGE_ATTEMPTS} conflicting merges in a row")

            if not _isolated(storage, leases, settings, [key], merge):
                failed.append(key)
            elif wrote:
                merged.append(key)
            else:
                _fence_off(leases, [key], "order claimed by a newer holder")
    _continue(leases, merged, failed)
    return merged


def aggregate_orders(storage: Storage, leases: OrderLeases, settings: Settings, keys: list[Key]) -> list[Key]:
    """Bring the ADS aggregates up to date with the merged orders of ``keys``: one warehouse
    transaction for the batch, or one per order when the batch hits a fault that is not
    transient (so only the order that caused it is parked).  Orders the warehouse has seen a
    newer token for are fenced off."""
    if not keys:
        return keys
    with leases.kept(owned(keys)) as lost:
        live = _live(leases, keys, lost)
        try:
            fenced = apply_orders(storage, owned(live)).fenced
            done = [key for key in live if key["order_id"] not in fenced]
            _fence_off(leases, [key for key in live if key["order_id"] in fenced], "warehouse saw a newer holder")
            failed: list[Key] = []
        except TRANSIENT_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - find the order that causes it, spare the others
            log.exception("aggregating %d orders failed; retrying them one by one", len(live))
            done, failed = [], []
            for key in live:
                fenced = set()

                def alone(key: Key = key) -> None:
                    nonlocal fenced
                    fenced = apply_orders(storage, {key["order_id"]: key["token"]}).fenced

                if not _isolated(storage, leases, settings, [key], alone):
                    failed.append(key)
                elif fenced:
                    _fence_off(leases, [key], "warehouse saw a newer holder")
                else:
                    done.append(key)
    _continue(leases, done, failed)
    return done


def _finish_order(storage: Storage, order_id: str, token: int, keys: list[Key]) -> list[TaskKey] | None:
    """One transaction: mark the order's tasks DONE (unless newer data arrived meanwhile) and
    wake their successors; None when the order was claimed by a newer holder."""
    shard = storage.shard_of(order_id)
    now = utcnow()
    woken: list[TaskKey] = []
    with storage.order_transaction(order_id) as connection:
        if not holds_order(connection, order_id, token):
            return None
        order_tasks(connection, shard, order_id, lock=True)  # row locks in index order, as intake takes them
        for key in sorted(keys, key=lambda k: OPERATION_ORDER[k["operation_type"]]):
            operation = key["operation_type"]
            if mark_done(connection, shard, order_id, operation, key["version"], now):
                woken += [(order_id, op) for op in wake(connection, shard, order_id, SUCCESSORS[operation], now)]
    return woken


def finish_tasks(storage: Storage, leases: OrderLeases, keys: list[Key]) -> list[TaskKey]:
    """Mark each task DONE, release its order's lease and wake its successors; returns the
    tasks that need a chain now."""
    again: list[TaskKey] = []
    finished: dict[str, int] = {}
    with leases.kept(owned(keys)) as lost:
        for (order_id, token), group in _by_order(_live(leases, keys, lost)).items():
            woken = retry_on_contention(lambda: _finish_order(storage, order_id, token, group))  # noqa: B023
            if woken is None:
                _fence_off(leases, group, "order claimed by a newer holder")
                continue
            again += woken
            finished[order_id] = token
    leases.release(finished)
    return again + _pending_after_release(storage, finished)
