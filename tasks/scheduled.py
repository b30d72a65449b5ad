"""Scheduled work started by beat."""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app, group, shared_task

from dimensions.offline import load_offline_dimensions
from intake.receiver import utcnow
from models.redis_store import get_redis
from models.storage import get_storage
from reliability.housekeeping import failed_digest, once_per_period, purge_snapshots
from reliability.leases import OrderLeases
from reliability.rescan import due_tasks, postpone
from settings import get_settings
from tasks.lease_keeper import CHAIN_STEPS
from tasks.policy import retrying
from tasks.submit import submit_keys

log = logging.getLogger(__name__)


@shared_task(name="tdc.rescan")
def rescan() -> int:
    """Fan out one job per slice of the task tables."""
    jobs = get_settings().rescan_shards
    group(rescan_slice.si(job=job, jobs=jobs) for job in range(jobs)).apply_async()
    return jobs


#: A lease queued this long while no chain message waits in the broker is held for nobody.
STALE_QUEUED_SECONDS = 10.0


@shared_task(name="tdc.rescan_slice", **retrying())
def rescan_slice(job: int, jobs: int) -> int:
    """Submit the due tasks of tables ``t % jobs == job``; those whose order is held go to the
    back of the line until the next pass (not a whole lease: a lapsing lease is retaken then).

    A held order whose lease has waited queued for a while although no chain message waits in
    the broker is held for nobody (``OrderLeases.drop_stale_queued``): it is taken over now,
    not when the queued lease runs out."""
    settings, now = get_settings(), utcnow()
    submitted, held = submit_keys(due_tasks(get_storage(), job, jobs, now, settings.rescan_batch))
    if held and chain_queues_empty():
        dropped = OrderLeases(get_redis(), settings).drop_stale_queued({o for o, _ in held}, STALE_QUEUED_SECONDS)
        if dropped:
            log.warning("%d orders held a queued lease with no chain message in the broker; taking them over",
                        len(dropped))
            again, held = [k for k in held if k[0] in dropped], [k for k in held if k[0] not in dropped]
            more, still = submit_keys(again)
            submitted, held = submitted + more, held + still
    postpone(get_storage(), held, now, settings.rescan_interval_seconds)
    return submitted


def chain_queues_empty() -> bool:
    """True when no chain message waits in the broker's chain queues (messages a worker holds
    unacknowledged are not counted); False when the broker cannot say."""
    app = current_app
    routes = app.conf.task_routes or {}
    queues = {routes.get(name, {}).get("queue", app.conf.task_default_queue) for name in CHAIN_STEPS}
    try:
        with app.connection_for_write() as connection:
            return all(_depth(connection, name) == 0 for name in sorted(queues))
    except Exception:  # noqa: BLE001 - a broker away: keep the leases
        log.info("could not read the depth of the chain queues", exc_info=True)
        return False


def _depth(connection: Any, queue: str) -> int:
    """Messages waiting in ``queue``; 0 when it does not exist (Redis drops an empty list)."""
    channel = connection.channel()
    try:
        return int(channel.queue_declare(queue=queue, passive=True).message_count)
    except connection.channel_errors:
        return 0
    finally:
        try:
            channel.close()
        except Exception:  # noqa: BLE001 - the broker closed it already after NOT_FOUND
            pass


@shared_task(name="tdc.reload_dimensions", **retrying())
def reload_dimensions() -> dict[str, int]:
    """Reload the offline dimension tables from the warehouse into Redis (T+1)."""
    loads = load_offline_dimensions(get_storage().dws_engine, get_redis())
    return {load.dimension: load.written for load in loads}


#: A daily job's guard lives a little over a day.
DAY_SECONDS = 26 * 3600


@shared_task(name="tdc.purge_snapshots", **retrying())
def purge_old_snapshots() -> int:
    """Delete snapshots older than TDC_SNAPSHOT_DAYS (idempotent: a second run finds none)."""
    return purge_snapshots(get_storage(), utcnow(), get_settings().snapshot_days)


@shared_task(name="tdc.failed_digest", **retrying())
def daily_failed_digest() -> int:
    """One digest alarm a day about unresolved failed tasks, even with two beats running."""
    now = utcnow()
    digest = once_per_period(get_redis(), "failed_digest", now.date().isoformat(), DAY_SECONDS,
                             lambda: failed_digest(get_storage(), get_redis(), now))
    return 0 if digest is None else int(digest["unresolved"])  # type: ignore[call-overload]
