"""Scheduled work started by beat."""

from __future__ import annotations

from celery import group, shared_task

from models.redis_store import get_redis
from models.storage import get_storage
from pipeline.intake import utcnow
from pipeline.offline_dimensions import load_offline_dimensions
from pipeline.rescan import due_tasks
from settings import get_settings
from tasks.policy import retrying
from tasks.submit import submit_tasks


@shared_task(name="tdc.rescan")
def rescan() -> int:
    """Fan out one job per slice of the task tables."""
    jobs = get_settings().rescan_shards
    group(rescan_slice.si(job=job, jobs=jobs) for job in range(jobs)).apply_async()
    return jobs


@shared_task(name="tdc.rescan_slice", **retrying())
def rescan_slice(job: int, jobs: int) -> int:
    """Submit the due tasks of tables ``t % jobs == job``."""
    settings = get_settings()
    return submit_tasks(due_tasks(get_storage(), job, jobs, utcnow(), settings.rescan_batch))


@shared_task(name="tdc.reload_dimensions", **retrying())
def reload_dimensions() -> dict[str, int]:
    """Reload the offline dimension tables from the warehouse into Redis (T+1)."""
    loads = load_offline_dimensions(get_storage().dws_engine, get_redis())
    return {load.dimension: load.written for load in loads}
