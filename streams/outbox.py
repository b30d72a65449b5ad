"""The changelog relay: publish the outbox rows of each shard database (``models.changelog``) to
the changelog sink, and the events they make to the events sink, in order per order; mark them
published once a sink confirmed; purge what was published longer ago than the retention.

Per database, one relay at a time (``streams.relay_lock``): it reads the oldest rows not yet
published to a sink and publishes them in rounds that hold at most one change per order, each
round confirmed before the next, so an order's versions reach the sink in order.  Each sink is
relayed and marked on its own (``changelog_published_at``, ``events_published_at``): a sink that
is away fails only its own rounds, and the other goes on without repeating anything; a row is
``published_at`` (and later purged) once every configured sink has it.  A round is marked only
after its sink confirmed it; a relay that dies between publishing and marking publishes the round
again on its next pass (before anything newer of those orders), so a consumer sees an order's
versions in order, possibly one of them twice.  The lock is no fence either: a relay whose lock
connection died between its check and its publish still sends its round, possibly after newer
versions another relay published (``streams.relay_lock``).  So consumers de-duplicate on (order
id, version), keeping the highest version, and on (event id, version) for events.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import ColumnElement, delete, func, select, update

from flows.registry import flow_of
from intake.receiver import utcnow
from models.changelog import CHANGELOG
from models.storage import Storage
from models.wide import schema_of
from settings import Settings
from streams.events import Change, Event, first_events, order_events
from streams.relay_lock import LockLost, relay_lock
from streams.sinks import Message, Sink, open_sink

log = logging.getLogger(__name__)

#: Published rows deleted per statement by the purge: short transactions on a busy database.
PURGE_CHUNK = 5000

def changelog_topic(change: Change) -> str:
    """The kind of a changelog message (AMQP routing key, Kafka header, NATS and Redis field):
    the name of the root wide table that changed (``dwd_order`` for an online order,
    ``dwd_t_sal_order`` for a Kingdee sales order), so a consumer can bind to one flow's changes."""
    return schema_of(flow_of(change.order_id)).root.name

#: Sink kind -> the outbox column that marks a change published to it.
SINK_MARKS = {"changelog": CHANGELOG.c.changelog_published_at, "events": CHANGELOG.c.events_published_at}


@dataclass
class Sinks:
    """The sinks a relay publishes to (None: not configured)."""

    changelog: Sink | None = None
    events: Sink | None = None

    @classmethod
    def configured(cls, settings: Settings) -> Sinks:
        """Connected sinks for TDC_CHANGELOG_URL and TDC_EVENTS_URL."""
        sinks = cls()
        try:
            if settings.changelog_url:
                sinks.changelog = open_sink(settings.changelog_url, "change")
            if settings.events_url:
                sinks.events = open_sink(settings.events_url, "event")
        except BaseException:
            sinks.close()
            raise
        return sinks

    def by_kind(self) -> dict[str, Sink]:
        """The configured sinks by kind (``SINK_MARKS``'s keys), the changelog first."""
        return {kind: sink for kind, sink in (("changelog", self.changelog), ("events", self.events))
                if sink is not None}

    def close(self) -> None:
        for sink in (self.changelog, self.events):
            if sink is not None:
                try:
                    sink.close()
                except Exception:  # noqa: BLE001 - closing a broken connection may fail too
                    log.debug("closing a sink failed", exc_info=True)


class RelayFailed(RuntimeError):
    """A sink failed in a relay pass: its round in hand stays unmarked; the other sink and the
    other databases were relayed (``report``)."""

    def __init__(self, report: RelayReport):
        super().__init__("; ".join(f"the {kind} sink failed: {type(error).__name__}: {error}"
                                   for kind, error in report.failures.items()))
        self.report = report


@dataclass
class RelayReport:
    """What a relay pass did."""

    published: int = 0
    events: int = 0
    purged: int = 0
    #: Databases another relay held.
    skipped: list[int] = field(default_factory=list)
    #: Sinks that failed (by kind), with what they raised.
    failures: dict[str, Exception] = field(default_factory=dict)

    def add(self, other: RelayReport) -> None:
        self.published += other.published
        self.events += other.events
        self.purged += other.purged
        self.skipped += other.skipped
        self.failures = other.failures | self.failures

    def raise_failures(self) -> None:
        """RelayFailed (from the first failure) when a sink failed."""
        if self.failures:
            error = next(iter(self.failures.values()))
            raise RelayFailed(self) from error

    def as_dict(self) -> dict[str, Any]:
        return {"published": self.published, "events": self.events, "purged": self.purged, "skipped": self.skipped}


