"""Debezium change events, with or without the ``schema``/``payload`` envelope, and Debezium
schema-change events (``ddl``)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import re
from decimal import Decimal
from typing import Any

from inputs.ddl import ddl_tables
from inputs.events import BadInput, ChangeEvent, Parsed, SchemaChange, require

_KINDS = {"c": "insert", "r": "insert", "u": "update", "d": "delete"}
_BINLOG_SEQUENCE = re.compile(r"(\d+)$")
_EPOCH = dt.datetime(1970, 1, 1)


def _position(source: dict[str, Any], ts_ms: int) -> str:
    file = str(source.get("file") or "")
    match = _BINLOG_SEQUENCE.search(file)
    sequence = int(match.group(1)) if match else 0
    try:
        offset = int(source.get("pos") or 0)
        row = int(source.get("row") or 0)
    except (TypeError, ValueError):
        raise BadInput("Debezium source 'pos'/'row' is not an integer") from None
    return f"{ts_ms:013d}.{sequence:08d}{offset:012d}.{row:05d}"


def _decimal(value: Any, scale: int, field: str) -> Any:
    """decimal.handling.mode=precise sends the unscaled value as big-endian two's complement
    bytes, base64-encoded; the scale is in the schema."""
    if not isinstance(value, str):
        return value
    try:
        unscaled = int.from_bytes(base64.b64decode(value, validate=True), "big", signed=True)
    except (binascii.Error, ValueError):
        raise BadInput(f"Debezium field {field!r}: {value!r} is not a base64 decimal") from None
    return Decimal(unscaled).scaleb(-scale)


def _time(value: Any, per_second: int) -> Any:
    if not isinstance(value, int) or isinstance(value, bool):
        return value
    seconds, fraction = divmod(value, per_second)
    return _EPOCH + dt.timedelta(seconds=seconds, microseconds=fraction * 1_000_000 // per_second)


def _decoders(schema: Any, image: str) -> dict[str, Any]:
    """Field name -> decoder, from the envelope's schema of the ``before``/``after`` struct."""
    decoders: dict[str, Any] = {}
    if not isinstance(schema, dict):
        return decoders
    struct = next((f for f in schema.get("fields") or [] if isinstance(f, dict) and f.get("field") == image), None)
    for field in (struct or {}).get("fields") or []:
        if not isinstance(field, dict):
            continue
        name, logical = str(field.get("field")), field.get("name")
        if logical == "org.apache.kafka.connect.data.Decimal":
            scale = int((field.get("parameters") or {}).get("scale") or 0)
            decoders[name] = lambda v, s=scale, n=name: _decimal(v, s, n)
        elif logical == "io.debezium.time.MicroTimestamp":
            decoders[name] = lambda v: _time(v, 1_000_000)
        elif logical == "io.debezium.time.NanoTimestamp":
            decoders[name] = lambda v: _time(v, 1_000_000_000)
        elif logical == "io.debezium.time.Date":
            decoders[name] = lambda v: (_EPOCH + dt.timedelta(days=v)) if isinstance(v, int) else v
    return decoders


def _decode(row: Any, decoders: dict[str, Any]) -> Any:
    if not isinstance(row, dict) or not decoders:
        return row
    return {name: decoders[name](value) if name in decoders and value is not None else value
            for name, value in row.items()}


def _schema_change(event: dict[str, Any]) -> list[Parsed]:
    source: dict[str, Any] = event["source"] if isinstance(event.get("source"), dict) else {}
    ts_ms = source.get("ts_ms") or event.get("ts_ms") or 0
    if not isinstance(ts_ms, int):
        raise BadInput(f"Debezium schema change has no integer ts_ms: {ts_ms!r}")
    database = str(event.get("databaseName") or source.get("db") or "")
    sql = str(event["ddl"])
    position = _position(source, ts_ms)
    tables = ddl_tables(sql, database)
    if not tables and source.get("table"):
        tables = [(database, str(source["table"]))]
    return [SchemaChange(schema, table, sql, position) for schema, table in tables]


def parse_debezium(event: Any) -> list[Parsed]:
    """The change in one Debezium event; a tombstone (null) yields nothing.

    Raises BadInput for an event that is not a Debezium change or schema change.
    """
    if event is None:
        return []
    schema = None
    if isinstance(event, dict) and "payload" in event and "schema" in event:
        schema, event = event["schema"], event["payload"]
        if event is None:
            return []
    if isinstance(event, dict) and "ddl" in event:
        return _schema_change(event)
    op = require(event, "op", "Debezium event")
    kind = _KINDS.get(op)
    if kind is None:
        raise BadInput(f"Debezium op {op!r} is not one of c, u, d, r")
    source = require(event, "source", "Debezium event")
    database = require(source, "db", "Debezium source")
    table = require(source, "table", "Debezium source")
    ts_ms = source.get("ts_ms") or event.get("ts_ms")
    if not isinstance(ts_ms, int):
        raise BadInput(f"Debezium event has no integer ts_ms: {ts_ms!r}")
    before = _decode(event.get("before"), _decoders(schema, "before"))
    after = _decode(event.get("after"), _decoders(schema, "after"))
    if kind == "delete" and not isinstance(before, dict):
        raise BadInput("Debezium delete has no 'before' row")
    if kind != "delete" and not isinstance(after, dict):
        raise BadInput("Debezium change has no 'after' row")
    return [
        ChangeEvent(
            database=database,
            table=table,
            kind=kind,  # type: ignore[arg-type]
            before=before,
            after=after,
            primary_key=(),
            position=_position(source, ts_ms),
            committed_at=dt.datetime.fromtimestamp(ts_ms / 1000, dt.UTC).replace(tzinfo=None),
        )
    ]
