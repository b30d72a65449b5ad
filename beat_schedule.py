"""The only schedule: what beat starts, each entry with the reason it exists."""

from __future__ import annotations

from celery.schedules import crontab

from settings import get_settings

_settings = get_settings()

BEAT_SCHEDULE = {
    # Safety net behind the fast path: submit tasks that are due (pending with a lost submit,
    # waiting past their back-off, or running past their lease).
    "rescan-due-tasks": {
        "task": "tdc.rescan",
        "schedule": _settings.rescan_interval_seconds,
    },
    # Index documents a finished chain could not send (Elasticsearch down, a publish lost) wait in
    # the outbox; send what is due.  Nothing to do without TDC_ES_URL.
    "index-outbox": {
        "task": "tdc.index_pending",
        "schedule": _settings.rescan_interval_seconds,
    },
    # Wide-row changes wait in the changelog outbox until the relay publishes them (and their
    # analytics events); a pass every couple of seconds keeps consumers that close behind.
    # Nothing to do without TDC_CHANGELOG_URL or TDC_EVENTS_URL.  A pass still queued half a
    # minute later is dropped: newer ones are queued behind it by then.
    "changelog-relay": {
        "task": "tdc.changelog_relay",
        "schedule": _settings.changelog_relay_seconds,
        "options": {"expires": max(30.0, 5 * _settings.changelog_relay_seconds)},
    },
    # A store renamed (or any dimension a flow looks up with `refreshes`) merges the open orders
    # that use it again; changes wait marked in Redis until a pass has done so.
    "refresh-dimensions": {
        "task": "tdc.refresh_dimensions",
        "schedule": _settings.refresh_interval_seconds,
        "options": {"expires": max(30.0, 5 * _settings.refresh_interval_seconds)},
    },
    # The T+1 path: offline dimension tables in the warehouse are refreshed nightly; reload them
    # into Redis afterwards (only entries newer than Redis's are replaced).
    "reload-offline-dimensions": {
        "task": "tdc.reload_dimensions",
        "schedule": crontab(hour=_settings.dims_reload_at[0], minute=_settings.dims_reload_at[1]),
    },
    # Snapshots are kept 90 days (TDC_SNAPSHOT_DAYS); purging daily keeps each delete small.
    "purge-old-snapshots": {
        "task": "tdc.purge_snapshots",
        "schedule": crontab(hour=2, minute=15),
    },
    # Finance asks every morning whether the warehouse matches the order center: compare the
    # previous business day, compensate what differs, and alarm on anything left.
    "reconcile-previous-day": {
        "task": "tdc.reconcile",
        "schedule": crontab(hour=_settings.reconcile_at[0], minute=_settings.reconcile_at[1]),
    },
    # Failed tasks need a person; one alarm a day lists what is still unresolved.
    "failed-task-digest": {
        "task": "tdc.failed_digest",
        "schedule": crontab(hour=_settings.digest_at[0], minute=_settings.digest_at[1]),
    },
}