def change_document(change: Change) -> dict[str, Any]:
    """A change as the changelog sink carries it."""
    return {"order_id": change.order_id, "flow": flow_of(change.order_id).name, "version": change.version,
            "op": change.operation,
            "operations": change.operations.split(",") if change.operations else [],
            "changed_at": change.changed_at.isoformat(timespec="milliseconds"),
            "before": change.before, "after": change.after}


def change_message(change: Change) -> Message:
    return Message(key=change.order_id, dedup_id=f"{change.order_id}:{change.version}", topic=changelog_topic(change),
                   body=json.dumps(change_document(change), separators=(",", ":"), sort_keys=True))


def pending_changes(storage: Storage, database: int, sink: str, limit: int) -> list[Change]:
    """The oldest ``limit`` changes of ``database`` not yet published to ``sink`` (a key of
    ``SINK_MARKS``), in the order they were written."""
    with storage.read_engine(database).connect() as connection:
        rows = connection.execute(select(CHANGELOG)
                                  .where(CHANGELOG.c.published_at.is_(None), SINK_MARKS[sink].is_(None))
                                  .order_by(CHANGELOG.c.id).limit(limit)).all()
    return [Change(row.id, row.order_id, row.version, row.operation, row.operations,
                   json.loads(row.before_image) if row.before_image else None, json.loads(row.after_image),
                   row.changed_at) for row in rows]


def rounds(changes: list[Change]) -> list[list[Change]]:
    """``changes`` (in writing order) in rounds of at most one change per order: an order's k-th
    change goes in round k, so its versions go out in order."""
    by_round: list[list[Change]] = []
    seen: dict[str, int] = defaultdict(int)
    for change in sorted(changes, key=lambda c: (c.id, c.version)):
        index = seen[change.order_id]
        seen[change.order_id] += 1
        if index == len(by_round):
            by_round.append([])
        by_round[index].append(change)
    return by_round


def _all_published(configured: Sequence[str]) -> list[ColumnElement[bool]]:
    return [CHANGELOG.c.published_at.is_(None), *(SINK_MARKS[sink].is_not(None) for sink in configured)]


def _mark_published(storage: Storage, database: int, sink: str, ids: list[int], configured: Sequence[str],
                    now: dt.datetime) -> None:
    """Mark ``ids`` published to ``sink``, and published (to every ``configured`` sink) where so."""
    with storage.shard_engine(database).begin() as connection:
        connection.execute(update(CHANGELOG).where(CHANGELOG.c.id.in_(ids)).values({SINK_MARKS[sink].name: now}))
        connection.execute(update(CHANGELOG).where(CHANGELOG.c.id.in_(ids), *_all_published(configured))
                           .values(published_at=now))


def _settle(storage: Storage, database: int, configured: Sequence[str], now: dt.datetime) -> None:
    """Mark published the rows every ``configured`` sink already has: after a sink was taken out
    of the configuration, its rows waited only for it."""
    with storage.shard_engine(database).begin() as connection:
        connection.execute(update(CHANGELOG).where(*_all_published(configured)).values(published_at=now))


def purge_published(storage: Storage, database: int, now: dt.datetime, keep_hours: float) -> int:
    """Delete changes published more than ``keep_hours`` ago, in chunks; how many."""
    cutoff = now - dt.timedelta(hours=keep_hours)
    purged = 0
    while True:
        with storage.shard_engine(database).begin() as connection:
            ids = connection.execute(select(CHANGELOG.c.id).where(CHANGELOG.c.published_at < cutoff)
                                     .limit(PURGE_CHUNK)).scalars().all()
            if ids:
                connection.execute(delete(CHANGELOG).where(CHANGELOG.c.id.in_(ids)))
        purged += len(ids)
        if len(ids) < PURGE_CHUNK:
            return purged


#: Called after a round was published and before it is marked, with the number of rounds that
#: sink has published from the database in this pass (from 1): where a test kills the relay.
AfterPublish = Callable[[int], None]


#: Asked before each round: True ends the pass there (a deadline passed, a signal came).
Stop = Callable[[], bool]


def _never() -> bool:
    return False


def relay_database(storage: Storage, database: int, sinks: Sinks, stop: Stop = _never,
                   after_publish: AfterPublish | None = None) -> RelayReport:
    """Publish ``database``'s waiting changes to each sink until none is left or ``stop()``, then
    purge; nothing when another relay holds the database (it is listed as skipped).  Raises
    RelayFailed when a sink failed (its round stays unmarked and is published again by the next
    pass; the other sink went on meanwhile), and ``relay_lock.LockLost`` or what the database
    raises at once."""
    report = _relay_database(storage, database, sinks, stop, after_publish, {})
    report.raise_failures()
    return report


