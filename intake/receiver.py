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
from functools import lru_cache
from typing import Any, cast

import redis
from sqlalchemy import Connection, Table
from sqlalchemy.exc import DBAPIError

from dimensions.lookup import Verdict, put_dimension_changes
from flows import Flow, MetadataRecord, Route, route
from inputs.events import BadInput, SchemaChange
from inputs.formats import parse_line
from inputs.positions import compare, decode, encode
from models.cdc import SchemaChangeRecord
from models.driver_sql import (
    driver_time,
    marks,
    run_together,
    run_together_unless_present,
    statement,
    union_all_of,
)
from models.driver_sql import insert_if_absent as driver_insert_if_absent
from models.orders import QuarantinedInput
from models.sharded import TaskStatus
from models.shards import meta_table_name, task_table_name
from models.storage import Storage
from models.writes import insert_if_absent
from reliability.alarms import raise_alarm
from reliability.counters import count
from reliability.transient import CONTENTION_ATTEMPTS, RetryCount, is_contention, retry_on_contention

log = logging.getLogger(__name__)

TaskKey = tuple[str, str]  # (order_id, operation_type)


QUARANTINE = cast(Table, QuarantinedInput.__table__)
#: The longest order id the quarantine (and every order table) keeps.
ORDER_ID_LENGTH = 64


class Effect(Enum):
    NEW = "new"
    CORRECTED = "corrected"
    DUPLICATE = "duplicate"
    STALE = "stale"
    #: Newer, different, but the same in everything its operation reads (``SourceTable.reads``):
    #: stored, and the task is not run again.
    REFRESHED = "refreshed"
    #: Not newer by event time, different content, and no source position to decide: kept in
    #: quarantine with the reason, counted and alarmed instead of dropped.
    AMBIGUOUS = "ambiguous"


