"""Debezium MySQL connector messages (2.x), with or without the ``schema``/``payload`` envelope
(``value.converter.schemas.enable``), and in the flat form of the ``ExtractNewRecordState``
transform.

Every message gets a verdict:

- a change event (``op`` c, u, d, r): one change, at the strongest position its ``source``
  carries (``gtid``; ``file``/``pos``/``row`` on ``server_id``; ``snapshot``; ``ts_ms``);
- ``op`` t (TRUNCATE) and a schema-change event (``ddl``): a schema change, recorded;
- a tombstone (null), a transaction marker (``status`` BEGIN/END, from
  ``provide.transaction.metadata``) and a heartbeat (only ``ts_ms``): ignored.

With the envelope, values are decoded by the schema's logical types; without it, the flow's
declared column types decode them (``inputs.columns``).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from decimal import Decimal
from typing import Any

from inputs.ddl import ddl_tables
from inputs.events import BadInput, ChangeEvent, Ignored, Parsed, SchemaChange, require
from inputs.positions import LIMITS, Position, binlog_index, parse_gtid, whole

_KINDS = {"c": "insert", "r": "insert", "u": "update", "d": "delete"}
_EPOCH = dt.datetime(1970, 1, 1)
_EPOCH_DAY = dt.date(1970, 1, 1)
#: ``source.snapshot`` values of rows read by a snapshot ("false" and absent are streamed).
_SNAPSHOT = {"true", "first", "last", "first_in_data_collection", "last_in_data_collection", "incremental"}
#: The prefix ``ExtractNewRecordState`` gives the fields ``add.fields`` adds (``add.fields.prefix``).
FLAT_PREFIX = "__"


def position_of(source: dict[str, Any], ts_ms: Any, op: str | None = None) -> Position:
    """The position a Debezium ``source`` block gives; BadInput when a field is malformed."""
    time_ms = whole(source.get("ts_ms") if source.get("ts_ms") is not None else ts_ms, "Debezium 'ts_ms'",
                    limit=LIMITS["time"])
    snapshot = op == "r" or str(source.get("snapshot", "false")).lower() in _SNAPSHOT
    binlog = None
    if source.get("file"):
        binlog = (binlog_index(source["file"], "Debezium source 'file'"),
                  whole(source.get("pos"), "Debezium 'pos'", 0, LIMITS["offset"]))
    return Position(
        time_ms=time_ms,
        gtid=parse_gtid(source.get("gtid"), "Debezium source 'gtid'"),
        binlog=binlog,
        server=whole(source.get("server_id"), "Debezium 'server_id'", 0, LIMITS["server"]),
        row=whole(source.get("row"), "Debezium 'row'", 0, LIMITS["row"]),
        snapshot=snapshot,
    )


# --- the schema envelope -------------------------------------------------------------------------


def _decimal(value: Any, scale: int, field: str) -> Any:
    """decimal.handling.mode=precise: the unscaled value as big-endian two's complement bytes,
    base64-encoded; the scale is in the schema."""
    if not isinstance(value, str):
        return value
    try:
        unscaled = int.from_bytes(base64.b64decode(value, validate=True), "big", signed=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"Debezium field {field!r}: {value!r} is not a base64 decimal") from None
    return Decimal(unscaled).scaleb(-scale)


def _epoch(value: Any, per_second: int, field: str) -> Any:
    """Timestamp/MicroTimestamp/NanoTimestamp: the wall-clock value counted as if it were UTC."""
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    seconds, fraction = divmod(value, per_second)
    try:
        return _EPOCH + dt.timedelta(seconds=seconds, microseconds=fraction * 1_000_000 // per_second)
    except OverflowError:
        raise BadInput(f"Debezium field {field!r}: {value!r} is out of range for a time") from None


def _days(value: Any, field: str) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    try:
        return _EPOCH_DAY + dt.timedelta(days=value)
    except OverflowError:
        raise BadInput(f"Debezium field {field!r}: {value!r} is out of range for a date") from None


def _time_of_day(value: Any, per_second: int) -> Any:
    if not isinstance(value, int) or isinstance(value, bool) or abs(value) > 10**15:
        return value
    return dt.timedelta(microseconds=value * 1_000_000 // per_second)


_LOGICAL = {
    "io.debezium.time.Timestamp": lambda v, n: _epoch(v, 1000, n),
    "org.apache.kafka.connect.data.Timestamp": lambda v, n: _epoch(v, 1000, n),
    "io.debezium.time.MicroTimestamp": lambda v, n: _epoch(v, 1_000_000, n),
    "io.debezium.time.NanoTimestamp": lambda v, n: _epoch(v, 1_000_000_000, n),
    "io.debezium.time.Date": lambda v, n: _days(v, n),
    "org.apache.kafka.connect.data.Date": lambda v, n: _days(v, n),
    "io.debezium.time.MicroTime": lambda v, n: _time_of_day(v, 1_000_000),
    "io.debezium.time.Time": lambda v, n: _time_of_day(v, 1000),
    "io.debezium.time.NanoTime": lambda v, n: _time_of_day(v, 1_000_000_000),
}


def _decoders(schema: Any, image: str) -> dict[str, Any]:
    """Field name -> decoder, from the envelope's schema of the ``before``/``after`` struct."""
    decoders: dict[str, Any] = {}
    if not isinstance(schema, dict):
        return decoders
    fields = schema.get("fields")
    struct = next((f for f in fields if isinstance(f, dict) and f.get("field") == image), None) \
        if isinstance(fields, list) else None
    inner = struct.get("fields") if isinstance(struct, dict) else None
    for field in inner if isinstance(inner, list) else []:
        if not isinstance(field, dict):
            continue
        name, logical = str(field.get("field")), field.get("name")
        if logical == "org.apache.kafka.connect.data.Decimal":
            parameters = field.get("parameters")
            scale = whole(parameters.get("scale") if isinstance(parameters, dict) else None,
                          f"Debezium schema scale of {name!r}", 0, limit=65)
            decoders[name] = lambda v, s=scale, n=name: _decimal(v, s, n)
        elif logical in _LOGICAL:
            decoders[name] = lambda v, f=_LOGICAL[logical], n=name: f(v, n)
    return decoders


