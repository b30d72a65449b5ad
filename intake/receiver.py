"""The Receiver: lines in, metadata stored idempotently, tasks created or bumped.

Every line is either stored (new or corrected metadata, its tasks bumped), recognised as a
duplicate or as older than what is stored, or quarantined with its reason.  Nothing is
acknowledged before it is committed; the caller submits chains for ``report.touched``.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import Enum

import redis
from sqlalchemy import Connection, insert, select, update
from sqlalchemy.exc import IntegrityError

from flows import Flow, MetadataRecord, route
from inputs.events import BadInput, SchemaChange
from inputs.formats import parse_line
from models.cdc import SchemaChangeRecord
from models.orders import QuarantinedInput
from models.sharded import TaskStatus, meta_table, task_table
from models.storage import Storage
from pipeline.dimensions import apply_dimension_changes
from reliability.alarms import raise_alarm

log = logging.getLogger(__name__)

TaskKey = tuple[str, str]  # (order_id, operation_type)


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
    touched: set[TaskKey] = field(default_factory=set)
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: IntakeReport) -> None:
        for name in ("lines", "accepted", "duplicated", "stale", "quarantined", "ignored", "schema_changes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.touched |= other.touched
        for reason, count in other.reasons.items():
            self.reasons[reason] += count

    def summary(self) -> str:
        text = (f"{self.lines} lines: {self.accepted} accepted, {self.duplicated} duplicated, "
                f"{self.stale} older than stored, {self.quarantined} quarantined, {self.ignored} ignored")
        if self.schema_changes:
            text += f", {self.schema_changes} schema changes recorded"
        return text


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def store_record(connection: Connection, shard: int, record: MetadataRecord, now: dt.datetime) -> Effect:
    """Store one metadata record idempotently and say what it changed."""
    meta = meta_table(shard)
    where = (
        (meta.c.order_id == record.order_id)
        & (meta.c.operation_type == record.operation_type)
        & (meta.c.source == record.source)
        & (meta.c.unique_key == record.unique_key)
    )
    for _ in range(2):
        stored = connection.execute(select(meta.c.id, meta.c.content_hash, meta.c.position).where(where)).first()
        if stored is None:
            try:
                with connection.begin_nested():
                    connection.execute(insert(meta).values(
                        order_id=record.order_id, operation_type=record.operation_type,
                        source=record.source, unique_key=record.unique_key, kind=record.kind,
                        content=record.content_json, content_hash=record.content_hash,
                        position=record.position, input_format=record.input_format,
                        received_at=now, updated_at=now,
                    ))
                return Effect.NEW
            except IntegrityError:
                continue  # another writer stored the same key first: compare with theirs
        if record.position < stored.position:
            return Effect.STALE
        if record.content_hash == stored.content_hash:
            if record.position > stored.position:
                # Same content seen later: remember the newer position so an older,
                # different version arriving now is recognised as stale.
                connection.execute(update(meta).where(meta.c.id == stored.id).values(position=record.position))
            return Effect.DUPLICATE
        connection.execute(update(meta).where(meta.c.id == stored.id).values(
            kind=record.kind, content=record.content_json, content_hash=record.content_hash,
            position=record.position, input_format=record.input_format, updated_at=now,
        ))
        return Effect.CORRECTED
    raise RuntimeError(f"metadata key of {record.order_id} kept changing under concurrent writers")


def bump_task(connection: Connection, shard: int, order_id: str, operation: str, now: dt.datetime) -> None:
    """Create the task, or give it a new version and make it due now (new data revives it)."""
    task = task_table(shard)
    where = (task.c.order_id == order_id) & (task.c.operation_type == operation)
    changes = dict(version=task.c.version + 1, status=TaskStatus.PENDING, attempts=0,
                   next_run_at=now, updated_at=now)
    if connection.execute(update(task).where(where).values(**changes)).rowcount:
        return
    try:
        with connection.begin_nested():
            connection.execute(insert(task).values(
                order_id=order_id, operation_type=operation, status=TaskStatus.PENDING, version=1,
                done_version=0, attempts=0, next_run_at=now, created_at=now, updated_at=now,
            ))
    except IntegrityError:
        connection.execute(update(task).where(where).values(**changes))


def quarantine(connection: Connection, input_format: str, raw: str, error: BadInput, now: dt.datetime) -> None:
    connection.execute(insert(QuarantinedInput).values(
        received_at=now, input_format=input_format, order_id=error.order_id,
        reason=error.reason[:512], raw=raw,
    ))


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

    Raises only for infrastructure faults (database, Redis); bad lines are quarantined.
    """
    report = IntakeReport()
    parsed = [_parse(flow, input_format, raw, client) for raw in lines if raw.strip()]
    by_database: dict[int, list[tuple[_Line, MetadataRecord | None]]] = defaultdict(list)
    for line in parsed:
        if line.error is not None:
            order_id = line.error.order_id
            by_database[storage.database_of(order_id) if order_id else 0].append((line, None))
        for routed in line.records:
            by_database[storage.database_of(routed.order_id)].append((line, routed))
    now = utcnow()
    for database, entries in sorted(by_database.items()):
        with storage.shard_engine(database).begin() as connection:
            for line, record in entries:
                if record is None:
                    assert line.error is not None
                    quarantine(connection, input_format, line.raw, line.error, now)
                    continue
                shard = storage.shard_of(record.order_id)
                effect = store_record(connection, shard, record, now)
                line.effects.append(effect)
                if effect in (Effect.NEW, Effect.CORRECTED):
                    bump_task(connection, shard, record.order_id, record.operation_type, now)
                    report.touched.add((record.order_id, record.operation_type))
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


def record_schema_changes(storage: Storage, client: redis.Redis, input_format: str,
                          changes: list[SchemaChange], now: dt.datetime) -> None:
    """Keep each DDL on a followed table (shard database 0) and alarm it: a column added,
    dropped or retyped at the source may need the flow's declaration changed."""
    with storage.shard_engine(0).begin() as connection:
        connection.execute(insert(SchemaChangeRecord), [
            dict(received_at=now, input_format=input_format, source_database=change.database,
                 source_table=change.table, position=change.position, sql=change.sql) for change in changes])
    for change in changes:
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
