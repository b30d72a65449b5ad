"""The steps of a task's chain: check, merge, aggregate, finish.

Each step takes a batch of task keys ``{"order_id", "operation_type", "token"}`` (a batch
of one is the ordinary case), re-reads what it needs, and returns the keys that go on.
``token`` is the fencing token of the order's lease (``reliability.leases``): every step renews
the lease while it runs and drops the keys of orders another holder has taken over; every write
checks the token in its own transaction (``reliability.fencing``), so a late message from a dead
or slow holder writes nothing and is counted (``fenced_keys``).

Running any step twice changes nothing the second time.  A step is set-based: the orders of
each shard database are one transaction (a few statements for the whole batch), run again whole
under lock contention; a fault that is not transient runs that database's orders one by one, so
it parks only the order that hit it, and transient faults propagate so Celery retries the step
(a retry counts no task's attempt twice, and every alarm is raised after its own commit).  An
order's due operations go through one chain in state-machine order.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import random
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis

from chain.keys import Key, has_token, owned, well_formed
from chain.task_state import (
    CompareAndSets,
    facts_of,
    fail,
    load_facts,
    load_task,
    mark_done,
    mark_running,
    park,
    parked_by,
    pending_of,
    rerun_on_change,
    resolve_failures,
    tasks_of,
    wake,
    wakeable,
)
from chain.timings import newest_event_times, timed, timed_step
from chain.wide_rows import OptimisticLockConflict, merge_operations, read_wide, write_merges
from flows.machine import WAITING_FOR, Illegal
from flows.registry import flow_of, machine_of
from inputs.events import BadInput
from intake.receiver import TaskKey, quarantine, utcnow
from models.sharded import TaskStatus
from models.storage import Storage
from reliability.alarms import raise_alarm
from reliability.counters import FENCED, count
from reliability.fencing import claim_order, claim_orders, held_orders
from reliability.leases import OrderLeases
from reliability.transient import TRANSIENT_ERRORS, retry_on_contention
from settings import Settings
from strategies.checkers import check
from strategies.generators import Dimensions, dimension_keys
from warehouse.aggregates import apply_orders

log = logging.getLogger(__name__)

#: An alarm to raise once the transaction that caused it has committed: kind, message, order, operation.
Alarm = tuple[str, str, str, str]

#: Read-modify-write rounds of one merge before the conflict is left to Celery's retry.
MERGE_ATTEMPTS = 8


def _by_order(keys: Iterable[Key]) -> dict[tuple[str, int], list[Key]]:
    groups: dict[tuple[str, int], list[Key]] = defaultdict(list)
    for key in keys:
        groups[(key["order_id"], key["token"])].append(key)
    return groups


def _in_lock_order(storage: Storage, keys: Iterable[Key]) -> list[tuple[tuple[str, int], list[Key]]]:
    """An order's keys, orders in the order every writer takes task rows: (shard, order)."""
    return sorted(_by_order(keys).items(), key=lambda item: (storage.shard_of(item[0][0]), item[0][0]))


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


def _by_database(storage: Storage, keys: Iterable[Key]) -> list[list[Key]]:
    groups: dict[int, list[Key]] = defaultdict(list)
    for key in keys:
        groups[storage.database_of(key["order_id"])].append(key)
    return list(groups.values())


def _in_order(keys: Iterable[Key]) -> list[Key]:
    """Keys in their flow's state-machine order (an order's keys are checked in this order)."""
    return sorted(keys, key=lambda k: machine_of(k["order_id"]).rank(k["operation_type"]))


T = TypeVar("T")


def _per_database(storage: Storage, leases: OrderLeases, settings: Settings, keys: list[Key],
                  work: Callable[[list[Key]], T]) -> Iterator[tuple[list[Key], T | None]]:
    """Run ``work`` (one whole transaction) on the keys of each database at once; when that fails
    for a reason that is not transient, on each order's keys alone, so that only the order that
    causes it is parked (its result is None).  Transient faults go to Celery's retry.  Each
    result is yielded as soon as its transaction committed, so the caller raises its alarms
    before a later database's fault can stop the step."""
    for group in _by_database(storage, keys):
        try:
            yield group, work(group)
            continue
        except TRANSIENT_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - find the order that causes it, spare the others
            log.exception("a batch of %d keys failed; running its orders one by one", len(group))
        for alone in _by_order(group).values():
            outcome: list[T] = []

            def run(alone: list[Key] = alone, outcome: list[T] = outcome) -> None:
                outcome.append(work(alone))

            yield alone, outcome[0] if _isolated(storage, leases, settings, alone, run) else None


