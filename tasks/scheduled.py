"""Scheduled work started by beat."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import current_app, group, shared_task

from dimensions.offline import load_offline_dimensions
from intake.receiver import utcnow
from models.redis_store import get_redis
from models.storage import get_storage
from reconcile.run import reconcile
from reliability.housekeeping import failed_digest, once_per_period, purge_snapshots
from reliability.leases import OrderLeases
from reliability.rescan import due_tasks, postpone
from settings import get_settings
from tasks.lease_keeper import CHAIN_STEPS
from tasks.policy import retrying
from tasks.submit import submit_keys, submit_tasks

log = logging.getLogger(__name__)


@shared_task(name="tdc.rescan")
def rescan() -> int:
    """Fan out one job per slice of the task tables, telling them which queued leases are held
    for nobody (``stale_queued_cutoff``)."""
    jobs = get_settings().rescan_shards
    cutoff = stale_queued_cutoff()
    group(rescan_slice.si(job=job, jobs=jobs, queued_by_ms=cutoff) for job in range(jobs)).apply_async()
    return jobs


#: A lease queued this long before the chain queues were seen empty is held for nobody.
STALE_QUEUED_SECONDS = 10.0
#: Held orders are postponed by this share of the rescan interval, so the next pass (a little
#: under an interval later, from a slice's point of view) finds them due and not the one after.
POSTPONE_SHARE = 0.8


def stale_queued_cutoff() -> int | None:
    """The Redis-clock ms at or before which a queued lease is held for nobody: STALE_QUEUED_SECONDS
    before the chain queues were seen empty, once for the whole pass (the slices' own takeovers
    fill the queues again); None when a chain message waits."""
    clock = OrderLeases(get_redis(), get_settings()).clock_ms()
    return clock - int(STALE_QUEUED_SECONDS * 1000) if chain_queues_empty() else None


@shared_task(name="tdc.rescan_slice", **retrying())
def rescan_slice(job: int, jobs: int, queued_by_ms: int | None = None) -> int:
    """Submit the due tasks of tables ``t % jobs == job``; those whose order is held go to the
    back of the line until the next pass (not a whole lease: a lapsing lease is retaken then).

    A held order whose lease was queued by ``queued_by_ms`` (``stale_queued_cutoff``, None: the
    pass saw a chain message waiting) is held for nobody (``OrderLeases.drop_stale_queued``): it
    is taken over now, not when the queued lease runs out."""
    settings, now = get_settings(), utcnow()
    submitted, held = submit_keys(due_tasks(get_storage(), job, jobs, now, settings.rescan_batch))
    if held and queued_by_ms is not None:
        dropped = OrderLeases(get_redis(), settings).drop_stale_queued({o for o, _ in held}, queued_by_ms)
        if dropped:
            log.warning("%d orders held a queued lease with no chain message in the broker; taking them over",
                        len(dropped))
            again, held = [k for k in held if k[0] in dropped], [k for k in held if k[0] not in dropped]
            more, still = submit_keys(again)
            submitted, held = submitted + more, held + still
    postpone(get_storage(), held, now, settings.rescan_interval_seconds * POSTPONE_SHARE)
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
    """One digest alarm a day listing the unresolved failed tasks (each with its reason and
    age), even with two beats running; returns how many are unresolved."""
    now = utcnow()
    digest = once_per_period(get_redis(), "failed_digest", now.date().isoformat(), DAY_SECONDS,
                             lambda: failed_digest(get_storage(), get_redis(), now))
    return 0 if digest is None else int(digest["unresolved"])  # type: ignore[call-overload]


#: Seconds the daily fix waits for the workers to rewrite the orders it sent round again; what is
#: still on its way then is confirmed by a second comparison CONFIRM_AFTER_SECONDS later.
RECONCILE_WAIT_SECONDS = 120
CONFIRM_AFTER_SECONDS = 900


def previous_business_day(now: dt.datetime, zone: dt.tzinfo) -> dt.date:
    """The business day before the one ``now`` (UTC) falls on where the business keeps its days."""
    return now.replace(tzinfo=dt.UTC).astimezone(zone).date() - dt.timedelta(days=1)


@shared_task(name="tdc.reconcile", soft_time_limit=3300, time_limit=3600, **retrying())
def daily_reconcile(day: str | None = None) -> dict[str, Any] | None:
    """Reconcile the previous business day (or ``day``) with --fix, once per day even with two
    beats or a redelivered message.  What the fix could not confirm in time is compared again
    later (``tdc.reconcile_confirm``), which alarms on anything still different."""
    settings = get_settings()
    chosen = dt.date.fromisoformat(day) if day else previous_business_day(utcnow(), settings.business_zone)

    def work() -> dict[str, Any]:
        outcome = reconcile(get_storage(), get_redis(), chosen, chosen, fix=True, submit=submit_tasks,
                            wait_seconds=RECONCILE_WAIT_SECONDS, alarm=False,
                            progress=lambda line: log.info("reconcile %s: %s", chosen, line))
        if outcome.remaining:
            reconcile_confirm.apply_async(kwargs={"day": chosen.isoformat()}, countdown=CONFIRM_AFTER_SECONDS)
        return {"run": outcome.run_id, "status": outcome.status, "found": outcome.found, "fixed": outcome.fixed,
                "remaining": outcome.remaining, "report": outcome.html_path}
    return once_per_period(get_redis(), "reconcile", chosen.isoformat(), DAY_SECONDS, work)


@shared_task(name="tdc.reconcile_confirm", soft_time_limit=3300, time_limit=3600, **retrying())
def reconcile_confirm(day: str) -> dict[str, Any]:
    """Compare ``day`` again after the daily fix had orders still on their way; alarms on any difference."""
    chosen = dt.date.fromisoformat(day)
    outcome = reconcile(get_storage(), get_redis(), chosen, chosen)
    return {"run": outcome.run_id, "status": outcome.status, "found": outcome.found, "report": outcome.html_path}
