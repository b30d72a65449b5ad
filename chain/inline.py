"""The chain driven in this process, without a broker: the same step functions the Celery tasks
call, one batch after the other, then the rescan until nothing is due.  For benchmarks that need
processed orders fast, and for tests of storage behaviour without worker timing."""

from __future__ import annotations

from collections.abc import Iterable

import redis

from chain.steps import aggregate_orders, check_tasks, finish_tasks, merge_orders
from intake.receiver import TaskKey, utcnow
from models.storage import Storage
from reliability.leases import OrderLeases
from reliability.rescan import due_tasks, postpone
from strategies.generators import Dimensions

#: Keys per in-process batch (and due tasks per table per rescan round).
INLINE_BATCH = 1000


class ChainsDidNotSettle(RuntimeError):
    """Tasks were still due after the given number of rounds."""


def run_inline(storage: Storage, client: redis.Redis, dims: Dimensions, keys: Iterable[TaskKey],
               rounds: int = 50, batch: int | None = INLINE_BATCH) -> None:
    """Run check -> merge -> aggregate -> finish for ``keys`` and everything they wake, then
    rescan until nothing is due; ChainsDidNotSettle after ``rounds`` batches (of ``batch`` keys,
    None: the whole queue at once)."""
    settings = storage.settings
    leases = OrderLeases(client, settings)
    queue = list(keys)
    for _ in range(rounds):
        if not queue:
            queue = due_tasks(storage, 0, 1, utcnow(), batch or INLINE_BATCH)
            if not queue:
                return
        cut = batch or len(queue)
        taking, queue = queue[:cut], queue[cut:]
        taking = list(dict.fromkeys(taking))
        tokens = leases.acquire(order_id for order_id, _ in taking)
        chain = [{"order_id": o, "operation_type": op, "token": tokens[o]} for o, op in taking if o in tokens]
        # As the rescan does: tasks of an order another (unfinished) chain holds wait a lease.
        postpone(storage, [key for key in taking if key[0] not in tokens], utcnow(), settings.lease_seconds)
        ready, again = check_tasks(storage, leases, settings, chain)
        merged = merge_orders(storage, leases, settings, dims, ready)
        aggregated = aggregate_orders(storage, leases, settings, merged)
        queue += again + finish_tasks(storage, leases, aggregated)
    raise ChainsDidNotSettle(f"tasks still due after {rounds} rounds")