def _pending_after_release(storage: Storage, orders: Iterable[str]) -> list[TaskKey]:
    """Tasks of ``orders`` that became PENDING while we held their leases: data or a wake-up
    that arrived then could not submit (the lease was ours), so we must."""
    again: list[TaskKey] = []
    for database, shards in storage.orders_by_database(orders).items():
        with storage.read_engine(database).connect() as connection:
            again += pending_of(connection, shards)
    return again


@dataclass
class _Checked:
    ready: list[Key] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    fenced: list[Key] = field(default_factory=list)
    #: Orders with nothing ready: their leases go back.
    stopped: dict[str, int] = field(default_factory=dict)


def _check_database(storage: Storage, settings: Settings, keys: list[Key]) -> _Checked:
    """One transaction for the orders of one database: claim each for its token, read their task
    rows and then their facts, and check each key's predecessor and completeness."""
    result = _Checked()
    tokens = owned(keys)
    now = utcnow()
    with storage.order_transaction(keys[0]["order_id"]) as connection:
        ours = claim_orders(connection, tokens, now)
        shards = {order_id: storage.shard_of(order_id) for order_id in tokens if order_id in ours}
        tasks = tasks_of(connection, shards)
        facts = facts_of(connection, shards)
        sets = CompareAndSets(connection)
        for (order_id, token), group in _in_lock_order(storage, keys):
            if order_id not in ours:
                result.fenced += group
                continue
            ready = _check_order(sets, settings, shards[order_id], token, group, tasks[order_id],
                                 facts[order_id], now, result.alarms)
            if ready:
                result.ready += ready
            else:
                result.stopped[order_id] = token
        sets.flush()
    return result


def _check_order(sets: CompareAndSets, settings: Settings, shard: int, token: int, keys: list[Key],
                 tasks: dict[str, Any], facts: tuple[Any, list[Any]], now: dt.datetime,
                 alarms: list[Alarm]) -> list[Key]:
    """Check one order's keys in state-machine order against one read of its tasks and facts.
    A key that passes counts as done for the keys after it: the chain merges and finishes them
    in this order, so an order's due operations take one chain, not one chain each.  Its
    RUNNING mark joins ``sets``; a task parked or failed here is written at once (after what
    ``sets`` holds, so task rows are still taken in lock order)."""
    connection = sets.connection
    order_facts, sources = facts
    flow, machine = flow_of(order_facts.order_id), machine_of(order_facts.order_id)
    done = {op for op, t in tasks.items() if t.status == TaskStatus.DONE}
    ever_done = {op for op, t in tasks.items() if t.done_version > 0}
    ready: list[Key] = []
    running: list[Any] = []
    event_times: dict[str, int] | None = None
    for key in _in_order(keys):
        operation = key["operation_type"]
        task = tasks.get(operation)
        if task is None or task.status in (TaskStatus.DONE, TaskStatus.FAILED):
            continue  # already processed, or failed until revived
        try:
            reason = machine.blocking_reason(operation, done, ever_done) or check(flow, operation, order_facts)
        except Illegal as illegal:
            reason = f"data error: {illegal}"
            # The order stays as it is: the task fails, its input is kept in quarantine.
            sets.flush()
            if fail(connection, shard, task, reason, now, sources):
                quarantine(connection, "task", _operation_input(sources, operation),
                           BadInput(reason, key["order_id"]), now)
                alarms.append(("data_error", reason, key["order_id"], operation))
            continue
        if reason is not None:
            sets.flush()
            if park(connection, shard, task, reason, settings, now, sources, token):
                alarms.append(("task_failed", f"out of attempts: {reason}", key["order_id"], operation))
            continue
        # Counted as done for the keys after it; all of them become RUNNING at once below, and
        # if one changed since the read, the whole transaction runs again (TasksChanged).
        running.append(task)
        # The newest event behind it goes along, for the end-to-end lag finish records.
        if event_times is None:
            event_times = newest_event_times(sources)
        ready.append({**key, "version": task.version, "event_ms": event_times.get(operation)})
        done.add(operation)
        ever_done.add(operation)
    mark_running(sets, shard, running, settings, now)
    return ready


