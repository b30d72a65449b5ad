"""The source MySQL/MariaDB seen by the binlog tail and the snapshot: connecting, the server
settings row-based CDC needs, binlog coordinates, stored positions, and turning a source row
into the Debezium-shaped line intake already reads."""

from __future__ import annotations

import datetime as dt
import json
import zlib
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import pymysql
from sqlalchemy import insert, select, update
from sqlalchemy.engine import make_url

from flows import Flow
from intake.receiver import route_of
from models.cdc import CdcPosition
from models.storage import Storage

#: What the tail needs of the server, and why.
REQUIRED_SETTINGS = {
    "log_bin": ("ON", "there is no binlog to tail"),
    "binlog_format": ("ROW", "statement events do not carry the changed rows"),
    "binlog_row_image": ("FULL", "updates and deletes must carry every column, not only the changed ones"),
    "binlog_row_metadata": ("FULL", "column names must travel with each table map, or an ALTER TABLE "
                                    "mid-stream would assign values to the wrong columns"),
}


class SourceError(RuntimeError):
    """The source cannot be tailed or snapshotted as asked; the message says what to do."""


@dataclass(frozen=True)
class Source:
    host: str
    port: int
    user: str
    password: str
    database: str

    @property
    def default_name(self) -> str:
        """The name a tail's position is stored under unless given one."""
        return f"binlog:{self.host}:{self.port}/{self.database}"

    def connection_settings(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port, "user": self.user, "passwd": self.password}

    def connect(self) -> pymysql.connections.Connection:
        return pymysql.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                               database=self.database, autocommit=True, charset="utf8mb4")


def source_of(url: str) -> Source:
    """A Source from ``mysql+pymysql://user:password@host:port/database``; raises SourceError."""
    try:
        parsed = make_url(url)
    except Exception as error:  # noqa: BLE001 - SQLAlchemy raises several types for a bad URL
        raise SourceError(f"source URL is not a database URL: {error}") from None
    if not parsed.drivername.startswith(("mysql", "mariadb")):
        raise SourceError(f"source URL must be a MySQL or MariaDB URL, not {parsed.drivername}")
    if not parsed.database:
        raise SourceError("source URL names no database: mysql+pymysql://user@host:3306/DATABASE")
    return Source(parsed.host or "127.0.0.1", parsed.port or 3306, parsed.username or "root",
                  parsed.password or "", parsed.database)


def server_variables(connection: pymysql.connections.Connection, names: list[str]) -> dict[str, str]:
    with connection.cursor() as cursor:
        cursor.execute("SHOW GLOBAL VARIABLES WHERE Variable_name IN (" + ", ".join(["%s"] * len(names)) + ")",
                       names)
        return {str(name).lower(): str(value) for name, value in cursor.fetchall()}


def check_source(connection: pymysql.connections.Connection) -> list[str]:
    """What is wrong with the server for row-based CDC; empty when nothing is."""
    values = server_variables(connection, list(REQUIRED_SETTINGS))
    problems = []
    for name, (wanted, why) in REQUIRED_SETTINGS.items():
        value = values.get(name)
        if value is None or value.upper() != wanted:
            problems.append(f"{name} is {value or 'not available (server too old)'}, needs {wanted}: {why}")
    return problems


def require_source(connection: pymysql.connections.Connection) -> None:
    """Raise SourceError listing every missing setting and how to set it."""
    problems = check_source(connection)
    if problems:
        settings = "\n".join(f"  {name} = {wanted}" for name, (wanted, _) in REQUIRED_SETTINGS.items())
        raise SourceError("the source server cannot be tailed:\n  - " + "\n  - ".join(problems)
                          + f"\nSet in its configuration ([mysqld] section), then restart it:\n{settings}")


def require_followed(storage: Storage, flow: Flow, source: Source) -> None:
    """Raise SourceError when the flows do not follow ``source``'s database: its rows would all be
    ignored, so tailing or snapshotting it is a mistake to say plainly."""
    route = route_of(storage)
    if not route.follows(flow, source.database):
        followed = ", ".join(route.databases if route.databases is not None else flow.databases) or "none"
        raise SourceError(f"source database {source.database!r} is not followed (following: {followed}); "
                          f"set TDC_SOURCE_DATABASES={source.database} if its tables are the flow's")


def server_id_of(source: Source) -> int:
    """The id of the server the binlog coordinates belong to: the one tdc reads (its binlog holds
    events from other servers too, under their ids, at its own coordinates)."""
    connection = source.connect()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT @@server_id")
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def binlog_files(connection: pymysql.connections.Connection) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        return [str(row[0]) for row in cursor.fetchall()]