def _decode(row: Any, decoders: dict[str, Any]) -> Any:
    if not isinstance(row, dict) or not decoders:
        return row
    return {name: decoders[name](value) if name in decoders and value is not None else value
            for name, value in row.items()}


# --- messages ---------------------------------------------------------------------------------


def _schema_change(event: dict[str, Any]) -> list[Parsed]:
    source: dict[str, Any] = event["source"] if isinstance(event.get("source"), dict) else {}
    database = str(event.get("databaseName") or source.get("db") or "")
    sql = event["ddl"]
    if not isinstance(sql, str):
        raise BadInput("Debezium schema change 'ddl' is not text")
    position = position_of(source, event.get("ts_ms"))
    tables = ddl_tables(sql, database)
    if not tables and source.get("table"):
        tables = [(database, str(source["table"]))]
    if not tables:
        return [Ignored("debezium DDL on no table")]
    return [SchemaChange(schema, table, sql, position) for schema, table in tables]


def _flat(record: dict[str, Any]) -> list[Parsed]:
    """``ExtractNewRecordState``: the row's columns with the fields ``add.fields`` asked for
    (``__op``, ``__source_db``, ``__source_table``, ``__source_file``, ``__source_pos``, ...)
    and, with ``delete.handling.mode=rewrite``, ``__deleted``."""
    extra = {name[len(FLAT_PREFIX):]: value for name, value in record.items() if name.startswith(FLAT_PREFIX)}
    row = {name: value for name, value in record.items() if not name.startswith(FLAT_PREFIX)}
    source = {name[len("source_"):]: value for name, value in extra.items() if name.startswith("source_")}
    database = source.get("db") or extra.get("db")
    table = source.get("table") or extra.get("table")
    if not database or not table:
        raise BadInput("Debezium flat record has no __source_db/__source_table: add source.db and source.table "
                       "to the ExtractNewRecordState add.fields")
    op = extra.get("op")
    if op is not None and not isinstance(op, str):
        raise BadInput(f"Debezium flat record __op {op!r} is not one of c, u, d, r, t")
    deleted = str(extra.get("deleted", "false")).lower() == "true" or op == "d"
    if op == "t":
        return [SchemaChange(str(database), str(table), f"TRUNCATE TABLE `{database}`.`{table}`",
                             position_of(source, extra.get("ts_ms") or 0))]
    if op is not None and op not in _KINDS:
        raise BadInput(f"Debezium flat record __op {op!r} is not one of c, u, d, r, t")
    if source.get("ts_ms") is None and extra.get("ts_ms") is None:
        raise BadInput("Debezium flat record has no __source_ts_ms: add source.ts_ms to add.fields")
    kind = "delete" if deleted else _KINDS.get(str(op), "update")
    return [ChangeEvent(
        database=str(database), table=str(table), kind=kind,  # type: ignore[arg-type]
        before=row if deleted else None, after=None if deleted else row, primary_key=(),
        position=position_of(source, extra.get("ts_ms"), None if op is None else str(op)),
    )]


def parse_debezium(event: Any) -> list[Parsed]:
    """The verdict on one Debezium message (see the module's docstring).

    Raises BadInput for a message that is none of those.
    """
    if event is None:
        return [Ignored("debezium tombstone")]
    schema = None
    if isinstance(event, dict) and "payload" in event and set(event) <= {"schema", "payload"}:
        schema, event = event.get("schema"), event["payload"]
        if event is None:
            return [Ignored("debezium tombstone")]
    if not isinstance(event, dict):
        raise BadInput("Debezium message is not a JSON object")
    if "ddl" in event:
        return _schema_change(event)
    if event.get("status") in ("BEGIN", "END") and "id" in event and "op" not in event:
        return [Ignored("debezium transaction marker")]
    if set(event) == {"ts_ms"}:
        return [Ignored("debezium heartbeat")]
    if "op" not in event and "source" not in event and any(name.startswith(FLAT_PREFIX) for name in event):
        return _flat(event)
    op = require(event, "op", "Debezium event")
    if op != "t" and (not isinstance(op, str) or op not in _KINDS):
        raise BadInput(f"Debezium op {op!r} is not one of c, u, d, r, t")
    source = require(event, "source", "Debezium event")
    if not isinstance(source, dict):
        raise BadInput("Debezium event 'source' is not an object")
    database = str(require(source, "db", "Debezium source"))
    table = str(require(source, "table", "Debezium source"))
    position = position_of(source, event.get("ts_ms"), str(op))
    if op == "t":
        return [SchemaChange(database, table, f"TRUNCATE TABLE `{database}`.`{table}`", position)]
    kind = _KINDS[op]
    before = _decode(event.get("before"), _decoders(schema, "before"))
    after = _decode(event.get("after"), _decoders(schema, "after"))
    if kind == "delete" and not isinstance(before, dict):
        raise BadInput("Debezium delete has no 'before' row")
    if kind != "delete" and not isinstance(after, dict):
        raise BadInput("Debezium change has no 'after' row")
    return [ChangeEvent(database=database, table=table, kind=kind,  # type: ignore[arg-type]
                        before=before, after=after, primary_key=(), position=position)]