@timed("check")
def check_tasks(storage: Storage, leases: OrderLeases, settings: Settings,
                keys: list[Key]) -> tuple[list[Key], list[TaskKey]]:
    """Check predecessor and completeness; ready tasks become RUNNING and go on, the others
    wait with back-off (or fail when illegal or out of attempts).  Orders with nothing ready
    are released.  Returns the ready keys and the tasks that need a new chain now."""
    ready: list[Key] = []
    stopped: dict[str, int] = {}
    with leases.kept(owned(keys)) as lost:
        checks = _per_database(storage, leases, settings, _live(leases, keys, lost),
                               lambda group: retry_on_contention(
                                   lambda: rerun_on_change(lambda: _check_database(storage, settings, group))))
        for group, checked in checks:
            if checked is None:
                stopped.update(owned(group))
                continue
            _raise_alarms(leases.client, checked.alarms)
            if checked.fenced:
                _fence_off(leases, checked.fenced, "order claimed by a newer holder")
            ready += checked.ready
            stopped.update(checked.stopped)
    leases.release(stopped)
    return ready, _pending_after_release(storage, stopped)


def _merge_database(storage: Storage, dims: Dimensions, keys: list[Key]) -> tuple[list[Key], list[Key]]:
    """One transaction for the orders of one database: under each order's fence, apply its
    ready operations to its wide rows in state-machine order and write them all; the keys
    merged and the keys fenced off."""
    tokens = owned(keys)
    now = utcnow()
    with storage.order_transaction(keys[0]["order_id"]) as connection:
        held = held_orders(connection, tokens)
        shards = {order_id: storage.shard_of(order_id) for order_id in tokens if order_id in held}
        facts = facts_of(connection, shards)
        orders, items = read_wide(connection, list(shards))
        prefetch = getattr(dims, "prefetch", None)
        if prefetch is not None:
            prefetch(entry for order_id, (order_facts, _) in facts.items()
                     for entry in dimension_keys(flow_of(order_id), order_facts))
        merges = [
            merge_operations(orders.get(order_id), items.get(order_id, {}), facts[order_id][0],
                             [(k["operation_type"], k["version"]) for k in _in_order(group)], dims, now,
                             storage.settings.business_zone)
            for (order_id, _), group in _by_order(keys).items() if order_id in held]
        write_merges(connection, merges, outbox=storage.settings.es_url is not None,
                     changelog=storage.settings.changelog_outbox)
    return [k for k in keys if k["order_id"] in held], [k for k in keys if k["order_id"] not in held]


def _merge_with_retries(storage: Storage, dims: Dimensions, keys: list[Key]) -> tuple[list[Key], list[Key]]:
    for attempt in range(MERGE_ATTEMPTS):
        try:
            return retry_on_contention(lambda: _merge_database(storage, dims, keys))
        except OptimisticLockConflict as conflict:
            log.info("wide row of %s changed under us; merging again", conflict)
            time.sleep(random.uniform(0, 0.02 * (attempt + 1)))
    raise OptimisticLockConflict(f"{keys[0]['order_id']}: {MERGE_ATTEMPTS} conflicting merges in a row")


def _continue(leases: OrderLeases, going_on: list[Key], stopped: list[Key]) -> None:
    """Release the orders left with nothing going on.  (The orders of ``going_on`` keep their
    running lease until their next message is published: ``tasks.lease_keeper``.)"""
    still = {key["order_id"] for key in going_on}
    leases.release({k: v for k, v in owned(stopped).items() if k not in still})