def current_coordinates(connection: pymysql.connections.Connection) -> tuple[str, int]:
    with connection.cursor() as cursor:
        cursor.execute("SHOW MASTER STATUS")
        row = cursor.fetchone()
    if row is None:
        raise SourceError("the source server has no binlog (SHOW MASTER STATUS is empty)")
    return str(row[0]), int(row[1])


def is_mariadb(connection: pymysql.connections.Connection) -> bool:
    return "mariadb" in connection.get_server_info().lower()


def default_server_id(name: str) -> int:
    """A replica id for the tail, stable per position name and clear of small hand-set ids."""
    return 100_000 + zlib.crc32(name.encode()) % 1_000_000_000


@dataclass(frozen=True)
class Checkpoint:
    log_file: str
    log_pos: int
    gtid: str | None
    clock_ms: int


def load_checkpoint(storage: Storage, name: str) -> tuple[Checkpoint, str] | None:
    """The stored position of tail ``name`` and who stored it, if any."""
    with storage.shard_engine(0).connect() as connection:
        row = connection.execute(select(CdcPosition.__table__).where(CdcPosition.name == name)).first()
    if row is None:
        return None
    return Checkpoint(row.log_file, row.log_pos, row.gtid, row.clock_ms), row.stored_by


def store_checkpoint(storage: Storage, name: str, checkpoint: Checkpoint, stored_by: str) -> None:
    values = dict(log_file=checkpoint.log_file, log_pos=checkpoint.log_pos, gtid=checkpoint.gtid,
                  clock_ms=checkpoint.clock_ms, stored_by=stored_by,
                  updated_at=dt.datetime.now(dt.UTC).replace(tzinfo=None))
    with storage.shard_engine(0).begin() as connection:
        if not connection.execute(update(CdcPosition).where(CdcPosition.name == name).values(**values)).rowcount:
            connection.execute(insert(CdcPosition).values(name=name, **values))


def json_value(value: Any) -> Any:
    """A driver value as JSON: exact decimals as text, times with their microseconds."""
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, dt.datetime) and value.tzinfo is not None:  # a TIMESTAMP: an instant
        return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(value, dt.datetime):  # a DATETIME: the source's wall clock
        return value.strftime("%Y-%m-%d %H:%M:%S.%f")
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, set):
        return sorted(value)
    return value


def _image(row: dict[str, Any] | None, utc: frozenset[str]) -> dict[str, Any] | None:
    if row is None:
        return None
    return {name: json_value(_instant(value) if name in utc else value) for name, value in row.items()}


#: What the binlog reader makes of MySQL's zero TIMESTAMP (it stores 0 seconds since the epoch).
_ZERO_TIMESTAMP = dt.datetime(1970, 1, 1)


def _instant(value: Any) -> Any:
    """A TIMESTAMP column's value, read as naive UTC, as an instant; the zero TIMESTAMP (which no
    real instant can be: the type starts one second later) as no time, as Canal and snapshots read it."""
    if not isinstance(value, dt.datetime) or value.tzinfo is not None:
        return value
    return None if value == _ZERO_TIMESTAMP else value.replace(tzinfo=dt.UTC)


def row_line(op: str, database: str, table: str, before: dict[str, Any] | None, after: dict[str, Any] | None,
             log_file: str, log_pos: int, row: int, clock_ms: int, gtid: str | None = None, server_id: int = 0,
             utc: frozenset[str] = frozenset()) -> str:
    """One row change as a Debezium event line (``op`` c, u, d, or r for a snapshot row).  The
    drivers read TIMESTAMP columns (named in ``utc``) as naive UTC; they are written as instants
    (``...Z``, like Debezium's ZonedTimestamp), DATETIME columns as the wall clock they are."""
    source = {"connector": "tdc", "db": database, "table": table, "file": log_file, "pos": log_pos,
              "row": row, "ts_ms": clock_ms, "gtid": gtid, "server_id": server_id, "snapshot": op == "r"}
    return json.dumps({"op": op, "before": _image(before, utc), "after": _image(after, utc), "ts_ms": clock_ms,
                       "source": source}, separators=(",", ":"))


def ddl_line(database: str, sql: str, log_file: str, log_pos: int, clock_ms: int) -> str:
    """One DDL statement as a Debezium schema-change event line."""
    return json.dumps({"source": {"connector": "tdc", "db": database, "file": log_file, "pos": log_pos,
                                  "ts_ms": clock_ms}, "databaseName": database, "ddl": sql},
                      separators=(",", ":"))
