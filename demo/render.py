"""Source changes as the CDC readers put them on the wire, and in the order they arrive.

A ``SourceChange`` is one row change with native Python values; ``render_canal`` and
``render_debezium`` turn it into the JSON line Canal or Debezium would send for a table of a
``SourceDatabase`` (its name, and each table's key and declared column types).  Shapes follow:

- Canal's flat message (``canal.mq.flatMessage=true``), as ``FlatMessage`` defines it:
  https://github.com/alibaba/canal/blob/master/protocol/src/main/java/com/alibaba/otter/canal/protocol/FlatMessage.java
  and https://github.com/alibaba/canal/wiki/Canal-Kafka-RocketMQ-QuickStart : every value as
  the text MySQL prints, ``old`` holding only the changed columns' previous values.
- Debezium's MySQL connector, 2.x, ``value.converter.schemas.enable=false``:
  https://debezium.io/documentation/reference/2.5/connectors/mysql.html (change events, and
  "Data type mappings": DECIMAL with ``decimal.handling.mode=precise``, DATETIME as
  ``io.debezium.time.Timestamp``/``MicroTimestamp``, TIMESTAMP as ``ZonedTimestamp``, DATE as
  ``io.debezium.time.Date``).

A table the ``SourceDatabase`` does not declare is rendered as the gqsh demo always rendered
its tables (key: the first column; decimals at two places; TIMESTAMP by column name), so
``demo.history`` keeps producing the same bytes.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from inputs.columns import ColumnType, column_type

#: The source server's uuid in the rendered GTIDs (every source runs with GTIDs, as recommended).
SOURCE_UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"
_EPOCH_DAY = dt.date(1970, 1, 1)
#: ``java.sql.Types`` codes Canal puts in ``sqlType``, by the type's name.
_SQL_TYPES = {"tinyint": -6, "smallint": 5, "mediumint": 4, "int": 4, "integer": 4, "bigint": -5,
              "decimal": 3, "char": 1, "varchar": 12, "text": -1, "date": 91, "datetime": 93, "timestamp": 93,
              "time": 92}


@dataclass
class SourceChange:
    """One row change at the source, with native values."""

    table: str
    kind: str  # insert | update | delete
    row: dict[str, Any]
    at: dt.datetime
    before: dict[str, Any] | None = None


@dataclass(frozen=True)
class SourceTable:
    """What rendering needs of one table: its unique key and its columns' declared types."""

    key: tuple[str, ...]
    types: Mapping[str, ColumnType]

    @classmethod
    def declared(cls, key: tuple[str, ...], columns: Mapping[str, str]) -> SourceTable:
        """From a declaration's key and ``column -> type`` (``inputs.columns`` names); raises
        ValueError naming a type it does not read."""
        return cls(tuple(key), {name: column_type(kind) for name, kind in columns.items()})


@dataclass(frozen=True)
class SourceDatabase:
    """A source database as the readers see it: its name, and its declared tables."""

    name: str
    tables: Mapping[str, SourceTable] = field(default_factory=dict)
    #: Columns of undeclared tables that are TIMESTAMP (the gqsh demo's ``updated_at``).
    undeclared_timestamps: frozenset[str] = frozenset()

    @property
    def server_name(self) -> str:
        """Debezium's ``topic.prefix``, which its events carry as ``source.name``."""
        return f"{self.name}-source"

    def key(self, change: SourceChange) -> list[str]:
        declared = self.tables.get(change.table)
        return list(declared.key) if declared else [next(iter(change.row))]

    def type_of(self, table: str, column: str) -> ColumnType | None:
        declared = self.tables.get(table)
        return declared.types.get(column) if declared else None


def _millis(moment: dt.datetime) -> int:
    return int(moment.replace(tzinfo=dt.UTC).timestamp() * 1000)


def _clock(moment: dt.datetime, digits: int, separator: str) -> str:
    """``moment`` as MySQL prints it with ``digits`` fractional digits."""
    text = moment.strftime(f"%Y-%m-%d{separator}%H:%M:%S")
    return text + (f".{moment.microsecond:06d}"[: digits + 1] if digits else "")


def _scaled(value: Decimal, kind: ColumnType) -> Decimal:
    return value.quantize(Decimal(1).scaleb(-kind.scale))


def _canal_text(value: Any, kind: ColumnType | None) -> str | None:
    """A value as Canal sends it: the text MySQL prints for the column."""
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return _clock(value, 3 if kind is None else kind.size or 0, " ")
    if isinstance(value, Decimal) and kind is not None and kind.name == "decimal":
        return str(_scaled(value, kind))
    return str(value)


def _mysql_type(kind: ColumnType) -> str:
    """The column's type as MySQL names it (``datetime``, not ``datetime(0)``)."""
    if kind.name in ("datetime", "timestamp", "time") and not kind.size:
        return kind.name
    return kind.declaration


