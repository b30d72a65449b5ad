"""Scheduled work started by beat."""

from __future__ import annotations

from celery import group, shared_task

from dimensions.offline import load_offline_dimensions
from intake.receiver import utcnow
from models.redis_store import get_redis
from models.storage import get_storage
from reliability.housekeeping import failed_digest, once_per_period, purge_snapshots
from reliability.rescan import due_tasks, postpone
from settings import get_settings
from tasks.policy import retrying
from tasks.submit import submit_keys


@shared_task(name="tdc.rescan")
def rescan() -> int:
    """Fan out one job per slice of the task tables."""
    jobs = get_settings().rescan_shards
    group(rescan_slice.si(job=job, jobs=jobs) for job in range(jobs)).apply_async()
    return jobs


@shared_task(name="tdc.rescan_slice", **retrying())
def rescan_slice(job: int, jobs: int) -> int:
    """Submit the due tasks of tables ``t % jobs == job``; those whose order is held go to the
    back of the line until the next pass (not a whole lease: a lapsing lease is retaken then)."""
    settings, now = get_settings(), utcnow()
    submitted, held = submit_keys(due_tasks(get_storage(), job, jobs, now, settings.rescan_batch))
    postpone(get_storage(), held, now, settings.rescan_interval_seconds)
    return submitted


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
