"""The binlog tail: row events of the followed tables become Debezium-shaped lines on the same
intake path as every other input; the position after them is stored once they are committed.

Delivery is at least once: a crash after intake commits and before the position is stored
replays those transactions, which intake recognises as duplicates.

Positions order changes by the binlog, not by wall clocks.  A row event's header time is when
its statement *started*, in whole seconds, so a long statement can carry an earlier time than
a change committed before it.  The tail keeps a commit clock, the largest header time seen so
far (stored with the position), and stamps each change with it; with the binlog file and
offset as tie-break, every change's position is above all earlier ones.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

import redis
from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.constants import FIELD_TYPE
from pymysqlreplication.event import (
    GtidEvent,
    HeartbeatLogEvent,
    MariadbGtidEvent,
    QueryEvent,
    RotateEvent,
    XidEvent,
)
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

from cdc.source import (
    Checkpoint,
    Source,
    SourceError,
    binlog_files,
    current_coordinates,
    ddl_line,
    load_checkpoint,
    require_followed,
    require_source,
    row_line,
    server_id_of,
    store_checkpoint,
)
from flows import Flow
from inputs.ddl import ddl_tables
from intake.receiver import IntakeReport, TaskKey, accept_lines
from models.storage import Storage

log = logging.getLogger(__name__)

Submit = Callable[[Iterable[TaskKey]], int]

#: Lines per intake transaction: as for `tdc ingest`, shares commit cost and bounds a replay.
TAIL_BATCH = 500
#: A change waits at most this long for its batch to fill before it is ingested.
FLUSH_SECONDS = 1.0
#: The server sends a heartbeat after this much silence, so an idle tail still flushes and stores.
HEARTBEAT_SECONDS = 1.0

_ROW_EVENTS = {WriteRowsEvent: "c", UpdateRowsEvent: "u", DeleteRowsEvent: "d"}
#: Column types the reader decodes as naive UTC (instants, unlike DATETIME's wall clock).
_TIMESTAMPS = (FIELD_TYPE.TIMESTAMP, FIELD_TYPE.TIMESTAMP2)


@dataclass
class TailReport:
    transactions: int = 0
    changes: int = 0
    intake: IntakeReport = field(default_factory=IntakeReport)
    submitted: int = 0
    position: Checkpoint | None = None


def start_position(storage: Storage, source: Source, name: str, start: str | None) -> Checkpoint:
    """Where tail ``name`` starts: its stored position, or ``start`` ("now" or "oldest") when none
    is stored.  Raises SourceError when nothing is stored and no start is given, or when the
    stored binlog file has been purged from the server."""
    connection = source.connect()
    try:
        require_source(connection)
        files = binlog_files(connection)
        stored = load_checkpoint(storage, name)
        if stored is not None:
            checkpoint, stored_by = stored
            if checkpoint.log_file not in files:
                raise SourceError(
                    f"the stored position of {name} ({checkpoint.log_file}:{checkpoint.log_pos}, stored by "
                    f"the {stored_by}) is no longer on the server: its oldest binlog is {files[0] if files else '-'}, "
                    f"so the changes in between were purged and cannot be replayed. Nothing was skipped. To recover, "
                    f"reload current rows and restart the tail from there: `tdc cdc snapshot --reset-position` "
                    f"(add --table/--where to limit it to the affected tables and window).")
            return checkpoint
        if start == "now":
            log_file, log_pos = current_coordinates(connection)
            return Checkpoint(log_file, log_pos, None, 0)
        if start == "oldest":
            return Checkpoint(files[0], 4, None, 0)
        raise SourceError(f"no position is stored for {name}: for a first load run `tdc cdc snapshot` (it hands "
                          f"over to the tail), or start the tail with --from now or --from oldest")
    finally:
        connection.close()


class BinlogTail:
    """Tails one source database's binlog for the tables of ``flow``."""

    def __init__(self, storage: Storage, client: redis.Redis, flow: Flow, source: Source, name: str,
                 server_id: int, submit: Submit, batch: int = TAIL_BATCH):
        self.storage, self.client, self.flow, self.source = storage, client, flow, source
        self.name, self.server_id, self.submit, self.batch = name, server_id, submit, batch
        self.report = TailReport()
        self.source_server_id = 0
        #: The position of the newest batch handed to the writer (stored once it is in).
        self.flushed: Checkpoint | None = None

    def run(self, position: Checkpoint, stop_when_idle: bool = False, progress: Callable[[str], None] | None = None,
            ) -> TailReport:
        """Tail from ``position`` until stopped (or, with ``stop_when_idle``, until it has caught up).

        Raises SourceError when no flow follows the source's database."""
        require_followed(self.storage, self.flow, self.source)
        self.flushed = self.report.position
        self.source_server_id = server_id_of(self.source)
        stream = BinLogStreamReader(
            connection_settings=self.source.connection_settings(), server_id=self.server_id,
            resume_stream=True, log_file=position.log_file, log_pos=position.log_pos,
            # is_mariadb only selects GTID-based resumption, which would ignore the file and offset.
            blocking=not stop_when_idle, is_mariadb=False, slave_heartbeat=HEARTBEAT_SECONDS,
            only_schemas=[self.source.database], only_tables=list(self.flow.tables),
            only_events=[RotateEvent, GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent, HeartbeatLogEvent,
                         *_ROW_EVENTS],
            enable_logging=False,
        )
        committed: list[str] = []  # lines of whole transactions, up to `boundary`
        pending: list[str] = []  # lines of the transaction being read
        boundary = position
        clock, gtid, last_flush = position.clock_ms, position.gtid, time.monotonic()
        # One batch is stored (intake, then its position) on a writer thread while the next is
        # decoded here: decoding and the database round trips overlap.  Batches are stored in
        # order, one at a time, and a position is stored only after its batch committed.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tdc-tail-writer")
        storing: Future[None] | None = None

        def flush(lines: list[str], at: Checkpoint) -> None:
            nonlocal storing
            if storing is not None:
                storing.result()  # the batch before must be in (and raises what it raised)
            storing, self.flushed = writer.submit(self._flush, lines, at, progress), at
        try:
            for event in stream:
                if isinstance(event, (GtidEvent, MariadbGtidEvent)):
                    gtid = event.gtid
                elif type(event) in _ROW_EVENTS:
                    clock = max(clock, event.timestamp * 1000)
                    pending += self._row_lines(event, stream.log_file, stream.log_pos, clock, gtid)
                elif isinstance(event, QueryEvent):
                    query = event.query.strip()
                    if query.upper() == "BEGIN":
                        continue
                    if query.upper() != "COMMIT":  # DDL commits by itself
                        clock = max(clock, event.timestamp * 1000)
                        pending += self._ddl_lines(event, query, stream.log_file, stream.log_pos, clock)
                if isinstance(event, (XidEvent, QueryEvent, RotateEvent)):  # between transactions
                    if pending:
                        self.report.transactions += 1
                    committed += pending
                    pending = []
                    boundary = Checkpoint(stream.log_file, stream.log_pos, gtid, clock)
                idle = isinstance(event, HeartbeatLogEvent)
                if committed and (len(committed) >= self.batch or idle
                                  or time.monotonic() - last_flush >= FLUSH_SECONDS):
                    flush(committed, boundary)
                    committed, last_flush = [], time.monotonic()
                elif idle and boundary != self.flushed and not pending:
                    flush([], boundary)
            if committed or boundary != self.flushed:
                flush(committed, boundary)
            if storing is not None:
                storing.result()
        finally:
            writer.shutdown(wait=True)
            stream.close()
        return self.report

    def _row_lines(self, event: WriteRowsEvent, log_file: str, log_pos: int, clock: int,
                   gtid: str | None) -> list[str]:
        op = _ROW_EVENTS[type(event)]
        utc = frozenset(column.name for column in event.columns if column.type in _TIMESTAMPS)
        lines = []
        for index, row in enumerate(event.rows):
            before = row.get("before_values") if op == "u" else (row["values"] if op == "d" else None)
            after = row.get("after_values") if op == "u" else (row["values"] if op == "c" else None)
            lines.append(row_line(op, event.schema, event.table, before, after, log_file, log_pos, index,
                                  clock, gtid, self.source_server_id, utc))
        self.report.changes += len(lines)
        return lines

    def _ddl_lines(self, event: QueryEvent, query: str, log_file: str, log_pos: int, clock: int) -> list[str]:
        schema = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema or "")
        followed = [(s, t) for s, t in ddl_tables(query, schema)
                    if s == self.source.database and t in self.flow.tables]
        return [ddl_line(self.source.database, query, log_file, log_pos, clock)] if followed else []

    def _flush(self, lines: list[str], boundary: Checkpoint, progress: Callable[[str], None] | None) -> None:
        """Ingest whole transactions, submit their tasks, then store the position after them (on
        the writer thread; ``flushed`` is what was handed to it, ``report.position`` what is in)."""
        if lines:
            report = accept_lines(self.storage, self.client, self.flow, "debezium", lines)
            self.report.submitted += self.submit(report.touched)
            self.report.intake.add(report)
        store_checkpoint(self.storage, self.name, boundary, "tail")
        self.report.position = boundary
        if progress is not None and lines:
            progress(f"{boundary.log_file}:{boundary.log_pos} {self.report.intake.summary()}")
