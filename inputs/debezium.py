"""Debezium change events, with or without the ``schema``/``payload`` envelope."""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from inputs.events import BadInput, ChangeEvent, Parsed, require

_KINDS = {"c": "insert", "r": "insert", "u": "update", "d": "delete"}
_BINLOG_SEQUENCE = re.compile(r"(\d+)$")


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


def parse_debezium(event: Any) -> list[Parsed]:
    """The change in one Debezium event; a tombstone (null) yields nothing.

    Raises BadInput for an event that is not a Debezium change.
    """
    if event is None:
        return []
    if isinstance(event, dict) and "payload" in event and "schema" in event:
        event = event["payload"]
        if event is None:
            return []
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
    before, after = event.get("before"), event.get("after")
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