def render_canal(change: SourceChange, sequence: int, source: SourceDatabase) -> str:
    """A Canal 1.1.7 flat message; ``sequence`` is the transaction's place in commit order, so
    ``gtid`` (the executed GTID set up to it) orders it.  A declared table's message carries
    ``mysqlType`` and ``sqlType`` as Canal fills them from the table's metadata."""
    def text(row: dict[str, Any]) -> dict[str, str | None]:
        return {k: _canal_text(v, source.type_of(change.table, k)) for k, v in row.items()}

    message: dict[str, Any] = {
        "id": sequence, "database": source.name, "table": change.table, "isDdl": False,
        "type": change.kind.upper(), "es": _millis(change.at), "ts": _millis(change.at) + 5,
        "pkNames": source.key(change),
        "data": [text(change.row)],
        "old": None, "gtid": f"{SOURCE_UUID}:1-{sequence + 1}", "sql": "",
    }
    declared = source.tables.get(change.table)
    if declared is not None:
        message["mysqlType"] = {name: _mysql_type(kind) for name, kind in declared.types.items()}
        message["sqlType"] = {name: _SQL_TYPES.get(kind.name, 12) for name, kind in declared.types.items()}
    if change.kind == "update" and change.before is not None:
        message["old"] = [text({k: v for k, v in change.before.items() if change.row.get(k) != v})]
    return json.dumps(message)


def _unscaled_bytes(value: Decimal, scale: int) -> str:
    """decimal.handling.mode=precise: the unscaled value's big-endian two's complement bytes, base64."""
    unscaled = int(value.scaleb(scale).to_integral_value())
    size = max(1, (unscaled.bit_length() + 8) // 8)
    return base64.b64encode(unscaled.to_bytes(size, "big", signed=True)).decode()


def _debezium_value(name: str, value: Any, kind: ColumnType | None, source: SourceDatabase) -> Any:
    """A value as the Debezium MySQL connector sends it by default, without the schema envelope."""
    zoned = kind.name == "timestamp" if kind is not None else name in source.undeclared_timestamps
    if isinstance(value, dt.datetime) and zoned:
        # io.debezium.time.ZonedTimestamp: UTC text, with the column's fractional digits.
        return _clock(value, 3 if kind is None else kind.size or 0, "T") + "Z"
    if isinstance(value, dt.datetime):
        if kind is not None and (kind.size or 0) > 3:
            return _millis(value) * 1000 + value.microsecond % 1000  # io.debezium.time.MicroTimestamp
        return _millis(value)  # DATETIME(0-3): io.debezium.time.Timestamp
    if isinstance(value, dt.date):
        return (value - _EPOCH_DAY).days  # io.debezium.time.Date
    if isinstance(value, Decimal):
        return _unscaled_bytes(value, kind.scale if kind is not None and kind.name == "decimal" else 2)
    return value


def _debezium_row(table: str, row: dict[str, Any], source: SourceDatabase) -> dict[str, Any]:
    return {k: _debezium_value(k, v, source.type_of(table, k), source) for k, v in row.items()}


def render_debezium(change: SourceChange, sequence: int, source: SourceDatabase) -> str:
    """A Debezium 2.x MySQL change event (schemas.enable=false); ``sequence`` is the
    transaction's place in commit order."""
    op = {"insert": "c", "update": "u", "delete": "d"}[change.kind]
    before = change.before if change.before else (change.row if op == "d" else None)
    event = {
        "before": None if before is None else _debezium_row(change.table, before, source),
        "after": None if op == "d" else _debezium_row(change.table, change.row, source),
        "op": op,
        "ts_ms": _millis(change.at) + 5,
        "source": {"version": "2.5.4.Final", "connector": "mysql", "name": source.server_name,
                   "ts_ms": _millis(change.at), "snapshot": "false", "db": source.name, "sequence": None,
                   "table": change.table, "server_id": 1, "gtid": f"{SOURCE_UUID}:{sequence + 1}",
                   "file": f"mysql-bin.{1 + sequence // 10**6:06d}", "pos": 4 + sequence % 10**6 * 256,
                   "row": 0, "thread": 7, "query": None},
        "transaction": None,
    }
    return json.dumps(event)


def render(input_format: str, change: SourceChange, sequence: int, source: SourceDatabase) -> str:
    """``change`` as ``input_format`` ('canal' or 'debezium'); ValueError for another format."""
    if input_format == "canal":
        return render_canal(change, sequence, source)
    if input_format == "debezium":
        return render_debezium(change, sequence, source)
    raise ValueError(f"input format {input_format!r} is neither 'canal' nor 'debezium'")


def disorder(lines: list[tuple[str, str]], rng: random.Random, displacement: int,
             duplicate_rate: float) -> tuple[list[tuple[str, str]], int]:
    """``lines`` as a queue delivers them: each moved up to ``displacement`` places from where it
    was committed, and ``duplicate_rate`` of them delivered twice, the copy up to
    ``displacement`` places later.  Returns the lines and how many were duplicated."""
    keyed = sorted(enumerate(lines), key=lambda pair: pair[0] + rng.uniform(0, displacement))
    arrivals = [line for _, line in keyed]
    duplicated = 0
    for _ in range(int(len(arrivals) * duplicate_rate)):
        index = rng.randrange(len(arrivals))
        arrivals.insert(min(len(arrivals), index + rng.randint(1, displacement)), arrivals[index])
        duplicated += 1
    return arrivals, duplicated
