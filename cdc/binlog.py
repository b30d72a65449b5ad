"""The binlog tail: row events of the followed tables become Debezium-shaped lines on the same
intake path as every other input; the position after them is stored once they are committed.

Delivery is at least once: a crash after intake commits and before the position is stored
replays those transactions, which intake recognises as duplicates.

Positions order changes by the binlog, not by wall clocks.  A row event's header time is when
its statement *started*, in whole seconds, so a long statement can carry an earlier time than
a change committed before it.  The tail keeps a commit clock, the largest header time seen so
far (stored with the position), and stamps each change with it; with the binlog file and
offset as tie-break, every change's position is above all earlier ones.

Decoding a row event is Python work on every column, and so is intake.  By default the tail
decodes in a process of its own (``decoding="process"``), which hands the lines of whole
transactions to this one over a pipe, batch by batch; this process ingests them, submits their
tasks and stores the position after them.  The two run on two cores at once.  The decoding
process only reads: a position is stored here, after its batch is in, so a crash of either
process replays from the last stored position as before.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import time
from collections.abc import Callable, Generator, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from multiprocessing.connection import Connection

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


@dataclass
class Batch:
    """Lines of whole transactions, the position after them, and how many transactions and row
    changes they hold."""

    lines: list[str]
    boundary: Checkpoint
    transactions: int
    changes: int

    def packed(self) -> bytes:
        """One pipe message: a JSON header line, then the lines (each a JSON document, so one
        line each)."""
        header = json.dumps({"boundary": list(dataclasses.astuple(self.boundary)),
                             "transactions": self.transactions, "changes": self.changes})
        return "\n".join([header, *self.lines]).encode()

    @classmethod
    def unpacked(cls, data: bytes) -> Batch:
        header, *lines = data.decode().split("\n")
        fields = json.loads(header)
        return cls(lines, Checkpoint(*fields["boundary"]), fields["transactions"], fields["changes"])


class Decoder:
    """Reads one source database's binlog for ``tables`` and cuts it into batches of whole
    transactions (``Batch``): at ``batch`` lines, after FLUSH_SECONDS, and when the server says
    it is idle (then also an empty batch, so an idle tail stores its position; the starting
    position is handed on the same way)."""

    def __init__(self, source: Source, tables: tuple[str, ...], server_id: int, source_server_id: int,
                 batch: int = TAIL_BATCH):
        self.source, self.tables, self.server_id = source, tables, server_id
        self.source_server_id, self.batch = source_server_id, batch

    def batches(self, position: Checkpoint, stop_when_idle: bool,
                alive: Callable[[], bool] = lambda: True) -> Generator[Batch, None, None]:
        """Batches from ``position`` on, until caught up (``stop_when_idle``) or, tailing, until
        ``alive()`` turns false."""
        stream = BinLogStreamReader(
            connection_settings=self.source.connection_settings(), server_id=self.server_id,
            resume_stream=True, log_file=position.log_file, log_pos=position.log_pos,
            # is_mariadb only selects GTID-based resumption, which would ignore the file and offset.
            blocking=not stop_when_idle, is_mariadb=False, slave_heartbeat=HEARTBEAT_SECONDS,
            # A table's map is parsed once per table id, not before every row event (that parse was
            # half of decoding).  Safe: the server gives a table a new id when its definition
            # changes, the reader forgets every id at each new binlog file (a restart starts one),
            # and so do we at each DDL statement it passes us.
            freeze_schema=True,
            only_schemas=[self.source.database], only_tables=list(self.tables),
            only_events=[RotateEvent, GtidEvent, MariadbGtidEvent, QueryEvent, XidEvent, HeartbeatLogEvent,
                         *_ROW_EVENTS],
            enable_logging=False,
        )
        committed: list[str] = []  # lines of whole transactions, up to `boundary`
        pending: list[str] = []  # lines of the transaction being read
        transactions = changes = pending_changes = 0
        boundary: Checkpoint = position
        sent: Checkpoint | None = None  # (the start too is handed on once, so it is stored)
        clock, gtid, last_flush = position.clock_ms, position.gtid, time.monotonic()
        try:
            for event in stream:
                if not alive():
                    return
                if isinstance(event, (GtidEvent, MariadbGtidEvent)):
                    gtid = event.gtid
                elif type(event) in _ROW_EVENTS:
                    clock = max(clock, event.timestamp * 1000)
                    rows = self._row_lines(event, stream.log_file, stream.log_pos, clock, gtid)
                    pending += rows
                    pending_changes += len(rows)
                elif isinstance(event, QueryEvent):
                    query = event.query.strip()
                    if query.upper() == "BEGIN":
                        continue
                    if query.upper() != "COMMIT":  # DDL commits by itself
                        stream.table_map.clear()
                        clock = max(clock, event.timestamp * 1000)
                        pending += self._ddl_lines(event, query, stream.log_file, stream.log_pos, clock)
                if isinstance(event, (XidEvent, QueryEvent, RotateEvent)):  # between transactions
                    if pending:
                        transactions += 1
                    committed += pending
                    changes += pending_changes
                    pending, pending_changes = [], 0
                    boundary = Checkpoint(stream.log_file, stream.log_pos, gtid, clock)
                idle = isinstance(event, HeartbeatLogEvent)
                if committed and (len(committed) >= self.batch or idle
                                  or time.monotonic() - last_flush >= FLUSH_SECONDS):
                    yield Batch(committed, boundary, transactions, changes)
                    committed, transactions, changes, sent, last_flush = [], 0, 0, boundary, time.monotonic()
                elif idle and boundary != sent and not pending:
                    yield Batch([], boundary, 0, 0)
                    sent = boundary
            if committed or boundary != sent:
                yield Batch(committed, boundary, transactions, changes)
        finally:
            stream.close()

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
        return lines

    def _ddl_lines(self, event: QueryEvent, query: str, log_file: str, log_pos: int, clock: int) -> list[str]:
        schema = event.schema.decode() if isinstance(event.schema, bytes) else str(event.schema or "")
        followed = [(s, t) for s, t in ddl_tables(query, schema)
                    if s == self.source.database and t in self.tables]
        return [ddl_line(self.source.database, query, log_file, log_pos, clock)] if followed else []


def _decode_into(pipe: Connection, decoder: Decoder, position: Checkpoint, stop_when_idle: bool,
                 parent: int) -> None:
    """The decoding process: every batch down ``pipe`` (it blocks while the tail has not taken
    the one before: the pipe's buffer is all it runs ahead), then an end mark; an error as a
    message.  It stops when its parent is gone (checked on every event: the server's heartbeat
    is one a second)."""
    try:
        for batch in decoder.batches(position, stop_when_idle, alive=lambda: os.getppid() == parent):
            pipe.send_bytes(batch.packed())
        pipe.send_bytes(json.dumps({"end": True}).encode())
    except (KeyboardInterrupt, BrokenPipeError):
        pass  # stopped with the tail, or the tail is gone
    except Exception as error:  # noqa: BLE001 - handed to the tail, which raises it
        log.exception("decoding the binlog failed")
        pipe.send_bytes(json.dumps({"error": f"{type(error).__name__}: {error}"}).encode())
    finally:
        pipe.close()


class DecodingFailed(RuntimeError):
    """The decoding process failed or exited; the stored position is where a restart resumes."""


def _decoded_elsewhere(decoder: Decoder, position: Checkpoint, stop_when_idle: bool) -> Generator[Batch, None, None]:
    """``decoder``'s batches, decoded in a process of its own (forked: it needs nothing set up
    again, and it touches nothing of this process's connections)."""
    context = multiprocessing.get_context("fork")
    receiving, sending = context.Pipe(duplex=False)
    child = context.Process(target=_decode_into, name="tdc-binlog-decoder", daemon=True,
                            args=(sending, decoder, position, stop_when_idle, os.getpid()))
    child.start()
    sending.close()
    try:
        while True:
            try:
                data = receiving.recv_bytes()
            except EOFError:
                child.join(5)
                raise DecodingFailed(f"the binlog decoding process exited (code {child.exitcode})") from None
            if data.startswith(b'{"end"') or data.startswith(b'{"error"'):
                message = json.loads(data)
                if "error" in message:
                    raise DecodingFailed(f"decoding the binlog failed: {message['error']}")
                return
            yield Batch.unpacked(data)
    finally:
        receiving.close()
        if child.is_alive():
            child.terminate()
        child.join(5)


class BinlogTail:
    """Tails one source database's binlog for the tables of ``flow``.

    ``decoding``: "process" (the default) decodes in a process of its own while this one
    ingests; "thread" decodes here while a thread ingests (one core for both)."""

    def __init__(self, storage: Storage, client: redis.Redis, flow: Flow, source: Source, name: str,
                 server_id: int, submit: Submit, batch: int = TAIL_BATCH, decoding: str = "process"):
        if decoding not in ("process", "thread"):
            raise ValueError(f"decoding is 'process' or 'thread', not {decoding!r}")
        self.storage, self.client, self.flow, self.source = storage, client, flow, source
        self.name, self.server_id, self.submit, self.batch = name, server_id, submit, batch
        self.decoding = decoding
        self.report = TailReport()

    def run(self, position: Checkpoint, stop_when_idle: bool = False, progress: Callable[[str], None] | None = None,
            ) -> TailReport:
        """Tail from ``position`` until stopped (or, with ``stop_when_idle``, until it has caught up).

        Raises SourceError when no flow follows the source's database, DecodingFailed when the
        decoding process fails."""
        require_followed(self.storage, self.flow, self.source)
        decoder = Decoder(self.source, tuple(self.flow.tables), self.server_id, server_id_of(self.source), self.batch)
        batches: Generator[Batch, None, None] = (
            _decoded_elsewhere(decoder, position, stop_when_idle) if self.decoding == "process"
            else decoder.batches(position, stop_when_idle))
        # One batch is stored (intake, then its position) on a writer thread while the next is
        # decoded (or received): decoding and the database round trips overlap.  Batches are
        # stored in order, one at a time, and a position is stored only after its batch committed.
        writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="tdc-tail-writer")
        storing: Future[None] | None = None
        try:
            for batch in batches:
                if storing is not None:
                    storing.result()  # the batch before must be in (and raises what it raised)
                storing = writer.submit(self._flush, batch, progress)
            if storing is not None:
                storing.result()
        finally:
            writer.shutdown(wait=True)
            batches.close()  # (the decoding process, if any, goes with it)
        return self.report

    def _flush(self, batch: Batch, progress: Callable[[str], None] | None) -> None:
        """Ingest whole transactions, submit their tasks, then store the position after them (on
        the writer thread; ``report.position`` is what is in)."""
        if batch.lines:
            report = accept_lines(self.storage, self.client, self.flow, "debezium", batch.lines)
            self.report.submitted += self.submit(report.touched)
            self.report.intake.add(report)
        store_checkpoint(self.storage, self.name, batch.boundary, "tail")
        self.report.position = batch.boundary
        self.report.transactions += batch.transactions
        self.report.changes += batch.changes
        if progress is not None and batch.lines:
            progress(f"{batch.boundary.log_file}:{batch.boundary.log_pos} {self.report.intake.summary()}")
