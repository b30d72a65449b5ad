"""Submitting chains: each task only under its lock, in batches of TDC_CHAIN_BATCH."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from celery import chain, current_app

from intake.receiver import TaskKey
from models.redis_store import get_redis
from reliability.leases import TaskLocks
from reliability.transient import TRANSIENT_ERRORS
from settings import get_settings

log = logging.getLogger(__name__)


def submit_tasks(keys: Iterable[TaskKey]) -> int:
    """Lock and submit chains for ``keys``; returns how many tasks were submitted.

    A task whose lock is held is already being processed (its chain re-reads the latest
    version when it finishes).  When Redis cannot be reached to lock, or the broker refuses,
    nothing is lost: the tasks are committed and stay due for the rescan.
    """
    settings = get_settings()
    locks = TaskLocks(get_redis(), settings.lock_seconds)
    keys = list(keys)
    try:
        owned = locks.acquire(keys)
    except TRANSIENT_ERRORS:
        log.exception("could not lock %d tasks; the rescan will submit them", len(keys))
        return 0
    entries = [{"order_id": o, "operation_type": op, "token": token} for (o, op), token in owned.items()]
    submitted = 0
    app = current_app
    for start in range(0, len(entries), settings.chain_batch):
        batch = entries[start : start + settings.chain_batch]
        try:
            chain(
                app.signature("tdc.check", kwargs={"keys": batch}, immutable=True),
                app.signature("tdc.merge"),
                app.signature("tdc.aggregate"),
                app.signature("tdc.finish"),
            ).apply_async()
            submitted += len(batch)
        except TRANSIENT_ERRORS:
            log.exception("broker refused %d tasks; the rescan will submit them", len(batch))
            locks.release((e["order_id"], e["operation_type"], e["token"]) for e in batch)
    return submitted
