"""Compensation: what ``tdc reconcile --fix`` does, always through the normal paths.

- An order whose wide rows differ from its records goes round the chain again, as a correction
  sends it: its operations get a new task version and are due now, so ordering, leases, fencing
  and the ADS retraction all apply.  Its rows are never patched in place.
- An entity whose root wide row is gone has its flow's ADS ledger's version of it set back to 0 first: the
  rebuilt row starts again at version 1, and the ledger must take back what the order counted
  before, not skip the new row as older.
- An ADS day that still differs once the wide rows are right is rebuilt from the wide rows
  (``warehouse.aggregates.rebuild_day``).
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from sqlalchemy import update

from chain.task_state import tasks_of
from flows.registry import flow_of
from intake.receiver import TaskKey, bump_tasks, utcnow
from models.sharded import TaskStatus
from models.storage import Storage
from models.warehouse import LEDGERS

#: Seconds between looks at the task rows of orders sent round again.
POLL_SECONDS = 1.0


def rerun_orders(storage: Storage, operations: Mapping[str, list[str]], rows_gone: Iterable[str],
                 now: dt.datetime | None = None) -> dict[str, dict[str, int]]:
    """Give each order's ``operations`` a new task version, due now (one transaction per shard
    database, task rows in lock order); the task version each operation must reach DONE at."""
    now = now or utcnow()
    gone: dict[str, list[str]] = defaultdict(list)
    for order_id in sorted(set(rows_gone) & set(operations)):
        gone[flow_of(order_id).name].append(order_id)
    ledgers = [(LEDGERS[name], ids) for name, ids in sorted(gone.items()) if name in LEDGERS]
    if ledgers:
        with storage.dws_engine.begin() as connection:
            for ledger, ids in ledgers:
                connection.execute(update(ledger).where(ledger.c.order_id.in_(ids)).values(wide_version=0))
    versions: dict[str, dict[str, int]] = {}
    for database, shards in sorted(storage.orders_by_database(operations).items()):
        keys = sorted((shards[o], o, op) for o in shards for op in operations[o])
        with storage.shard_engine(database).begin() as connection:
            bump_tasks(connection, keys, now)
            tasks = tasks_of(connection, shards)
        for order_id in shards:
            versions[order_id] = {op: tasks[order_id][op].version for op in operations[order_id]}
    return versions


def task_versions(storage: Storage, keys: Iterable[TaskKey]) -> dict[str, dict[str, int]]:
    """The current version of each task of ``keys``: what ``wait_for`` waits for."""
    wanted: dict[str, list[str]] = defaultdict(list)
    for order_id, operation in keys:
        wanted[order_id].append(operation)
    tasks = _tasks(storage, wanted)
    return {order_id: {op: tasks[order_id][op].version for op in ops if op in tasks[order_id]}
            for order_id, ops in wanted.items()}


def _tasks(storage: Storage, orders: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The task rows of ``orders``, by order and operation, a few reads per shard database."""
    found: dict[str, dict[str, Any]] = {}
    for database, shards in storage.orders_by_database(orders).items():
        with storage.read_engine(database).connect() as connection:
            found.update(tasks_of(connection, shards))
    return found


def chain_keys(versions: Mapping[str, Mapping[str, int]]) -> list[TaskKey]:
    return [(order_id, op) for order_id, ops in sorted(versions.items()) for op in ops]


def wait_for(storage: Storage, versions: Mapping[str, Mapping[str, int]], timeout: float,
             progress: Callable[[str], None] = lambda _: None) -> dict[str, str]:
    """Wait until every operation of every order is DONE at its new version (or FAILED), at most
    ``timeout`` seconds; each order's result: done, failed or timed out."""
    results = {order_id: "timed out" for order_id in versions}
    waiting = set(versions)
    deadline = time.monotonic() + timeout
    shown = 0.0
    while waiting:
        tasks = _tasks(storage, waiting)
        for order_id in sorted(waiting):
            states = [tasks[order_id].get(op) for op in versions[order_id]]
            if any(t is not None and t.status == TaskStatus.FAILED for t in states):
                results[order_id] = "failed"
                waiting.discard(order_id)
            elif all(t is not None and t.status == TaskStatus.DONE
                     and t.done_version >= versions[order_id][t.operation_type] for t in states):
                results[order_id] = "done"
                waiting.discard(order_id)
        if not waiting or time.monotonic() >= deadline:
            break
        if time.monotonic() - shown >= 10:
            progress(f"fix: {len(versions) - len(waiting)} of {len(versions)} orders rewritten, waiting for the rest")
            shown = time.monotonic()
        time.sleep(POLL_SECONDS)
    return results
