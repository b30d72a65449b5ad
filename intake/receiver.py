"""The Receiver: lines in, metadata stored idempotently, tasks created or bumped.

Every line is either stored (new or corrected metadata, its tasks bumped), recognised as a
duplicate or as older than what is stored, or quarantined with its reason.  Nothing is
acknowledged before it is committed; the caller submits chains for ``report.touched``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import cast

import redis
from sqlalchemy import Connection, Table, select, update
from sqlalchemy.exc import DBAPIError

from flows import Flow, MetadataRecord, route
from inputs.events import BadInput, SchemaChange
from inputs.formats import parse_line
from models.cdc import SchemaChangeRecord
from models.orders import QuarantinedInput
from models.sharded import TaskStatus, meta_table, task_table
from models.storage import Storage
from models.writes import insert_if_absent
from pipeline.dimensions import apply_dimension_changes
from reliability.alarms import raise_alarm
from reliability.transient import CONTENTION_ATTEMPTS, RetryCount, is_contention, retry_on_contention

log = logging.getLogger(__name__)

TaskKey = tuple[str, str]  # (order_id, operation_type)


QUARANTINE = cast(Table, QuarantinedInput.__table__)


class Effect(Enum):
    NEW = "new"
    CORRECTED = "corrected"
    DUPLICATE = "duplicate"
    STALE = "stale"


@dataclass
class IntakeReport:
    lines: int = 0
    accepted: int = 0
    duplicated: int = 0
    stale: int = 0
    quarantined: int = 0
    #: Tombstones, and DDL on tables no flow follows: valid, but nothing to store.
    ignored: int = 0
    #: DDL on followed tables: recorded and alarmed.
    schema_changes: int = 0
    #: Transactions run again because the database rolled them back for lock contention.
    retries: int = 0
    touched: set[TaskKey] = field(default_factory=set)
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: IntakeReport) -> None:
        for name in ("lines", "accepted", "duplicated", "stale", "quarantined", "ignored", "schema_changes", "retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.touched |= other.touched
        for reason, count in other.reasons.items():
            self.reasons[reason] += count

    def summary(self) -> str:
        text = (f"{self.lines} lines: {self.accepted} accepted, {self.duplicated} duplicated, "
                f"{self.stale} older than stored, {self.quarantined} quarantined, {self.ignored} ignored")
        if self.schema_changes:
            text += f", {self.schema_changes} schema changes recorded"
        return text + f"; {self.retries} transactions retried after lock contention"


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


#: Read-compare-write rounds of one metadata key before concurrent writers are reported.
STORE_ROUNDS = 8


class KeyContention(RuntimeError):
    """One metadata key kept changing under concurrent writers: lock contention by other means."""


def _contended(error: Exception) -> bool:
    return isinstance(error, KeyContention) or (isinstance(error, DBAPIError) and is_contention(error))


def store_record(connection: Connection, shard: int, record: MetadataRecord, now: dt.datetime) -> Effect:
    """Store one metadata record idempotently and say what it changed.

    Every write is conditional on what was read (compare-and-set), so a concurrent writer of the
    same key (the receive worker, the binlog tail, a snapshot) can never have an older record
    overwrite the newer one it stored between our read and our write: we read again and decide
    against theirs."""
    meta = meta_table(shard)
    where = (
        (meta.c.order_id == record.order_id)
        & (meta.c.operation_type == record.operation_type)
        & (meta.c.source == record.source)
        & (meta.c.unique_key == record.unique_key)
    )
    for _ in range(STORE_ROUNDS):
        stored = connection.execute(select(meta.c.id, meta.c.content_hash, meta.c.position).where(where)).first()
        if stored is None:
            if insert_if_absent(connection, meta, dict(
                order_id=record.order_id, operation_type=record.operation_type,
                source=record.source, unique_key=record.unique_key, kind=record.kind,
                content=record.content_json, content_hash=record.content_hash,
                position=record.position, input_format=record.input_format,
                received_at=now, updated_at=now,
            )):
                return Effect.NEW
            continue  # another writer stored the same key first: compare with theirs
        if record.position < stored.position:
            return Effect.STALE
        if record.content_hash == stored.content_hash:
            if record.position == stored.position:
                return Effect.DUPLICATE
            # Same content seen later: remember the newer position so an older, different
            # version arriving now is recognised as stale.
            if connection.execute(update(meta).where((meta.c.id == stored.id) & (meta.c.position < record.position))
                                  .values(position=record.position)).rowcount:
                return Effect.DUPLICATE
            continue
        if connection.execute(update(meta).where(
            (meta.c.id == stored.id) & (meta.c.position == stored.position)
            & (meta.c.content_hash == stored.content_hash)
        ).values(
            kind=record.kind, content=record.content_json, content_hash=record.content_hash,
            position=record.position, input_format=record.input_format, updated_at=now,
        )).rowcount:
            return Effect.CORRECTED
    raise KeyContention(f"metadata key of {record.order_id} kept changing under {STORE_ROUNDS} concurrent writes")


def bump_task(connection: Connection, shard: int, order_id: str, operation: str, now: dt.datetime) -> None:
    """Create the task, or give it a new version and make it due now (new data revives it)."""
    task = task_table(shard)
    where = (task.c.order_id == order_id) & (task.c.operation_type == operation)
    changes = dict(version=task.c.version + 1, status=TaskStatus.PENDING, attempts=0,
                   next_run_at=now, updated_at=now)
    if connection.execute(update(task).where(where).values(**changes)).rowcount:
        return
    if not insert_if_absent(connection, task, dict(
        order_id=order_id, operation_type=operation, status=TaskStatus.PENDING, version=1,
        done_version=0, attempts=0, next_run_at=now, created_at=now, updated_at=now,
    )):
        connection.execute(update(task).where(where).values(**changes))


def quarantine(connection: Connection, input_format: str, raw: str, error: BadInput, now: dt.datetime) -> bool:
    """Keep ``raw`` with the reason it was refused; True when it was not kept already (a replay of
    the same input, say a retried receive or a re-read file, keeps one row)."""
    return insert_if_absent(connection, QUARANTINE, dict(
        received_at=now, input_format=input_format, order_id=error.order_id,
        reason=error.reason[:512], raw=raw, raw_hash=quarantine_key(input_format, raw),
    ))


def quarantine_key(input_format: str, raw: str) -> str:
    """The natural key of a quarantined input: its format and its exact text."""
    return hashlib.sha1(f"{input_format}\n{raw}".encode()).hexdigest()


@dataclass
class _Line:
    raw: str
    records: list[MetadataRecord] = field(default_factory=list)
    error: BadInput | None = None
    effects: list[Effect] = field(default_factory=list)
    schema_changes: list[SchemaChange] = field(default_factory=list)
    ignored: bool = False


def _parse(flow: Flow, input_format: str, raw: str, client: redis.Redis) -> _Line:
    line = _Line(raw)
    try:
        parsed = parse_line(input_format, raw)
        routed = [route(flow, item, input_format) for item in parsed]
    except BadInput as error:
        line.error = error
        return line
    for part in routed:
        line.records += part.records
        line.schema_changes += part.schema_changes
        if part.dimensions:
            apply_dimension_changes(client, part.dimensions)
            line.effects.append(Effect.NEW)
    line.ignored = not line.records and not line.effects and not line.schema_changes
    return line


def accept_lines(storage: Storage, client: redis.Redis, flow: Flow, input_format: str,
                 lines: Iterable[str]) -> IntakeReport:
    """Parse, route and store a batch of lines, one transaction per shard database.

    Lock contention never fails the batch: a transaction the database rolled back is run again
    whole; if it still cannot commit, each line gets a transaction of its own, and a line that
    still cannot be stored is quarantined with that reason.  Raises only for infrastructure
    faults (database, Redis unreachable); bad lines are quarantined.
    """
    report = IntakeReport()
    parsed = [_parse(flow, input_format, raw, client) for raw in lines if raw.strip()]
    by_database: dict[int, list[_Entry]] = defaultdict(list)
    for line in parsed:
        if line.error is not None:
            order_id = line.error.order_id
            by_database[storage.database_of(order_id) if order_id else 0].append((line, None))
        for routed in line.records:
            by_database[storage.database_of(routed.order_id)].append((line, routed))
    now = utcnow()
    for database, entries in sorted(by_database.items()):
        _store_database(storage, database, input_format, entries, now, report)
    changes = [change for line in parsed for change in line.schema_changes]
    if changes:
        record_schema_changes(storage, client, input_format, changes, now)
    for line in parsed:
        _count(report, line)
    if report.quarantined >= storage.settings.quarantine_alarm_lines:
        top = sorted(report.reasons.items(), key=lambda kv: -kv[1])[:3]
        raise_alarm(client, "quarantine_burst", f"{report.quarantined} of {report.lines} {input_format} lines "
                    f"quarantined in one batch", reasons=dict(top))
    return report


SCHEMA_CHANGES = cast(Table, SchemaChangeRecord.__table__)
_Entry = tuple["_Line", MetadataRecord | None]
_Stored = tuple["_Line", MetadataRecord, Effect]


def _lock_order(storage: Storage, record: MetadataRecord) -> tuple[int, str, str, str, str]:
    """Every writer takes metadata row locks, then task row locks, in this order (shard, order,
    operation, source, key), so two intake transactions never wait on each other in a cycle."""
    return (storage.shard_of(record.order_id), record.order_id, record.operation_type, record.source,
            record.unique_key)


def _write_entries(storage: Storage, database: int, input_format: str, entries: list[_Entry],
                   now: dt.datetime) -> list[_Stored]:
    """One transaction: the records in lock order, then the tasks they bump, then quarantine."""
    records = sorted(((line, record) for line, record in entries if record is not None),
                     key=lambda entry: _lock_order(storage, entry[1]))
    effects: list[_Stored] = []
    touched: set[tuple[int, str, str]] = set()
    with storage.shard_engine(database).begin() as connection:
        for line, stored in records:
            shard = storage.shard_of(stored.order_id)
            effect = store_record(connection, shard, stored, now)
            effects.append((line, stored, effect))
            if effect in (Effect.NEW, Effect.CORRECTED):
                touched.add((shard, stored.order_id, stored.operation_type))
        for shard, order_id, operation in sorted(touched):
            bump_task(connection, shard, order_id, operation, now)
        for line, record in entries:
            if record is None:
                assert line.error is not None
                quarantine(connection, input_format, line.raw, line.error, now)
    return effects


def _store_database(storage: Storage, database: int, input_format: str, entries: list[_Entry],
                    now: dt.datetime, report: IntakeReport) -> None:
    count = RetryCount()
    try:
        effects = retry_on_contention(lambda: _write_entries(storage, database, input_format, entries, now), count)
    except (DBAPIError, KeyContention) as error:
        if not _contended(error):
            raise
        log.warning("a batch for shard database %d met lock contention %d times; storing its lines one by one",
                    database, count.retries + 1)
        effects = _store_one_by_one(storage, database, input_format, entries, now, count)
    report.retries += count.retries
    for line, record, effect in effects:
        line.effects.append(effect)
        if effect in (Effect.NEW, Effect.CORRECTED):
            report.touched.add((record.order_id, record.operation_type))


def _store_one_by_one(storage: Storage, database: int, input_format: str, entries: list[_Entry],
                      now: dt.datetime, count: RetryCount) -> list[_Stored]:
    """Each line's part in a transaction of its own; a line that still meets contention after its
    retries is quarantined with that reason and the others go on."""
    by_line: dict[int, list[_Entry]] = defaultdict(list)
    for entry in entries:
        by_line[id(entry[0])].append(entry)
    effects: list[_Stored] = []
    for part in by_line.values():
        line = part[0][0]

        def alone(part: list[_Entry] = part) -> list[_Stored]:
            return _write_entries(storage, database, input_format, part, now)

        def kept(line: _Line = line) -> list[_Stored]:
            return _write_entries(storage, database, input_format, [(line, None)], now)

        try:
            effects += retry_on_contention(alone, count)
        except (DBAPIError, KeyContention) as error:
            if not _contended(error):
                raise
            order_id = next((record.order_id for _, record in part if record is not None), None)
            cause = error.orig if isinstance(error, DBAPIError) else error
            line.error = BadInput(f"could not be stored: lock contention after {CONTENTION_ATTEMPTS} attempts "
                                  f"({type(cause).__name__}: {cause})", order_id)
            retry_on_contention(kept, count)
    return effects


def record_schema_changes(storage: Storage, client: redis.Redis, input_format: str,
                          changes: list[SchemaChange], now: dt.datetime) -> None:
    """Keep each DDL on a followed table (shard database 0) and alarm it: a column added,
    dropped or retyped at the source may need the flow's declaration changed.  A replay (a
    binlog re-read after a crash, a re-ingested file) finds the change kept already, by its
    table and source position, and neither keeps nor alarms it twice."""
    def work() -> list[SchemaChange]:
        with storage.shard_engine(0).begin() as connection:
            return [change for change in changes if insert_if_absent(connection, SCHEMA_CHANGES, dict(
                received_at=now, input_format=input_format, source_database=change.database,
                source_table=change.table, position=change.position, sql=change.sql))]
    for change in retry_on_contention(work):
        raise_alarm(client, "schema_change", f"DDL on followed table {change.database}.{change.table}: "
                    f"{change.sql[:200]}", position=change.position, input_format=input_format)


def _count(report: IntakeReport, line: _Line) -> None:
    report.lines += 1
    report.schema_changes += len(line.schema_changes)
    if line.error is not None:
        report.quarantined += 1
        report.reasons[line.error.reason] += 1
    elif line.ignored:
        report.ignored += 1
    elif line.schema_changes and not line.effects:
        return  # a DDL line: counted as a schema change above
    elif {Effect.NEW, Effect.CORRECTED} & set(line.effects):
        report.accepted += 1
    elif Effect.STALE in line.effects:
        report.stale += 1
    else:
        report.duplicated += 1
