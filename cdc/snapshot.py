"""Snapshots: the current rows of followed source tables, read in one consistent transaction and
fed in as Debezium ``r`` events, for a first load or a backfill.

Each snapshot row's position sorts below every change committed after the snapshot and at or
above every change it already contains, so the tail can hand over without a gap:

- its coordinates are those of the snapshot itself (MariaDB reports them for the consistent
  snapshot; MySQL's are read under a brief global read lock);
- its clock is the start, in whole seconds and less a margin, of the oldest transaction still
  open when the snapshot was taken.  A change committed later was made by a statement that
  started no earlier, and the tail's clock never runs below a statement's start.  A change
  already in the snapshot may sort above it; replaying it stores the same row again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pymysql
import pymysql.cursors
import redis
from pymysql.constants import FIELD_TYPE
from sqlalchemy.dialects import mysql

from cdc.binlog import TAIL_BATCH, Submit
from cdc.source import (
    Checkpoint,
    Source,
    is_mariadb,
    load_checkpoint,
    require_followed,
    require_source,
    row_line,
    server_id_of,
    store_checkpoint,
)
from flows import Flow
from intake.receiver import IntakeReport, accept_lines
from models.storage import Storage

log = logging.getLogger(__name__)

#: Seconds the snapshot clock is set back: a transaction's first statement starts a little
#: before the server lists the transaction as open.  Setting it back further only makes more
#: replayed pre-snapshot changes store their (identical) row again.
CLOCK_MARGIN_SECONDS = 5


@dataclass
class SnapshotReport:
    position: Checkpoint
    rows: dict[str, int] = field(default_factory=dict)
    intake: IntakeReport = field(default_factory=IntakeReport)
    submitted: int = 0
    handed_over: bool = False


def _begin_consistent(connection: pymysql.connections.Connection) -> tuple[str, int]:
    """Start a consistent read-only transaction; its binlog coordinates.  TIMESTAMP values are
    read in UTC (the session's time zone), DATETIME values as stored."""
    with connection.cursor() as cursor:
        cursor.execute("SET SESSION time_zone = '+00:00'")
        cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        if is_mariadb(connection):
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            cursor.execute("SHOW STATUS WHERE Variable_name IN ('binlog_snapshot_file', 'binlog_snapshot_position')")
            status = {str(name).lower(): str(value) for name, value in cursor.fetchall()}
            return status["binlog_snapshot_file"], int(status["binlog_snapshot_position"])
        cursor.execute("FLUSH TABLES WITH READ LOCK")
        try:
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
            cursor.execute("SHOW MASTER STATUS")
            row = cursor.fetchone()
        finally:
            cursor.execute("UNLOCK TABLES")
        return str(row[0]), int(row[1])


def _clock_ms(connection: pymysql.connections.Connection) -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT UNIX_TIMESTAMP(NOW())")
        now = int(cursor.fetchone()[0])
        try:
            cursor.execute("SELECT MIN(UNIX_TIMESTAMP(trx_started)) FROM information_schema.INNODB_TRX")
            oldest = cursor.fetchone()[0]
        except pymysql.err.OperationalError:  # no PROCESS privilege: the margin alone
            oldest = None
    started = min(now, int(oldest)) if oldest is not None else now
    return (started - CLOCK_MARGIN_SECONDS) * 1000


_MYSQL = mysql.dialect()


def quoted(identifier: str) -> str:
    """``identifier`` as MySQL/MariaDB quote it: in backticks, a backtick inside doubled."""
    return _MYSQL.identifier_preparer.quote_identifier(identifier)


def select_rows(database: str, table: str, where: str | None = None, order_key: str | None = None,
                orders: int = 0) -> str:
    """The snapshot's statement for one table: every row, or those matching ``where``, or (with
    ``order_key``) those of ``orders`` order ids bound as parameters.

    The database (from the source URL), the table (from the flow) and the order key column are
    quoted identifiers.  ``where`` is the operator's own SQL condition, pasted in as given: it is
    for whoever already holds the source URL and its password (``tdc cdc snapshot --where``), never
    for input from elsewhere.  It runs in a read-only transaction, one statement, in parentheses
    so that its ORs stay inside; with bound order ids its ``%`` signs are doubled, since the
    driver formats the statement then."""
    conditions = [f"({where.replace('%', '%%') if order_key is not None else where})"] if where else []
    if order_key is not None:
        conditions.append(f"{quoted(order_key)} IN ({', '.join(['%s'] * orders)})")
    return (f"SELECT * FROM {quoted(database)}.{quoted(table)}"
            + (" WHERE " + " AND ".join(conditions) if conditions else ""))


def take_snapshot(storage: Storage, client: redis.Redis, flow: Flow, source: Source, name: str, submit: Submit,
                  tables: list[str] | None = None, where: str | None = None, reset_position: bool = False,
                  progress: Callable[[str], None] | None = None, batch: int = TAIL_BATCH,
                  orders: Sequence[str] | None = None, hand_over: bool = True) -> SnapshotReport:
    """Read the current rows of ``tables`` (default: every table of ``flow``), optionally only
    those matching the operator's SQL condition ``where`` (``select_rows``) or those of ``orders``
    (by each table's order key; tables without one are skipped), and ingest them.  The position
    is handed to tail ``name`` when none is stored or ``reset_position`` is set (never when
    ``hand_over`` is False).

    Raises SourceError for a server that cannot be tailed, ValueError for a table the flow
    does not follow.
    """
    require_followed(storage, flow, source)
    chosen = tables or [t for t in flow.tables]
    unknown = [t for t in chosen if t not in flow.tables]
    if unknown:
        raise ValueError(f"not a table of flow {flow.name!r}: {', '.join(unknown)}; "
                         f"it follows {', '.join(flow.tables)}")
    connection = source.connect()
    try:
        require_source(connection)
        clock = _clock_ms(connection)
        # The coordinates are this server's: a change streamed from another (after a fail-over)
        # is not ordered against them.
        server_id = server_id_of(source)
        log_file, log_pos = _begin_consistent(connection)
        report = SnapshotReport(Checkpoint(log_file, log_pos, None, clock))
        for table in chosen:
            order_key = flow.tables[table].order_key
            if orders is not None and (order_key is None or not orders):
                continue
            sql = select_rows(source.database, table, where, order_key if orders is not None else None,
                              len(orders or ()))
            parameters = tuple(orders) if orders is not None else ()
            report.rows[table] = 0
            with connection.cursor(pymysql.cursors.SSDictCursor) as cursor:
                cursor.execute(sql, parameters or None)
                utc = frozenset(d[0] for d in cursor.description or () if d[1] == FIELD_TYPE.TIMESTAMP)
                while rows := cursor.fetchmany(batch):
                    lines = [row_line("r", source.database, table, None, row, log_file, log_pos, 0, clock,
                                      server_id=server_id, utc=utc) for row in rows]
                    intake = accept_lines(storage, client, flow, "debezium", lines)
                    report.submitted += submit(intake.touched)
                    report.intake.add(intake)
                    report.rows[table] += len(rows)
                    if progress is not None:
                        progress(f"{table}: {report.rows[table]} rows")
        connection.commit()
    finally:
        connection.close()
    if hand_over and (reset_position or load_checkpoint(storage, name) is None):
        store_checkpoint(storage, name, report.position, "snapshot")
        report.handed_over = True
    return report
