"""Normalisation of Canal, Debezium and business lines into one change-event shape."""

import base64
import datetime as dt
import json
from decimal import Decimal

import pytest

from flows import route
from flows.registry import ACCEPTED as ORDER_FLOW
from inputs.ddl import ddl_tables
from inputs.events import BadInput, ChangeEvent, Ignored, SchemaChange
from inputs.formats import parse_line
from inputs.positions import EXECUTED_SET, Basis, compare
from tests.factories import OrderHeaderFactory, PaymentWriteFactory, business, canal, debezium


def test_canal_insert_becomes_a_typed_change_event() -> None:
    header = OrderHeaderFactory()
    [event] = parse_line("canal", canal("gqsh_order", header, sequence=77))
    assert isinstance(event, ChangeEvent)
    assert (event.database, event.table, event.kind, event.before) == ("gqsh", "gqsh_order", "insert", None)
    assert event.after is not None and event.after["total_amount"] == "25.00"  # Canal sends strings
    committed_ms = int(dt.datetime(2026, 11, 2, 9, 30, 0, 125000, dt.UTC).timestamp() * 1000)
    # Ordered by its GTID set (78 transactions up to it), with its execution time as fallback
    assert event.position.time_ms == committed_ms and event.position.gtid == (EXECUTED_SET, 78)


def test_canal_update_rebuilds_the_before_image_from_old() -> None:
    header = OrderHeaderFactory()
    paid = {**header, "status": 20}
    [event] = parse_line("canal", canal("gqsh_order", paid, kind="update", before=header))
    assert event.kind == "update"
    assert event.before["status"] == "10" and event.after["status"] == "20"
    assert event.before["order_id"] == header["order_id"]


def test_canal_message_with_several_rows_yields_one_event_each_in_order() -> None:
    message = json.loads(canal("gqsh_order_item", {"item_id": 1, "order_id": "O1"}))
    message["data"].append({"item_id": "2", "order_id": "O1"})
    events = parse_line("canal", json.dumps(message))
    assert [e.after["item_id"] for e in events] == ["1", "2"]
    # one statement's rows are different rows: their positions are level (one transaction)
    assert compare(events[0].position, events[1].position) == (0, Basis.GTID)


def test_canal_ddl_is_a_schema_change_not_a_row() -> None:
    line = json.dumps({"id": 5, "database": "gqsh", "table": "gqsh_order", "isDdl": True, "es": 1,
                       "sql": "ALTER TABLE gqsh_order ADD COLUMN x INT", "type": "ALTER"})
    [change] = parse_line("canal", line)
    assert isinstance(change, SchemaChange) and "ADD COLUMN" in change.sql


def test_debezium_with_and_without_schema_envelope_is_the_same_event() -> None:
    header = OrderHeaderFactory()
    bare = debezium("gqsh_order", header, sequence=3)
    wrapped = json.dumps({"schema": {"type": "struct"}, "payload": json.loads(bare)})
    assert parse_line("debezium", bare) == parse_line("debezium", wrapped)
    [event] = parse_line("debezium", bare)
    assert event.kind == "insert" and event.after["status"] == 10


def test_debezium_tombstone_is_ignored() -> None:
    assert parse_line("debezium", "null") == [Ignored("debezium tombstone")]


def test_same_row_through_canal_and_debezium_routes_to_identical_metadata_content() -> None:
    header = OrderHeaderFactory(status=20, paid_at=dt.datetime(2026, 11, 2, 9, 40))
    [from_canal] = parse_line("canal", canal("gqsh_order", header))
    [from_debezium] = parse_line("debezium", debezium("gqsh_order", header))
    canal_records = route(ORDER_FLOW, from_canal, "canal").records
    debezium_records = route(ORDER_FLOW, from_debezium, "debezium").records
    assert [r.operation_type for r in canal_records] == ["SUBMIT", "PAY"]
    assert [r.content for r in canal_records] == [r.content for r in debezium_records]
    assert canal_records[0].content["paid_at"] == "2026-11-02T09:40:00.000"
    assert canal_records[0].content["pay_amount"] == "25.00"


