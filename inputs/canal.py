"""Canal flat messages (as Canal puts them on Kafka): several rows per message, values as strings."""

from __future__ import annotations

import datetime as dt
from typing import Any

from inputs.events import BadInput, ChangeEvent, Parsed, SchemaChange, require

_KINDS = {"INSERT": "insert", "UPDATE": "update", "DELETE": "delete"}


def _int(message: dict[str, Any], key: str) -> int:
    value = require(message, key, "Canal message")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise BadInput(f"Canal message {key!r} is not an integer: {value!r}") from None


def parse_canal(message: Any) -> list[Parsed]:
    """The changes in one Canal flat message; raises BadInput for a message that is not one."""
    database = require(message, "database", "Canal message")
    table = require(message, "table", "Canal message")
    executed_ms = _int(message, "es")
    message_id = _int(message, "id")
    position = f"{executed_ms:013d}.{message_id:020d}"
    if message.get("isDdl"):
        return [SchemaChange(database, table, str(message.get("sql") or ""), position)]
    kind = _KINDS.get(str(require(message, "type", "Canal message")).upper())
    if kind is None:
        raise BadInput(f"Canal message type {message['type']!r} is not INSERT, UPDATE or DELETE")
    rows = require(message, "data", "Canal message")
    if not isinstance(rows, list) or not rows:
        raise BadInput("Canal message 'data' is not a non-empty list of rows")
    olds = message.get("old") or []
    if not isinstance(olds, list):
        raise BadInput("Canal message 'old' is not a list")
    primary_key = tuple(message.get("pkNames") or ())
    committed_at = dt.datetime.fromtimestamp(executed_ms / 1000, dt.UTC).replace(tzinfo=None)
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
        events.append(
            ChangeEvent(
                database=database,
                table=table,
                kind=kind,  # type: ignore[arg-type]
                before=before,
                after=after,
                primary_key=primary_key,
                position=f"{position}.{index:05d}",
                committed_at=committed_at,
            )
        )
    return events
