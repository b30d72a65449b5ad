"""No decoding error escapes a line: whatever JSON value sits in any column of any followed table
(or in any field of a message's envelope), reading the line either succeeds or raises BadInput,
which quarantines that line alone."""

from __future__ import annotations

import json
from typing import Any
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows import Route, route
from flows.registry import ACCEPTED
from inputs.events import BadInput
from inputs.formats import parse_line

TABLES = sorted(ACCEPTED.tables)
#: Every JSON value: scalars of every kind (NaN and infinities too: Python's json reads them),
#: and nested lists and objects.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 80), max_value=1 << 80)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=40)
    | st.sampled_from(["0000-00-00 00:00:00", "2026-02-30", "9999-12-31T23:59:59.999Z", "MjI=", "////",
                       "1e999999", "-0.001", "25,00", "  12  ", "24:00:00", "838:59:59.000001", "null"]),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8), children, max_size=3),
    max_leaves=6,
)
ROUTES = st.sampled_from([Route(), Route(ZoneInfo("Asia/Shanghai"), ("gqsh",)), Route(databases=("*",))])


def _read(input_format: str, document: Any, route_: Route) -> None:
    """Parse and route one line; any error but BadInput fails the test."""
    try:
        for parsed in parse_line(input_format, json.dumps(document)):
            route(ACCEPTED, parsed, input_format, route_)
    except BadInput:
        pass


#: A value every reader accepts, per kind of declared type: the other columns of a row are
#: valid, so the value under test is the one read.
VALID = {"text": "x", "int": "1", "decimal": "1.00", "datetime": "2026-11-02 09:30:00",
         "timestamp": "2026-11-02 09:30:00", "date": "2026-11-02", "time": "10:00:00"}


def _row(table: str, column: str, value: Any) -> dict[str, Any]:
    row: dict[str, Any] = {name: VALID[kind.kind] for name, kind in ACCEPTED.tables[table].types.items()}
    row[column] = value
    return row


def _canal(table: str, row: dict[str, Any], gtid: Any = None) -> dict[str, Any]:
    return {"id": 1, "database": "gqsh", "table": table, "pkNames": [ACCEPTED.tables[table].key], "isDdl": False,
            "type": "UPDATE", "es": 1793611800000, "ts": 1793611800100, "sql": "", "data": [row],
            "old": [{"status": "10"}], "gtid": gtid}


def _debezium(table: str, row: dict[str, Any], source: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"before": row, "after": row, "op": "u", "ts_ms": 1793611800100,
            "source": {"connector": "mysql", "db": "gqsh", "table": table, "server_id": 1, "file": "mysql-bin.000003",
                       "pos": 4015, "row": 0, "ts_ms": 1793611800000, "snapshot": "false", **(source or {})}}


def _envelope(table: str, row: dict[str, Any]) -> dict[str, Any]:
    logical = [{"field": "pay_amount", "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
                "parameters": {"scale": "2"}},
               {"field": "created_at", "type": "int64", "name": "io.debezium.time.MicroTimestamp"},
               {"field": "paid_at", "type": "int64", "name": "io.debezium.time.NanoTimestamp"},
               {"field": "updated_at", "type": "int32", "name": "io.debezium.time.Date"},
               {"field": "status", "type": "int64", "name": "io.debezium.time.MicroTime"}]
    return {"schema": {"type": "struct", "fields": [{"field": "before", "fields": logical},
                                                    {"field": "after", "fields": logical}]},
            "payload": _debezium(table, row)}


def _flat(table: str, row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "__op": "u", "__source_db": "gqsh", "__source_table": table, "__source_ts_ms": 1793611800000,
            "__source_file": "mysql-bin.000003", "__source_pos": 4015, "__deleted": "false"}


PROPERTY = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(st.sampled_from(TABLES), st.data(), JSON, ROUTES)
def test_any_value_in_any_column_is_read_or_refused_with_a_reason(table: str, data, value: Any,
                                                                  route_: Route) -> None:  # type: ignore[no-untyped-def]
    column = data.draw(st.sampled_from(sorted(ACCEPTED.tables[table].columns)))
    row = _row(table, column, value)
    _read("canal", _canal(table, row), route_)
    _read("debezium", _debezium(table, row), route_)
    _read("debezium", _envelope(table, row), route_)
    _read("debezium", _flat(table, row), route_)


@PROPERTY
@given(st.sampled_from(["gtid", "file", "pos", "row", "ts_ms", "snapshot", "server_id", "db", "table"]), JSON)
def test_any_value_in_a_position_field_is_read_or_refused_with_a_reason(field: str, value: Any) -> None:
    row = _row("gqsh_order", "status", "10")
    _read("debezium", _debezium("gqsh_order", row, {field: value}), Route())
    _read("debezium", _flat("gqsh_order", row) | {f"__source_{field}": value}, Route())
    canal = _canal("gqsh_order", row, gtid=value if field == "gtid" else None)
    if field in ("ts_ms", "db", "table"):
        canal[{"ts_ms": "es", "db": "database", "table": "table"}[field]] = value
    _read("canal", canal, Route())


@PROPERTY
@given(JSON)
def test_any_json_document_is_read_or_refused_with_a_reason(document: Any) -> None:
    for input_format in ("canal", "debezium", "business"):
        _read(input_format, document, Route())


@PROPERTY
@given(st.sampled_from(["source", "order_id", "operation_type", "unique_key", "payload", "occurred_at"]), JSON,
       st.sampled_from(["pay_txn_id", "pay_channel", "paid_amount", "paid_at"]), JSON)
def test_any_value_in_a_business_write_is_read_or_refused_with_a_reason(field: str, value: Any, column: str,
                                                                        payload_value: Any) -> None:
    write = {"source": "payment", "order_id": "O1", "operation_type": "PAY", "unique_key": "T1",
             "payload": {"pay_txn_id": "T1", "pay_channel": "wechat", "paid_amount": "25.00",
                         "paid_at": "2026-11-02T09:40:00", column: payload_value},
             "occurred_at": "2026-11-02T09:40:00"}
    _read("business", write, Route())
    _read("business", write | {field: value}, Route())
