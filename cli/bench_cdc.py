"""``tdc bench cdc``: the binlog tail's rate against a bare python-mysql-replication loop over the
same binlog, in one run.

A generated history is played as SQL into a fresh database on the source (the one given, or a
throwaway MariaDB started for the run).  The bare loop only decodes the rows, once with the
library's defaults and once parsing each table map once per table id (``freeze_schema``), as
the tail does; the tail also turns them into lines, routes and stores them idempotently in the
configured storage and stores its position.  Chains are not submitted (no broker is needed),
so the figure is the tail's own cost.
"""

from __future__ import annotations

import dataclasses
import time
import uuid

from pymysqlreplication import BinLogStreamReader
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent
from sqlalchemy import create_engine

from cdc.binlog import TAIL_BATCH, BinlogTail
from cdc.source import Checkpoint, Source, current_coordinates, source_of
from cli.progress import Progress, progress
from demo.binlog_server import BinlogServer
from demo.history import generate_history
from demo.source import play_changes, source_metadata
from flows.registry import ACCEPTED as ORDER_FLOW
from models.redis_store import get_redis
from models.storage import Storage, get_storage
from settings import get_settings

#: Changes per source transaction, about one order's worth.
CHANGES_PER_TRANSACTION = 8


def _prepare(server_url: str, orders: int) -> tuple[Source, Checkpoint, int]:
    """A fresh source database holding ``orders`` orders played as SQL; where they start and how many rows."""
    name = f"tdc_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server_url + "/")
    with admin.begin() as connection:
        connection.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    admin.dispose()
    engine = create_engine(f"{server_url}/{name}")
    metadata = source_metadata(ORDER_FLOW)
    metadata.create_all(engine)
    source = source_of(f"{server_url}/{name}")
    with source.connect() as connection:
        start = Checkpoint(*current_coordinates(connection), None, 0)
    changes = generate_history(orders, seed=1).changes
    with progress("playing the history as SQL", total=len(changes), unit="row changes") as shown:
        for first in range(0, len(changes), CHANGES_PER_TRANSACTION):
            with engine.begin() as connection:
                play_changes(connection, metadata, changes[first : first + CHANGES_PER_TRANSACTION])
            shown.advance(len(changes[first : first + CHANGES_PER_TRANSACTION]))
    engine.dispose()
    return source, start, len(changes)


def _bare_loop(source: Source, start: Checkpoint, shown: Progress, freeze_schema: bool = False,
               ) -> tuple[float, int]:
    """Decode every row and count it; ``freeze_schema``: parse each table's map once per table
    id, as the tail does, instead of before every row event (the library's default)."""
    began = time.perf_counter()
    stream = BinLogStreamReader(
        connection_settings=source.connection_settings(), server_id=990_001, resume_stream=True,
        log_file=start.log_file, log_pos=start.log_pos, blocking=False, only_schemas=[source.database],
        only_tables=list(ORDER_FLOW.tables), only_events=[WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent],
        enable_logging=False, freeze_schema=freeze_schema)
    rows = 0
    for event in stream:
        rows += len(event.rows)
        if rows - shown.completed >= TAIL_BATCH:  # as often as the tail reports, so both pay alike
            shown.update(completed=rows)
    stream.close()
    return time.perf_counter() - began, rows


def _tail(source: Source, start: Checkpoint, shown: Progress) -> tuple[float, int]:
    # The bench's own source database stands in for the flow's, whatever TDC_SOURCE_DATABASES says.
    storage = Storage(dataclasses.replace(get_settings(), source_databases=(source.database,)))
    tail = BinlogTail(storage, get_redis(), ORDER_FLOW, source, f"bench:{source.database}", 990_002,
                      submit=lambda keys: 0)
    try:
        began = time.perf_counter()
        report = tail.run(start, stop_when_idle=True, progress=lambda _: shown.update(completed=tail.report.changes))
        return time.perf_counter() - began, report.changes
    finally:
        storage.dispose()


def bench_cdc(source_url: str | None, orders: int) -> int:
    import worker  # noqa: F401 - starts the embedded Redis in the default setup
    from models.schema import init_storage

    init_storage(get_storage())  # safe to run again; the tail stores into these tables
    server = None
    if source_url is None:
        print("starting a throwaway MariaDB with its binlog on (give --source-url to use another server) ...")
        server = BinlogServer()
        server.start()
        source_url = server.url
    try:
        base = source_url.rsplit("/", 1)[0] if source_url.count("/") > 2 else source_url
        source, start, played = _prepare(base, orders)
        print(f"{orders} orders played as SQL: {played} row changes in {source.database}")
        with progress("python-mysql-replication loop", total=played, unit="rows") as shown:
            bare_seconds, bare_rows = _bare_loop(source, start, shown)
        with progress("the same, table maps once", total=played, unit="rows") as shown:
            frozen_seconds, frozen_rows = _bare_loop(source, start, shown, freeze_schema=True)
        with progress("tdc cdc binlog", total=played, unit="rows") as shown:
            tail_seconds, tail_rows = _tail(source, start, shown)
    finally:
        if server is not None:
            server.stop()
    bare_rate, tail_rate = bare_rows / bare_seconds, tail_rows / tail_seconds
    frozen_rate = frozen_rows / frozen_seconds
    print(f"  python-mysql-replication loop: {bare_rows:7d} rows in {bare_seconds:6.2f}s = {bare_rate:9.0f} rows/s")
    print(f"  the same, freeze_schema=True:  {frozen_rows:7d} rows in {frozen_seconds:6.2f}s = "
          f"{frozen_rate:9.0f} rows/s  (table maps parsed once per table id, as the tail reads)")
    print(f"  tdc cdc binlog (to metadata):  {tail_rows:7d} rows in {tail_seconds:6.2f}s = {tail_rate:9.0f} rows/s")
    print(f"  ratio tail/loop: {tail_rate / bare_rate:.2f} (against the loop reading as the tail does: "
          f"{tail_rate / frozen_rate:.2f})")
    return 0
