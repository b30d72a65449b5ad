"""Refreshing open entities after a dimension change (``dimensions.refresh``), started by beat.

For each pending (dimension, key): the entities whose wide rows used it within
``TDC_REFRESH_DAYS`` get the operation they merged last made due again, REFRESH_BATCH at a time
(one transaction per batch in their database), and chains are submitted for them: each is
merged again as any correction is (new version, snapshot, index, ADS taken back and added
again), reading the new dimension value.  The entry is cleared afterwards unless it changed
again meanwhile.  Several passes at once are harmless: a task made due twice is merged once
more, to the same rows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from dataclasses import dataclass, field

import redis
from celery import shared_task

from chain.wide_rows import read_wide
from dimensions.refresh import clear, entities_using, pending, sweep_window, swept
from intake.receiver import TaskKey, bump_tasks, utcnow
from models.redis_store import get_redis
from models.storage import Storage, get_storage
from tasks.submit import submit_tasks

log = logging.getLogger(__name__)

#: Entities made due per transaction and per submit.
REFRESH_BATCH = 500
#: One pass at a time: the lock's key, and how long a pass that died keeps it.
RUNNING = "tdc:refresh:running"
PASS_LOCK_SECONDS = 600


@dataclass
class RefreshReport:
    #: Pending (dimension, key) entries handled and cleared.
    entries: int = 0
    #: Entities made due again.
    entities: int = 0
    submitted: int = 0
    #: The tasks made due (kept when not submitted here: the caller runs them).
    due: list[TaskKey] = field(default_factory=list)


def _due_again(storage: Storage, order_ids: list[str], now: dt.datetime) -> list[TaskKey]:
    """Make the operation each entity merged last due again (entities with no wide row are left
    alone); the tasks made due."""
    tasks: list[TaskKey] = []
    for shards in storage.orders_by_database(order_ids).values():
        in_lock_order = sorted(shards, key=lambda o: (shards[o], o))
        with storage.order_transaction(in_lock_order[0]) as connection:
            orders, _ = read_wide(connection, in_lock_order)
            due = [(shards[o], o, orders[o]["last_operation"]) for o in in_lock_order
                   if o in orders and orders[o].get("last_operation")]
            if due:
                bump_tasks(connection, due, now)
        tasks += [(order_id, operation) for _, order_id, operation in due]
    return tasks


def refresh_dimensions(storage: Storage, client: redis.Redis, batch: int = REFRESH_BATCH,
                       submit: bool = True, settle: dt.timedelta | None = None) -> RefreshReport:
    """Handle every pending dimension refresh (see the module docstring).  ``settle``: how long
    after its latest change an entry is kept for later sweeps (default: two leases, longer than
    a merge that looked the entry up before the change can take to commit)."""
    report = RefreshReport()
    settings = storage.settings
    if settle is None:
        settle = dt.timedelta(seconds=2 * settings.lease_seconds)
    for entry in pending(client):
        now = utcnow()
        entities = 0
        for order_ids in entities_using(storage, entry.dimension, entry.key,
                                        sweep_window(entry, now, settings.refresh_days), batch):
            due = _due_again(storage, order_ids, now)
            entities += len(due)
            if submit:
                report.submitted += submit_tasks(due)
            else:
                report.due += due
        report.entities += entities
        swept(client, entry, now)
        if (entry.marked_at is None or now - entry.marked_at > settle) and clear(client, entry):
            report.entries += 1
        log.info("refreshed %s %s: %d entities due again", entry.dimension, entry.key, entities)
    return report


def _single(client: redis.Redis, seconds: int) -> bool:
    """Take the pass's lock: passes queued behind a slow one find it taken and end at once."""
    return bool(client.set(RUNNING, str(os.getpid()), nx=True, ex=seconds))


@shared_task(name="tdc.refresh_dimensions")
def refresh_dimensions_task() -> dict[str, int]:
    client = get_redis()
    if not _single(client, PASS_LOCK_SECONDS):
        return {"entries": 0, "entities": 0, "submitted": 0}
    try:
        report = refresh_dimensions(get_storage(), client)
    finally:
        client.delete(RUNNING)
    return {"entries": report.entries, "entities": report.entities, "submitted": report.submitted}

