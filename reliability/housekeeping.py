"""Daily housekeeping: purge old snapshots, a digest of failed tasks, and the guard that keeps
a job from running twice in one period when two beat processes run by mistake."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable
from typing import TypeVar

import redis
from sqlalchemy import delete, select

from models.storage import Storage
from models.wide import SCHEMAS
from reliability.alarms import raise_alarm
from reliability.failures import list_failures

#: Snapshot rows deleted per statement: short transactions on a busy shard database.
PURGE_CHUNK = 5000
#: Failed tasks the daily digest lists one by one (newest first); more than that is an incident
#: to read in `tdc failed list`, not in a mail, and the digest says how many it left out.
DIGEST_LIST = 200


#: How long a run of a once-a-period job may hold its claim before another caller may try.
RUNNING_CLAIM_SECONDS = 600

T = TypeVar("T")


def once_per_period(client: redis.Redis, job: str, period: str, seconds: int, work: Callable[[], T]) -> T | None:
    """Run ``work`` unless ``job`` already succeeded in ``period`` (say a UTC date) or is running
    now; returns its result, or None when it did not run.  A second beat, or a redelivered
    message, does not run the job twice; a run that fails leaves the period open, so the retry
    (or the next caller) runs it.  The period is marked done only after ``work`` succeeded."""
    done = f"tdc:once:{job}:{period}"
    running = f"{done}:running"
    if client.exists(done) or not client.set(running, "1", nx=True, ex=RUNNING_CLAIM_SECONDS):
        return None
    try:
        if client.exists(done):  # finished by another caller between our two looks
            return None
        result = work()
        client.set(done, "1", ex=seconds)
        return result
    finally:
        client.delete(running)


def purge_snapshots(storage: Storage, now: dt.datetime, keep_days: int) -> int:
    """Delete snapshots taken more than ``keep_days`` ago, in chunks; returns how many."""
    cutoff = now - dt.timedelta(days=keep_days)
    purged = 0
    tables = [schema.snapshots for schema in SCHEMAS.values() if schema.snapshots is not None]
    for database, table in ((database, table) for database in storage.distinct_databases() for table in tables):
        while True:
            with storage.shard_engine(database).begin() as connection:
                ids = connection.execute(select(table.c.id).where(table.c.taken_at < cutoff)
                                         .limit(PURGE_CHUNK)).scalars().all()
                if ids:
                    connection.execute(delete(table).where(table.c.id.in_(ids)))
            purged += len(ids)
            if len(ids) < PURGE_CHUNK:
                break
    return purged


def failed_digest(storage: Storage, client: redis.Redis, now: dt.datetime) -> dict[str, object]:
    """Count unresolved failed tasks by operation and reason, list them (id, reason, age; the
    newest DIGEST_LIST), and raise one ``failed_digest`` alarm when there are any; returns the digest."""
    failures = list_failures(storage)
    recent = [f for f in failures if f["failed_at"] >= now - dt.timedelta(days=1)]
    listed = failures[:DIGEST_LIST]
    digest: dict[str, object] = {
        "unresolved": len(failures),
        "failed_last_24h": len(recent),
        "by_operation": dict(Counter(f["operation_type"] for f in failures)),
        "top_reasons": dict(Counter(f["reason"] for f in failures).most_common(5)),
        "oldest": min((f["failed_at"] for f in failures), default=None),
        "failed": [{"id": f["id"], "reason": f["reason"], "age": age_text(now - f["failed_at"]),
                    "failed_at": f["failed_at"].isoformat(sep=" ", timespec="seconds")} for f in listed],
        "not_listed": len(failures) - len(listed),
    }
    if failures:
        where = (f"the newest {len(listed)} are listed, `tdc failed list` shows all {len(failures)}"
                 if len(listed) < len(failures) else "`tdc failed list` shows them")
        raise_alarm(client, "failed_digest", f"{len(failures)} unresolved failed tasks "
                    f"({len(recent)} in the last 24 hours); {where}", **digest)
    return digest


def age_text(age: dt.timedelta) -> str:
    """How long ago, the way a person reads it: ``2 d 5 h``, ``3 h 12 min``, ``7 min``."""
    minutes = max(0, int(age.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min" if minutes else "under 1 min"