@pytest.mark.parametrize(
    ("input_format", "line", "reason"),
    [
        ("canal", "{oops", "invalid JSON"),
        ("canal", json.dumps({"database": "gqsh", "table": "t", "type": "INSERT"}), "has no 'es'"),
        ("canal", json.dumps({"id": 1, "es": 1, "database": "gqsh", "table": "gqsh_order", "type": "BOGUS",
                              "data": [{}]}), "is not a row change, DDL or query entry"),
        ("debezium", json.dumps({"op": "x", "source": {}}), "op 'x'"),
        ("business", json.dumps({"source": "payment"}), "has no 'order_id'"),
    ],
)
def test_malformed_lines_are_refused_with_a_precise_reason(input_format: str, line: str, reason: str) -> None:
    with pytest.raises(BadInput, match=reason):
        parse_line(input_format, line)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"total_amount": "-1.00"}, "column 'total_amount': '-1.00' is a negative amount"),
        ({"pay_amount": "abc"}, "column 'pay_amount': 'abc' is not an amount"),
        ({"created_at": "yesterday"}, "column 'created_at': 'yesterday' is not a time"),
        ({"item_count": "two"}, "column 'item_count': 'two' is not an integer"),
        ({"status": 99}, "feeds no operation"),
    ],
)
def test_mistyped_values_are_refused_naming_the_column(changes: dict, reason: str) -> None:
    header = OrderHeaderFactory()
    [event] = parse_line("canal", canal("gqsh_order", {**header, **changes}))
    with pytest.raises(BadInput, match=reason):
        route(ORDER_FLOW, event, "canal")


def test_a_table_no_flow_follows_is_ignored_not_refused() -> None:
    [event] = parse_line("canal", canal("gqsh_coupon", {"id": 1, "order_id": "O"}))
    assert route(ORDER_FLOW, event, "canal").ignored == ["table not followed"]


def test_payment_write_becomes_pay_metadata_keyed_by_transaction() -> None:
    write = PaymentWriteFactory(order_id="O42")
    [parsed] = parse_line("business", business(write))
    [record] = route(ORDER_FLOW, parsed, "business").records
    assert (record.order_id, record.operation_type, record.source, record.unique_key) == (
        "O42", "PAY", "payment", write["unique_key"])
    assert record.content["paid_amount"] == "25.00"


def test_payment_cannot_feed_another_operation() -> None:
    [parsed] = parse_line("business", business(PaymentWriteFactory(order_id="O1", operation_type="REFUND")))
    with pytest.raises(BadInput, match="cannot feed REFUND"):
        route(ORDER_FLOW, parsed, "business")


def test_dimension_rows_go_to_the_dimension_not_to_tasks() -> None:
    [event] = parse_line("canal", canal("dim_store_shop", {"store_id": "S001", "store_name": "A", "city": "X",
                                                           "region": "E"}))
    routed = route(ORDER_FLOW, event, "canal")
    assert routed.records == []
    assert [(d.dimension, d.key, d.attributes["store_name"]) for d in routed.dimensions] == [("store", "S001", "A")]


def test_flows_combine_into_one_routing_table_and_refuse_a_source_claimed_twice() -> None:
    from flows import Flow
    from flows.registry import ACCEPTED, combine

    assert set(ACCEPTED.tables) == set(ORDER_FLOW.tables) and set(ACCEPTED.business) == {"payment"}
    pos = Flow("pos", tables={"pos_order": ORDER_FLOW.tables["gqsh_order"]})
    assert set(combine((ORDER_FLOW, pos)).tables) == set(ORDER_FLOW.tables) | {"pos_order"}
    with pytest.raises(ValueError, match="redeclares gqsh_order"):
        combine((ORDER_FLOW, Flow("copy", tables={"gqsh_order": ORDER_FLOW.tables["gqsh_order"]})))


