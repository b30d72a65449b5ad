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
from dataclasses import dataclass, field

import redis
from celery import shared_task

from chain.wide_rows import read_wide
from dimensions.refresh import clear, entities_using, pending
from intake.receiver import TaskKey, bump_tasks, utcnow
from models.redis_store import get_redis
from models.storage import Storage, get_storage
from tasks.submit import submit_tasks

log = logging.getLogger(__name__)

#: Entities made due per transaction and per submit.
REFRESH_BATCH = 500


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
                       submit: bool = True) -> RefreshReport:
    """Handle every pending dimension refresh (see the module docstring)."""
    report = RefreshReport()
    now = utcnow()
    since = now - dt.timedelta(days=storage.settings.refresh_days)
    for dimension, key, counter in pending(client):
        entities = 0
        for order_ids in entities_using(storage, dimension, key, since, batch):
            due = _due_again(storage, order_ids, now)
            entities += len(due)
            if submit:
                report.submitted += submit_tasks(due)
            else:
                report.due += due
        report.entities += entities
        if clear(client, dimension, key, counter):
            report.entries += 1
        log.info("refreshed %s %s: %d entities due again", dimension, key, entities)
    return report


@shared_task(name="tdc.refresh_dimensions")
def refresh_dimensions_task() -> dict[str, int]:
    report = refresh_dimensions(get_storage(), get_redis())
    return {"entries": report.entries, "entities": report.entities, "submitted": report.submitted}