@dataclass
class IntakeReport:
    lines: int = 0
    accepted: int = 0
    duplicated: int = 0
    stale: int = 0
    quarantined: int = 0
    #: Changes that could not be ordered against what is stored (``Effect.AMBIGUOUS``).
    ambiguous: int = 0
    #: Valid lines with nothing to store: tombstones, transaction markers, heartbeats,
    #: rows-query entries, tables and databases no flow follows.  By kind in ``ignored_kinds``.
    ignored: int = 0
    #: DDL on followed tables: recorded and alarmed.
    schema_changes: int = 0
    #: Transactions run again because the database rolled them back for lock contention.
    retries: int = 0
    touched: set[TaskKey] = field(default_factory=set)
    reasons: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    #: The verdict of each non-blank line, in input order: (verdict, reason or None), the
    #: verdict one of ``VERDICTS`` (what the HTTP receiver answers per item).
    outcomes: list[tuple[str, str | None]] = field(default_factory=list)
    ignored_kinds: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def add(self, other: IntakeReport) -> None:
        for name in ("lines", "accepted", "duplicated", "stale", "quarantined", "ambiguous", "ignored",
                     "schema_changes", "retries"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.touched |= other.touched
        self.outcomes += other.outcomes
        for reason, n in other.reasons.items():
            self.reasons[reason] += n
        for kind, n in other.ignored_kinds.items():
            self.ignored_kinds[kind] += n

    def summary(self) -> str:
        text = (f"{self.lines} lines: {self.accepted} accepted, {self.duplicated} duplicated, "
                f"{self.stale} older than stored, {self.quarantined} quarantined")
        if self.ambiguous:
            text += f", {self.ambiguous} ambiguous (kept in quarantine)"
        text += f", {self.ignored} ignored"
        if self.ignored_kinds:
            text += " (" + ", ".join(f"{n} {kind}" for kind, n in sorted(self.ignored_kinds.items())) + ")"
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


#: What a batch read found for a metadata key: (id, content_hash, position), or None when absent.
Stored = tuple[int, str, str] | None
def read_stored(connection: Connection, keys: list[tuple[int, tuple[str, str, str, str]]]) -> list[Stored]:
    """The stored row of each (shard, metadata key), in a few round trips: one indexed select per
    metadata table naming its keys (KEYS_PER_SELECT at most), joined with UNION ALL.  Per table,
    not per key: MySQL opens a table once for every time a statement names it, and a batch names
    each table for several keys, which filled the server's table cache with copies and evicted
    tables the next batch needed."""
    found: list[Stored] = [None] * len(keys)
    at: dict[tuple[int, tuple[str, str, str, str]], list[int]] = defaultdict(list)
    for n, key in enumerate(keys):
        at[key].append(n)
    by_shard: dict[int, list[tuple[str, str, str, str]]] = defaultdict(list)
    for shard, meta_key in at:
        by_shard[shard].append(meta_key)
    terms = [(_read_stored_of(len(part)), {"meta": meta_table_name(shard), "shard": str(shard)},
              tuple(v for key in part for v in key))
             for shard, shard_keys in by_shard.items()
             for part in (shard_keys[i:i + KEYS_PER_SELECT] for i in range(0, len(shard_keys), KEYS_PER_SELECT))]
    for row in union_all_of(connection, terms):
        for n in at.get((row.shard, (row.order_id, row.operation_type, row.source, row.unique_key)), ()):
            found[n] = (row.id, row.content_hash, row.position)
    return found


#: Keys one select names at most: a bounded OR list stays an index range scan on MySQL
#: (``range_optimizer_max_mem_size``) and within SQLite's expression depth.
KEYS_PER_SELECT = 50


@lru_cache(maxsize=KEYS_PER_SELECT)
def _read_stored_of(count: int) -> str:
    return _READ_STORED_KEYS + " OR ".join([_KEY_IS] * count)


def store_record(connection: Connection, shard: int, record: MetadataRecord, now: dt.datetime,
                 known: list[Stored] | None = None) -> Effect:
    """Store one metadata record idempotently and say what it changed.

    The record replaces the stored one only when it is newer (``inputs.positions.compare``): a
    correction, or only a refresh when it differs in nothing its operation reads
    (``SourceTable.reads``; the task is not run again for it).
    Judged by a source position (GTID, binlog), an older record is stale.  Judged by event time
    alone, a record that is not newer but differs is ambiguous, never dropped in silence: a
    statement that waited on a lock started earlier and committed later.

    Every write is conditional on what was read (compare-and-set), so a concurrent writer of the
    same key (the receive worker, the binlog tail, a snapshot) can never have an older record
    overwrite the newer one it stored between our read and our write: we read again and decide
    against theirs.

    ``known`` holds what a batch read (``read_stored``) found for the key; the first round
    trusts it instead of reading, and a write it made stale fails its compare-and-set and reads
    again."""
    meta = meta_table_name(shard)
    key = _key(record)
    for _ in range(STORE_ROUNDS):
        stored: Any = known.pop() if known else connection.exec_driver_sql(
            statement(connection, _READ_STORED, meta=meta), key).first()
        if stored is None:
            if driver_insert_if_absent(connection, meta, dict(
                order_id=record.order_id, operation_type=record.operation_type,
                source=record.source, unique_key=record.unique_key, kind=record.kind,
                content=record.content_json, content_hash=record.content_hash,
                position=record.position_text, input_format=record.input_format,
                received_at=driver_time(connection, now), updated_at=driver_time(connection, now),
            )):
                return Effect.NEW
            continue  # another writer stored the same key first: compare with theirs
        stored_id, stored_hash, stored_position = stored
        effect, write = judge(record, stored_hash, stored_position)
        unchanged = (stored_id, stored_position, stored_hash)
        if write is None:
            return effect
        parameters: tuple[Any, ...]
        if write == ADVANCE:
            sql, parameters = _ADVANCE, (record.position_text, *unchanged)
        else:
            sql, parameters = _CORRECT, (record.kind, record.content_json, record.content_hash, record.position_text,
                                         record.input_format, driver_time(connection, now), *unchanged)
        if connection.exec_driver_sql(statement(connection, sql, meta=meta), parameters).rowcount:
            return effect
    raise KeyContention(f"metadata key of {record.order_id} kept changing under {STORE_ROUNDS} concurrent writes")


#: What ``judge`` asks to write: the newer position only, or the record.
ADVANCE, REPLACE = "advance", "replace"


def judge(record: MetadataRecord, stored_hash: str, stored_position: str) -> tuple[Effect, str | None]:
    """What ``record`` does to the stored version of its key (its hash and position): the effect,
    and what to write (None, ADVANCE or REPLACE)."""
    order, basis = compare(record.position, decode(stored_position))
    if record.same_content(stored_hash):
        # Same content seen later: remember the newer position so an older, different version
        # arriving now is recognised as stale.
        return Effect.DUPLICATE, (ADVANCE if order > 0 else None)
    if order < 0 or (order == 0 and not basis.exact):
        return (Effect.STALE if basis.exact else Effect.AMBIGUOUS), None
    return (Effect.REFRESHED if record.reads_as(stored_hash) else Effect.CORRECTED), REPLACE


_KEY_IS = "(order_id = ? AND operation_type = ? AND source = ? AND unique_key = ?)"
_READ_STORED = "SELECT id, content_hash, position FROM {meta} WHERE " + _KEY_IS
_READ_STORED_KEYS = ("SELECT {shard} AS shard, id, order_id, operation_type, source, unique_key, content_hash, "
                     "position FROM {meta} WHERE ")
_UNCHANGED = "WHERE id = ? AND position = ? AND content_hash = ?"
_ADVANCE = "UPDATE {meta} SET position = ? " + _UNCHANGED
_CORRECT = ("UPDATE {meta} SET kind = ?, content = ?, content_hash = ?, position = ?, input_format = ?, "
            "updated_at = ? " + _UNCHANGED)


def bump_task(connection: Connection, shard: int, order_id: str, operation: str, now: dt.datetime) -> None:
    """Create the task, or give it a new version and make it due now (new data revives it)."""
    bump_tasks(connection, [(shard, order_id, operation)], now)


def store_records(connection: Connection, records: list[tuple[int, MetadataRecord]],
                  now: dt.datetime) -> list[Effect]:
    """Store ``(shard, record)`` pairs, given in lock order (the records of one key in the order
    they arrived), and say what each changed: what ``store_record`` does one by one, in a few
    statements per shard table.

    What is stored for every key is read at once (``read_stored``).  Each key's records are
    judged in memory, one after the other, against what is stored and then against the one
    before (``judge``), and only the outcome is written: keys found absent in one multi-row
    INSERT per table, keys found stored in one compare-and-set each.  A key a concurrent writer
    got to first (a row inserted since the read, or changed) has all its records judged again,
    one by one by ``store_record``, against what is there now."""
    keys = [(shard, _key(r)) for shard, r in records]
    first_read = dict(zip(keys, read_stored(connection, keys), strict=True))
    effects: list[Effect | None] = [None] * len(records)
    by_key: dict[tuple[int, tuple[str, str, str, str]], list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        by_key[key].append(index)
    by_shard: dict[int, list[tuple[tuple[str, str, str, str], list[int]]]] = defaultdict(list)
    for (shard, meta_key), indexes in by_key.items():
        by_shard[shard].append((meta_key, indexes))
    # Shard by shard in lock order, as store_record one by one would: the new keys, then the
    # stored ones; then whatever a concurrent writer got to first (on MySQL/MariaDB after every
    # shard's writes, which go together; elsewhere after each shard's).
    mysql = connection.dialect.name in ("mysql", "mariadb")
    writes: list[tuple[str, tuple[Any, ...]]] = []  # (on MySQL/MariaDB, sent together at the end)
    written: list[tuple[int, list[int]]] = []  # the shard and the records of each write
    for shard, keyed in by_shard.items():
        absent: list[tuple[MetadataRecord, str, list[int]]] = []
        known: list[tuple[Stored, _Outcome, list[int]]] = []
        for meta_key, indexes in keyed:
            stored = first_read[(shard, meta_key)]
            outcome = _judge_in_order(stored, [records[i][1] for i in indexes])
            for i, effect in zip(indexes, outcome.effects, strict=True):
                effects[i] = effect
            if stored is None:
                assert outcome.content is not None
                absent.append((outcome.content, outcome.position, indexes))
            elif outcome.changed:
                known.append((stored, outcome, indexes))
        if mysql:
            if absent:
                writes.append(_insert_new_of(connection, shard, [(r, position) for r, position, _ in absent], now))
                written.append((shard, [i for _, _, indexes in absent for i in indexes]))
            for stored, outcome, indexes in known:
                writes.append(_write_known_of(connection, shard, stored, outcome, now))
                written.append((shard, indexes))
            continue
        inserted = insert_new(connection, shard, [(record, position) for record, position, _ in absent], now)
        again = [indexes for record, _, indexes in absent if _key(record) not in inserted]
        again += [indexes for stored, outcome, indexes in known
                  if not _write_known(connection, shard, stored, outcome, now)]
        for i in sorted(i for indexes in again for i in indexes):
            effects[i] = store_record(connection, shard, records[i][1], now)
    if writes:
        # A multi-row INSERT that met a key another writer stored since the read failed whole (its
        # count is None), a compare-and-set that found the key changed matched nothing (0): their
        # records are judged again, one by one, against what is there now.
        again_at = sorted((i, shard) for (shard, indexes), count in zip(
            written, run_together_unless_present(connection, writes), strict=True) if not count for i in indexes)
        for i, shard in again_at:
            effects[i] = store_record(connection, shard, records[i][1], now)
    return cast(list[Effect], effects)


def _key(record: MetadataRecord) -> tuple[str, str, str, str]:
    return (record.order_id, record.operation_type, record.source, record.unique_key)


@dataclass
class _Outcome:
    """A key's records judged in order: the effect of each, and what is stored after them (the
    record whose content it is, None while it is the stored one, and the position)."""

    effects: list[Effect]
    content: MetadataRecord | None
    position: str
    changed: bool


def _judge_in_order(stored: Stored, records: list[MetadataRecord]) -> _Outcome:
    content: MetadataRecord | None = None
    if stored is None:
        content = records[0]
        state_hash, position, effects = content.content_hash, content.position_text, [Effect.NEW]
        records = records[1:]
    else:
        _, state_hash, position = stored
        effects = []
    changed = False
    for record in records:
        effect, write = judge(record, state_hash, position)
        effects.append(effect)
        if write == REPLACE:
            content, state_hash = record, record.content_hash
        if write is not None:
            position, changed = record.position_text, True
    return _Outcome(effects, content, position, changed)


def _write_known(connection: Connection, shard: int, stored: Stored, outcome: _Outcome, now: dt.datetime) -> bool:
    """Write a stored key's outcome if the key still holds what was read; False when it does not."""
    return bool(connection.exec_driver_sql(*_write_known_of(connection, shard, stored, outcome, now)).rowcount)


def _write_known_of(connection: Connection, shard: int, stored: Stored, outcome: _Outcome,
                    now: dt.datetime) -> tuple[str, tuple[Any, ...]]:
    """The compare-and-set ``_write_known`` sends, and its parameters."""
    assert stored is not None
    unchanged = (stored[0], stored[2], stored[1])
    record = outcome.content
    parameters: tuple[Any, ...]
    if record is None:
        sql, parameters = _ADVANCE, (outcome.position, *unchanged)
    else:
        sql, parameters = _CORRECT, (record.kind, record.content_json, record.content_hash, outcome.position,
                                     record.input_format, driver_time(connection, now), *unchanged)
    return statement(connection, sql, meta=meta_table_name(shard)), parameters


_META_COLUMNS = ("order_id", "operation_type", "source", "unique_key", "kind", "content", "content_hash",
                 "position", "input_format", "received_at", "updated_at")


def insert_new(connection: Connection, shard: int, records: list[tuple[MetadataRecord, str]],
               now: dt.datetime) -> set[tuple[str, str, str, str]]:
    """Insert ``records`` (keys found absent; each with the position to store) into their
    metadata table in one statement, skipping keys another writer inserted since the read; the
    keys it inserted.  SQLite and PostgreSQL (``ON CONFLICT DO NOTHING RETURNING``); on
    MySQL/MariaDB ``store_records`` sends ``_insert_new_of`` together with its other writes."""
    if not records:
        return set()
    sql, parameters = _insert_new_of(connection, shard, records, now)
    returned = connection.exec_driver_sql(
        sql + " ON CONFLICT DO NOTHING RETURNING order_id, operation_type, source, unique_key", parameters)
    return {tuple(row) for row in returned}  # type: ignore[misc]


def _insert_new_of(connection: Connection, shard: int, records: list[tuple[MetadataRecord, str]],
                   now: dt.datetime) -> tuple[str, tuple[Any, ...]]:
    """The multi-row INSERT ``insert_new`` sends (without its conflict clause), and its parameters."""
    at = driver_time(connection, now)
    values = ", ".join([f"({marks(connection, len(_META_COLUMNS))})"] * len(records))
    parameters = tuple(value for r, position in records
                       for value in (r.order_id, r.operation_type, r.source, r.unique_key, r.kind, r.content_json,
                                     r.content_hash, position, r.input_format, at, at))
    return f"INSERT INTO {meta_table_name(shard)} ({', '.join(_META_COLUMNS)}) VALUES {values}", parameters


def bump_tasks(connection: Connection, tasks: list[tuple[int, str, str]], now: dt.datetime) -> None:
    """``bump_task`` for each (shard, order, operation), given in lock order: one upsert per task
    table, which creates the missing tasks and gives the others a new version, due now.  The
    upserts go together (``run_together``: on MySQL/MariaDB a few round trips for a batch's
    hundreds of task tables)."""
    by_shard: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for shard, order_id, operation in tasks:
        by_shard[shard].append((order_id, operation))
    at = driver_time(connection, now)
    mysql = connection.dialect.name in ("mysql", "mariadb")
    upserts: list[tuple[str, tuple[Any, ...]]] = []
    for shard, keys in by_shard.items():
        table = task_table_name(shard)
        values = ", ".join([f"({marks(connection, 9)})"] * len(keys))
        if mysql:
            conflict = ("ON DUPLICATE KEY UPDATE version = version + 1, status = VALUES(status), attempts = 0, "
                        "next_run_at = VALUES(next_run_at), updated_at = VALUES(updated_at)")
        else:
            conflict = (f"ON CONFLICT (order_id, operation_type) DO UPDATE SET version = {table}.version + 1, "
                        "status = excluded.status, attempts = 0, next_run_at = excluded.next_run_at, "
                        "updated_at = excluded.updated_at")
        upserts.append((
            f"INSERT INTO {table} (order_id, operation_type, status, version, done_version, attempts, next_run_at, "
            f"created_at, updated_at) VALUES {values} {conflict}",
            tuple(value for order_id, operation in keys
                  for value in (order_id, operation, TaskStatus.PENDING, 1, 0, 0, at, at, at))))
    run_together(connection, upserts)


def quarantine(connection: Connection, input_format: str, raw: str, error: BadInput, now: dt.datetime) -> bool:
    """Keep ``raw`` with the reason it was refused; True when it was not kept already (a replay of
    the same input, say a retried receive or a re-read file, keeps one row)."""
    order_id = error.order_id if error.order_id and len(error.order_id) <= ORDER_ID_LENGTH else None
    return insert_if_absent(connection, QUARANTINE, dict(
        received_at=now, input_format=input_format, order_id=order_id,
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
    #: Why a valid line stores nothing (set only when it stores nothing).
    ignored: list[str] = field(default_factory=list)


def _parse(flow: Flow, route_: Route, input_format: str, raw: str, client: redis.Redis) -> _Line:
    line = _Line(raw)
    try:
        parsed = parse_line(input_format, raw)
        routed = [route(flow, item, input_format, route_) for item in parsed]
    except BadInput as error:
        line.error = error
        return line
    except Exception as error:  # noqa: BLE001 - a reader's bug must not lose the other lines of the batch
        log.exception("reading a %s line failed", input_format)
        line.error = BadInput(f"could not be read ({type(error).__name__}: {error})")
        return line
    ignored: list[str] = []
    for part in routed:
        line.records += part.records
        line.schema_changes += part.schema_changes
        ignored += part.ignored
        if part.dimensions:
            for change, verdict in zip(part.dimensions, put_dimension_changes(client, part.dimensions), strict=True):
                line.effects.append(_DIMENSION_EFFECTS[verdict])
                if verdict is Verdict.AMBIGUOUS and line.error is None:
                    line.error = BadInput(
                        f"ambiguous order: {change.dimension} {change.key} at {change.position.describe()} is not "
                        f"newer by event time than the stored entry and differs from it; with no GTID or binlog "
                        f"position to order them it was kept here, not applied")
    if not line.records and not line.effects and not line.schema_changes:
        line.ignored = ignored or ["empty"]
    return line


_DIMENSION_EFFECTS = {Verdict.WRITTEN: Effect.NEW, Verdict.OLDER: Effect.STALE, Verdict.SAME: Effect.DUPLICATE,
                      Verdict.AMBIGUOUS: Effect.AMBIGUOUS}


def route_of(storage: Storage) -> Route:
    """How this deployment reads its sources (``TDC_SOURCE_TIMEZONE``, ``TDC_SOURCE_DATABASES``)."""
    return Route(zone=storage.settings.source_zone, databases=storage.settings.source_databases)


def accept_lines(storage: Storage, client: redis.Redis, flow: Flow, input_format: str,
                 lines: Iterable[str]) -> IntakeReport:
    """Parse, route and store a batch of lines, one transaction per shard database.

    Lock contention never fails the batch: a transaction the database rolled back is run again
    whole; if it still cannot commit, each line gets a transaction of its own, and a line that
    still cannot be stored is quarantined with that reason.  Raises only for infrastructure
    faults (database, Redis unreachable); bad lines are quarantined.
    """
    report = IntakeReport()
    route_ = route_of(storage)
    parsed = [_parse(flow, route_, input_format, raw, client) for raw in lines if raw.strip()]
    by_database: dict[int, list[_Entry]] = defaultdict(list)
    for line in parsed:
        if line.error is not None:
            order_id = line.error.order_id
            by_database[storage.database_of(order_id) if order_id else 0].append((line, None))
        for routed in line.records:
            by_database[storage.database_of(routed.order_id)].append((line, routed))
    now = utcnow()
    for stored in storage.each_part(lambda database: _store_database(storage, database, input_format,
                                                                     by_database[database], now),
                                    sorted(by_database)):
        _apply(report, *stored)
    changes = [change for line in parsed for change in line.schema_changes]
    if changes:
        record_schema_changes(storage, client, input_format, changes, now)
    for line in parsed:
        _count(report, line)
    _count_in_redis(client, report)
    if report.ambiguous:
        examples = [line.error.reason for line in parsed if line.error is not None
                    and Effect.AMBIGUOUS in line.effects][:3]
        raise_alarm(client, "ambiguous_order", f"{report.ambiguous} {input_format} changes were not newer by event "
                    f"time than what is stored but differ from it, and carry no source position to order them: "
                    f"kept in quarantine, not applied. Send them with GTIDs or binlog positions.", examples=examples)
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
    ambiguous: dict[int, tuple[_Line, MetadataRecord]] = {}
    with storage.shard_engine(database).begin() as connection:
        stored_effects = store_records(connection, [(storage.shard_of(r.order_id), r) for _, r in records], now)
        for (line, stored), effect in zip(records, stored_effects, strict=True):
            effects.append((line, stored, effect))
            if effect in (Effect.NEW, Effect.CORRECTED):
                touched.add((storage.shard_of(stored.order_id), stored.order_id, stored.operation_type))
            elif effect is Effect.AMBIGUOUS:
                ambiguous.setdefault(id(line), (line, stored))
        bump_tasks(connection, sorted(touched), now)
        for line, record in entries:
            if record is None:
                assert line.error is not None
                quarantine(connection, input_format, line.raw, line.error, now)
        for line, record in ambiguous.values():
            quarantine(connection, input_format, line.raw, _ambiguity(record), now)
    return effects


def _ambiguity(record: MetadataRecord) -> BadInput:
    return BadInput(
        f"ambiguous order: {record.source} {record.unique_key} at {record.position.describe()} is not newer by "
        f"event time than the stored version and differs from it; with no GTID or binlog position to order "
        f"them it was kept here, not applied", record.order_id)


def _store_database(storage: Storage, database: int, input_format: str, entries: list[_Entry],
                    now: dt.datetime) -> tuple[list[_Stored], int]:
    """Store one shard database's part of a batch; what each record did, and the retries."""
    count = RetryCount()
    try:
        effects = retry_on_contention(lambda: _write_entries(storage, database, input_format, entries, now), count)
    except (DBAPIError, KeyContention) as error:
        if not _contended(error):
            raise
        log.warning("a batch for shard database %d met lock contention %d times; storing its lines one by one",
                    database, count.retries + 1)
        effects = _store_one_by_one(storage, database, input_format, entries, now, count)
    return effects, count.retries


def _apply(report: IntakeReport, effects: list[_Stored], retries: int) -> None:
    report.retries += retries
    for line, record, effect in effects:
        line.effects.append(effect)
        if effect is Effect.AMBIGUOUS and line.error is None:
            line.error = _ambiguity(record)
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
                source_table=change.table, position=encode(change.position), sql=change.sql))]
    for change in retry_on_contention(work):
        if change.sql.lstrip().upper().startswith("TRUNCATE"):
            message = (f"TRUNCATE on followed table {change.database}.{change.table}: the source rows are gone "
                       f"but tdc removed nothing; reload the table or reconcile")
        else:
            message = f"DDL on followed table {change.database}.{change.table}: {change.sql[:200]}"
        raise_alarm(client, "schema_change", message, position=change.position.describe(), input_format=input_format)


#: What became of one line: stored (or changed a dimension), the same as stored, older than
#: stored, kept in quarantine (bad, or not orderable against what is stored), nothing to store,
#: or a schema change recorded.
VERDICTS = ("accepted", "duplicate", "stale", "quarantined", "ignored", "schema_change")


def _count(report: IntakeReport, line: _Line) -> None:
    report.lines += 1
    report.schema_changes += len(line.schema_changes)
    reason: str | None = None
    if Effect.AMBIGUOUS in line.effects:
        report.ambiguous += 1
        verdict, reason = "quarantined", line.error.reason if line.error is not None else "ambiguous order"
    elif line.error is not None:
        report.quarantined += 1
        report.reasons[line.error.reason] += 1
        verdict, reason = "quarantined", line.error.reason
    elif line.ignored:
        report.ignored += 1
        for kind in set(line.ignored):
            report.ignored_kinds[kind] += 1
        verdict, reason = "ignored", ", ".join(sorted(set(line.ignored)))
    elif line.schema_changes and not line.effects:
        verdict = "schema_change"  # a DDL line: counted as a schema change above
    elif {Effect.NEW, Effect.CORRECTED, Effect.REFRESHED} & set(line.effects):
        report.accepted += 1
        verdict = "accepted"
    elif Effect.STALE in line.effects:
        report.stale += 1
        verdict = "stale"
    else:
        report.duplicated += 1
        verdict = "duplicate"
    report.outcomes.append((verdict, reason))


def _count_in_redis(client: redis.Redis, report: IntakeReport) -> None:
    """What a long-running reader (the tail, a consumer) ignored and could not order, for operators."""
    for kind, n in report.ignored_kinds.items():
        count(client, f"ignored:{kind}", n)
    count(client, "ambiguous_changes", report.ambiguous)
