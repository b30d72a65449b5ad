"""Canal flat messages (``canal.mq.flatMessage=true``, as Canal 1.1.x puts them on Kafka,
RabbitMQ or RocketMQ): several rows per message, every value as text.

Shape (``com.alibaba.otter.canal.protocol.FlatMessage``): ``id`` (the batch id), ``database``,
``table``, ``pkNames``, ``isDdl``, ``type`` (the entry's ``EventType`` name), ``es`` (the
binlog event's time, ms), ``ts`` (when Canal built the message), ``sql``, ``sqlType``,
``mysqlType``, ``data`` (rows), ``old`` (the changed columns' previous values), and from 1.1.5
``gtid`` (1.1.7 on, when the source runs with GTIDs: the executed GTID set).

Every message gets a verdict:

- INSERT/UPDATE/DELETE: one change per row, ordered by the GTID when there is one, else by
  ``es`` alone (the batch ``id`` restarts with Canal, so it orders nothing).
- DDL, known by its type (CREATE, ALTER, ERASE, RENAME, TRUNCATE, CINDEX, DINDEX) or by its SQL
  whatever ``isDdl`` says (1.1.5 and 1.1.6 send some DDL as ``QUERY`` with ``isDdl`` false): a
  schema change.
- QUERY that is not DDL (the rows-query event, MariaDB's annotate-rows entry: the statement
  behind the rows that follow), and transaction, GTID and heartbeat entries: ignored.
"""

from __future__ import annotations

from typing import Any

from inputs.ddl import ddl_tables
from inputs.events import BadInput, ChangeEvent, Ignored, Parsed, SchemaChange, require
from inputs.positions import LIMITS, Position, parse_gtid_set, whole

_KINDS = {"INSERT": "insert", "UPDATE": "update", "DELETE": "delete"}
#: ``EventType`` names of DDL entries.
_DDL = {"CREATE", "ALTER", "ERASE", "RENAME", "TRUNCATE", "CINDEX", "DINDEX"}
#: ``EventType`` names of entries that carry no rows and no DDL.
_NOT_ROWS = {"GTID", "XACOMMIT", "XAROLLBACK", "MHEARTBEAT", "TRANSACTIONBEGIN", "TRANSACTIONEND"}


def parse_canal(message: Any) -> list[Parsed]:
    """The changes in one Canal flat message; raises BadInput for a message that is not one."""
    if not isinstance(message, dict):
        raise BadInput("Canal message is not a JSON object")
    kind_name = str(require(message, "type", "Canal message")).upper()
    database = str(message.get("database") or "")
    sql = message.get("sql") if isinstance(message.get("sql"), str) else ""
    executed_ms = whole(require(message, "es", "Canal message"), "Canal message 'es'", limit=LIMITS["time"])
    gtid = parse_gtid_set(message.get("gtid"), "Canal message 'gtid'")
    position = Position(executed_ms, gtid=gtid)
    if kind_name in _KINDS and not message.get("isDdl"):
        return _rows(message, database, _KINDS[kind_name], executed_ms, gtid)
    if kind_name in _NOT_ROWS:
        return [Ignored(f"canal {kind_name.lower()} entry")]
    tables = ddl_tables(sql, database) if sql else []
    if kind_name in _DDL or message.get("isDdl") or tables:
        if not tables and message.get("table"):
            tables = [(database, str(message["table"]))]
        if not tables:
            return [Ignored("canal DDL on no table")]
        return [SchemaChange(schema, table, sql or kind_name, position) for schema, table in tables]
    if kind_name == "QUERY":
        return [Ignored("canal rows-query entry")]
    raise BadInput(f"Canal message type {message['type']!r} is not a row change, DDL or query entry")


def _rows(message: dict[str, Any], database: str, kind: str, executed_ms: int,
          gtid: tuple[str, int] | None) -> list[Parsed]:
    table = str(require(message, "table", "Canal message"))
    if not database:
        raise BadInput("Canal message has no 'database'")
    rows = require(message, "data", "Canal message")
    if not isinstance(rows, list) or not rows:
        raise BadInput("Canal message 'data' is not a non-empty list of rows")
    olds = message.get("old") or []
    if not isinstance(olds, list):
        raise BadInput("Canal message 'old' is not a list")
    names = message.get("pkNames") or []
    primary_key = tuple(str(name) for name in names) if isinstance(names, list) else ()
    events: list[Parsed] = []
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise BadInput(f"Canal message row {index} is not an object")
        old = olds[index] if index < len(olds) and isinstance(olds[index], dict) else {}
        before: dict[str, Any] | None
        after: dict[str, Any] | None
        if kind == "insert":
            before, after = None, row
        elif kind == "update":
            # 'old' holds only the changed columns' previous values.
            before, after = {**row, **old}, row
        else:
            before, after = row, None
        events.append(ChangeEvent(
            database=database, table=table, kind=kind,  # type: ignore[arg-type]
            before=before, after=after, primary_key=primary_key,
            position=Position(executed_ms, gtid=gtid, row=index),
        ))
    return events