@timed("merge")
def merge_orders(storage: Storage, leases: OrderLeases, settings: Settings, dims: Dimensions,
                 keys: list[Key]) -> list[Key]:
    """Merge the ready tasks into the wide rows and their snapshots, under each order's fence
    and the wide row's optimistic lock: one transaction per database for the batch."""
    merged: list[Key] = []
    failed: list[Key] = []
    with leases.kept(owned(keys)) as lost:
        for group, outcome in _per_database(storage, leases, settings, _live(leases, keys, lost),
                                            lambda group: _merge_with_retries(storage, dims, group)):
            if outcome is None:
                failed += group
                continue
            wrote, fenced = outcome
            merged += wrote
            if fenced:
                _fence_off(leases, fenced, "order claimed by a newer holder")
    _continue(leases, merged, failed)
    return merged


@timed("aggregate")
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


def _finish_database(storage: Storage, keys: list[Key]) -> tuple[list[TaskKey], dict[str, int], list[Key], list[Key]]:
    """One transaction for the orders of one database: mark each order's tasks DONE in
    state-machine order (unless newer data arrived meanwhile) and wake the successors that wait
    for them; the tasks woken, the orders finished, the keys fenced off and the keys marked DONE."""
    tokens = owned(keys)
    now = utcnow()
    woken: list[TaskKey] = []
    finished: dict[str, int] = {}
    fenced: list[Key] = []
    done: list[tuple[str, str]] = []
    done_keys: list[Key] = []
    with storage.order_transaction(keys[0]["order_id"]) as connection:
        held = held_orders(connection, tokens)
        shards = {order_id: storage.shard_of(order_id) for order_id in tokens if order_id in held}
        tasks = tasks_of(connection, shards)
        sets = CompareAndSets(connection)
        for (order_id, token), group in _in_lock_order(storage, keys):
            if order_id not in held:
                fenced += group
                continue
            finished[order_id] = token
            shard, read = shards[order_id], tasks[order_id]
            complete = {op for op, task in read.items() if task.status == TaskStatus.DONE}
            marked: list[str] = []
            in_chain = {key["operation_type"] for key in group}
            machine = machine_of(order_id)
            for key in _in_order(group):
                operation = key["operation_type"]
                predecessor = next((p for p in machine.after[operation] if p in in_chain and p not in complete), None)
                if predecessor is not None:
                    # Its predecessor ran in this chain but newer data stopped it from finishing:
                    # this one waits for it, as it would have in a chain of its own.
                    if operation in read and read[operation].version == key["version"]:
                        sets.flush()
                        park(connection, shard, read[operation], f"{WAITING_FOR}{predecessor}", storage.settings,
                             now, [], token)
                    continue
                task = read.get(operation)
                if task is not None and task.status == TaskStatus.RUNNING and task.version == key["version"]:
                    # No newer data since the chain took it: DONE (all of the order's at once
                    # below; if one changed since the read, the transaction runs again).
                    marked.append(operation)
                    complete.add(operation)
                    done_keys.append(key)
            mark_done(sets, shard, order_id, [(op, read[op].version) for op in marked], now)
            done += [(order_id, operation) for operation in marked]
            # A successor this chain parked was checked with its predecessor done: waking it
            # would only check it again.
            waiting = [op for op in wakeable(read, tuple(
                dict.fromkeys(s for operation in marked for s in machine.successors[operation])))
                if op not in marked and parked_by(read[op]) != token]
            if waiting:
                sets.flush()
                woken += [(order_id, op) for op in wake(connection, shard, order_id, tuple(waiting), now)]
        sets.flush()
        resolve_failures(connection, done, now)
    return woken, finished, fenced, done_keys


def finish_tasks(storage: Storage, leases: OrderLeases, keys: list[Key]) -> list[TaskKey]:
    """Mark each task DONE, release its order's lease and wake its successors; returns the
    tasks that need a chain now.  The batch's duration and each DONE task's end-to-end lag go to
    Redis in one round trip (``chain.timings``)."""
    again: list[TaskKey] = []
    finished: dict[str, int] = {}
    with timed_step(leases.client, "finish", keys) as timing:
        with leases.kept(owned(keys)) as lost:
            for group in _by_database(storage, _live(leases, keys, lost)):
                woken, done, fenced, marked = retry_on_contention(
                    lambda: rerun_on_change(lambda: _finish_database(storage, group)))  # noqa: B023
                if fenced:
                    _fence_off(leases, fenced, "order claimed by a newer holder")
                again += woken
                finished.update(done)
                timing.done += marked
        leases.release(finished)
        return again + _pending_after_release(storage, finished)