@pytest.mark.parametrize(
    ("sql", "tables"),
    [
        ("ALTER TABLE gqsh_order ADD COLUMN coupon_id INT", [("gqsh", "gqsh_order")]),
        ("/* gh-ost */ alter online table `gqsh`.`gqsh_order` drop column x", [("gqsh", "gqsh_order")]),
        ("CREATE TABLE IF NOT EXISTS other.t (id INT)", [("other", "t")]),
        ("DROP TABLE IF EXISTS a, `gqsh`.b", [("gqsh", "a"), ("gqsh", "b")]),
        ("TRUNCATE gqsh_order_item", [("gqsh", "gqsh_order_item")]),
        ("RENAME TABLE gqsh_order TO gqsh_order_old, x TO gqsh_order",
         [("gqsh", "gqsh_order"), ("gqsh", "gqsh_order_old"), ("gqsh", "x"), ("gqsh", "gqsh_order")]),
        ("CREATE INDEX i ON gqsh_order (store_id)", []),
        ("BEGIN", []),
    ],
)
def test_ddl_names_every_table_it_changes(sql: str, tables: list[tuple[str, str]]) -> None:
    assert ddl_tables(sql, "gqsh") == tables


def _connect_schema(fields: list[dict]) -> dict:
    return {"type": "struct", "fields": [{"field": "before", "type": "struct", "fields": fields},
                                         {"field": "after", "type": "struct", "fields": fields}]}


def test_debezium_with_schema_decodes_precise_decimals_and_micro_timestamps() -> None:
    # Given an event as Debezium sends it by default: DECIMAL(12,2) 1234.50 as base64 of the
    # unscaled 123450, DATETIME(6) as microseconds since the epoch
    paid = dt.datetime(2026, 11, 2, 9, 40, 0, 123000)
    micros = int(paid.replace(tzinfo=dt.UTC).timestamp()) * 1_000_000 + 123000
    schema = _connect_schema([
        {"field": "order_id", "type": "string"},
        {"field": "pay_amount", "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
         "parameters": {"scale": "2", "connect.decimal.precision": "12"}},
        {"field": "paid_at", "type": "int64", "name": "io.debezium.time.MicroTimestamp"},
    ])
    after = {"order_id": "O1", "pay_amount": base64.b64encode((123450).to_bytes(3, "big", signed=True)).decode(),
             "paid_at": micros}
    line = json.dumps({"schema": schema, "payload": {"op": "r", "before": None, "after": after, "ts_ms": 5,
                                                     "source": {"db": "gqsh", "table": "gqsh_order", "ts_ms": 5}}})
    # When it is parsed
    [event] = parse_line("debezium", line)
    # Then the values are the source's
    assert event.kind == "insert"
    assert event.after == {"order_id": "O1", "pay_amount": Decimal("1234.50"), "paid_at": paid}


def test_debezium_negative_precise_decimal_is_decoded_with_its_sign() -> None:
    schema = _connect_schema([{"field": "x", "type": "bytes", "name": "org.apache.kafka.connect.data.Decimal",
                               "parameters": {"scale": "2"}}])
    encoded = base64.b64encode((-5).to_bytes(1, "big", signed=True)).decode()
    line = json.dumps({"schema": schema, "payload": {"op": "c", "after": {"x": encoded},
                                                     "source": {"db": "d", "table": "t", "ts_ms": 1}}})
    assert parse_line("debezium", line)[0].after == {"x": Decimal("-0.05")}


def test_debezium_schema_change_event_names_its_tables_and_routes_only_followed_ones() -> None:
    line = json.dumps({"source": {"db": "gqsh", "file": "mysql-bin.000003", "pos": 900, "ts_ms": 10},
                       "databaseName": "gqsh", "ddl": "ALTER TABLE gqsh_order ADD COLUMN coupon_id INT",
                       "tableChanges": []})
    [change] = parse_line("debezium", line)
    assert (change.database, change.table) == ("gqsh", "gqsh_order")
    assert route(ORDER_FLOW, change, "debezium").schema_changes == [change]
    other = parse_line("debezium", line.replace("gqsh_order ADD", "audit_log ADD"))[0]
    assert route(ORDER_FLOW, other, "debezium").schema_changes == []


def test_debezium_kafka_tombstone_in_an_envelope_is_ignored() -> None:
    assert parse_line("debezium", json.dumps({"schema": None, "payload": None})) == [Ignored("debezium tombstone")]