def _relay_database(storage: Storage, database: int, sinks: Sinks, stop: Stop, after_publish: AfterPublish | None,
                    failed: dict[str, Exception]) -> RelayReport:
    """``relay_database`` without raising a sink's failure: it is added to ``failed`` (and the
    report), and sinks already in ``failed`` are left alone."""
    configured = sinks.by_kind()
    report = RelayReport()
    with relay_lock(storage.shard_engine(database)) as lock:
        if lock is None:
            report.skipped.append(database)
            return report
        published_rounds: dict[str, int] = defaultdict(int)
        while not stop():
            progressed = False
            for kind, sink in configured.items():
                if kind in failed or stop():
                    continue
                changes = pending_changes(storage, database, kind, storage.settings.changelog_batch)
                if not changes:
                    continue
                progressed = True
                try:
                    # Events of the whole read at once: one warehouse transaction for its first-of events.
                    events = _events_of(storage, changes) if kind == "events" else {}
                    for batch in rounds(changes):
                        if stop():
                            break
                        lock.check()
                        published = _publish_round(kind, sink, batch, events)
                        published_rounds[kind] += 1
                        if after_publish is not None:
                            after_publish(published_rounds[kind])
                        _mark_published(storage, database, kind, [change.id for change in batch], list(configured),
                                        utcnow())
                        if kind == "changelog" or "changelog" not in configured:
                            report.published += len(batch)
                        if kind == "events":
                            report.events += published
                except LockLost:
                    raise
                except Exception as error:  # noqa: BLE001 - this sink is away; the other goes on
                    log.warning("database %s: the %s sink failed: %s: %s", database, kind, type(error).__name__, error)
                    failed[kind] = error
                    report.failures[kind] = error
            if not progressed:
                break
        _settle(storage, database, list(configured), utcnow())
        report.purged = purge_published(storage, database, utcnow(), storage.settings.changelog_retention_hours)
    return report


def _publish_round(kind: str, sink: Sink, batch: list[Change], events: dict[int, list[Event]]) -> int:
    """Publish one round of changes to the ``kind`` sink: the changes, or their ``events``; how
    many messages."""
    if kind == "changelog":
        messages = [change_message(change) for change in batch]
    else:
        messages = [event.message() for event in sorted((e for change in batch for e in events.get(change.id, [])),
                                                        key=lambda e: (e.version, e.type, e.event_id))]
    if messages:
        sink.publish(messages)
    return len(messages)


def _events_of(storage: Storage, changes: list[Change]) -> dict[int, list[Event]]:
    """The events of each change (by change id)."""
    events: dict[int, list[Event]] = {change.id: order_events(change) for change in changes}
    for change_id, more in first_events(storage, changes, utcnow()).items():
        events[change_id] += more
    return events


def relay_pass(storage: Storage, sinks: Sinks, stop: Stop = _never,
               after_publish: AfterPublish | None = None) -> RelayReport:
    """``relay_database`` for every shard database, one after the other.  A sink that failed is
    not tried again in the pass, and the other sink goes on through every database; RelayFailed
    is raised at the end then."""
    report = RelayReport()
    failed: dict[str, Exception] = {}
    for database in storage.distinct_databases():
        if stop():
            break
        report.add(_relay_database(storage, database, sinks, stop, after_publish, failed))
    report.raise_failures()
    return report


def until(seconds: float, *more: Stop) -> Stop:
    """A Stop that is True ``seconds`` from now, or as soon as any of ``more`` is."""
    deadline = time.monotonic() + seconds
    return lambda: time.monotonic() >= deadline or any(other() for other in more)


def oldest_waiting(storage: Storage) -> dt.datetime | None:
    """When the longest-waiting unpublished change was written (None: nothing waits); one index
    seek per database."""
    oldest: list[dt.datetime] = []
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            first = connection.execute(select(CHANGELOG.c.changed_at).where(CHANGELOG.c.published_at.is_(None))
                                       .order_by(CHANGELOG.c.id).limit(1)).scalar()
        if first is not None:
            oldest.append(first)
    return min(oldest, default=None)


def backlog(storage: Storage) -> list[dict[str, Any]]:
    """Per database: changes waiting, when the oldest was written, and published changes kept."""
    found = []
    waiting_now = CHANGELOG.c.published_at.is_(None)
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            waiting, oldest = connection.execute(select(func.count(), func.min(CHANGELOG.c.changed_at))
                                                 .select_from(CHANGELOG).where(waiting_now)).one()
            kept = connection.execute(select(func.count()).select_from(CHANGELOG).where(~waiting_now)).scalar_one()
        found.append({"database": database, "waiting": waiting, "oldest": oldest, "published_kept": kept})
    return found
