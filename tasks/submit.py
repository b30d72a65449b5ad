"""Submitting chains: each order only under its lease, in batches of about TDC_CHAIN_BATCH keys."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

from celery import chain, current_app

from intake.receiver import TaskKey
from models.redis_store import get_redis
from reliability.leases import OrderLeases
from reliability.transient import TRANSIENT_ERRORS
from settings import get_settings

log = logging.getLogger(__name__)


def submit_keys(keys: Iterable[TaskKey]) -> tuple[int, list[TaskKey]]:
    """Take each order's lease and submit chains for ``keys``; returns how many tasks were
    submitted and the tasks whose order another chain holds.

    A held order is being processed: its chain submits the order's PENDING tasks when it
    releases the lease.  Leases are taken for a running lease and get the queued one once the
    chain is in the broker (``tasks.lease_keeper``), so a submitter killed in between holds its
    orders only a lease.  When Redis cannot be reached, or the broker refuses, nothing is lost:
    the tasks are committed and stay due for the rescan.  All keys of one order go in one
    chain, so no two chains ever share an order's lease.
    """
    settings = get_settings()
    leases = OrderLeases(get_redis(), settings)
    by_order: dict[str, list[str]] = defaultdict(list)
    for order_id, operation in dict.fromkeys(keys):
        by_order[order_id].append(operation)
    try:
        tokens = leases.acquire(by_order)
    except TRANSIENT_ERRORS:
        log.exception("could not take the leases of %d orders; the rescan will submit them", len(by_order))
        return 0, []
    held = [(o, op) for o, ops in by_order.items() if o not in tokens for op in ops]
    batches: list[list[dict[str, Any]]] = [[]]
    for order_id, token in tokens.items():
        if len(batches[-1]) >= settings.chain_batch:
            batches.append([])
        batches[-1] += [{"order_id": order_id, "operation_type": op, "token": token} for op in by_order[order_id]]
    submitted = 0
    app = current_app
    for batch in batches:
        if not batch:
            continue
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
            leases.release({e["order_id"]: e["token"] for e in batch})
    return submitted, held


def submit_tasks(keys: Iterable[TaskKey]) -> int:
    """Submit chains for ``keys`` (see ``submit_keys``); returns how many tasks were submitted."""
    return submit_keys(keys)[0]
