"""Declared column types read every reader's encoding of a value to one stored form, in one time
convention; positions order two changes by the strongest thing both carry."""

from __future__ import annotations

import datetime as dt
import json
import re
from zoneinfo import ZoneInfo

import pytest

from flows import Flow, Route, SourceTable, route
from flows.registry import ACCEPTED as ORDER_FLOW
from inputs.columns import Reading, column_type
from inputs.events import BadInput
from inputs.formats import parse_line
from inputs.positions import EXECUTED_SET, Basis, Position, compare, decode, encode, parse_gtid, parse_gtid_set

DEBEZIUM = Reading(debezium=True)
SHANGHAI = ZoneInfo("Asia/Shanghai")


@pytest.mark.parametrize(
    ("declared", "value", "reading", "stored"),
    [
        # decimal.handling.mode=precise (base64 of the unscaled two's complement), string, double
        ("decimal(12,2)", "MjI=", DEBEZIUM, "128.50"),
        ("decimal(12,2)", "CcQ=", DEBEZIUM, "25.00"),
        ("decimal(12,2)", "/zg=", DEBEZIUM, "-2.00"),
        ("decimal(12,2)", "25.00", DEBEZIUM, "25.00"),
        ("decimal(12,2)", 25.5, DEBEZIUM, "25.50"),
        ("decimal(12,0)", "2200", DEBEZIUM, "2200"),
        ("decimal(12,2)", "25.005", Reading(), "25.01"),
        # Debezium temporal types without the schema: the declared precision decides the unit
        ("datetime(3)", 1793611800125, DEBEZIUM, "2026-11-02T09:30:00.125"),
        ("datetime(6)", 1793611800125999, DEBEZIUM, "2026-11-02T09:30:00.125"),
        ("datetime(0)", 1793611800000, DEBEZIUM, "2026-11-02T09:30:00.000"),
        ("date", 20759, DEBEZIUM, "2026-11-02"),
        ("date", "2026-11-02", Reading(), "2026-11-02"),
        ("time(6)", 37800500000, DEBEZIUM, "10:30:00.500000"),
        ("time(0)", "-838:59:59", Reading(), "-838:59:59.000000"),
        ("timestamp(3)", "2026-11-02T01:30:00.125Z", DEBEZIUM, "2026-11-02T01:30:00.125"),
        # one convention: wall clocks are the source's, instants are instants, all stored in UTC
        ("datetime(3)", "2026-11-02 09:30:00.125", Reading(SHANGHAI), "2026-11-02T01:30:00.125"),
        ("datetime(3)", 1793611800125, Reading(SHANGHAI, debezium=True), "2026-11-02T01:30:00.125"),
        ("timestamp(3)", "2026-11-02T01:30:00.125Z", Reading(SHANGHAI, debezium=True), "2026-11-02T01:30:00.125"),
        ("timestamp(3)", "2026-11-02T09:30:00.125+08:00", Reading(), "2026-11-02T01:30:00.125"),
        ("datetime(3)", "0000-00-00 00:00:00", Reading(), None),
        ("varchar(4)", 1234, Reading(), "1234"),
        ("bigint", "9007199254740993", Reading(), 9007199254740993),
    ],
)
def test_a_declared_type_reads_each_encoding_to_its_stored_form(declared, value, reading, stored) -> None:  # type: ignore[no-untyped-def]
    assert column_type(declared).read(value, reading) == stored


@pytest.mark.parametrize(
    ("declared", "value", "reason"),
    [
        ("datetime(3)", 1793611800125999, "out of range"),  # a MicroTimestamp where ms were declared
        ("decimal(12,2)", "1e999999", "out of range for decimal(12,2)"),
        ("decimal(12,2)", "NaN", "is not an amount"),
        ("money", "-1.00", "negative amount"),
        ("varchar(4)", "12345", "longer than varchar(4)"),
        ("int", 2**31, "out of range for int"),
        ("int", True, "is not an integer"),
        ("date", "2026-02-30", "is not a date"),
        ("time(0)", "839:00:00", "out of range"),
        ("datetime(3)", {"a": 1}, "is not a time"),
    ],
)
def test_a_value_that_does_not_read_is_refused_naming_it(declared: str, value: object, reason: str) -> None:
    with pytest.raises(BadInput, match=re.escape(reason)):
        column_type(declared).read(value, DEBEZIUM)


def test_a_declaration_is_checked_when_the_flow_is_declared() -> None:
    with pytest.raises(ValueError, match="source table 't' column 'x': 'blob' is not a column type"):
        SourceTable("t", key="id", columns={"id": "bigint", "x": "blob"})
    with pytest.raises(ValueError, match="key 'nope' is not one of its columns"):
        SourceTable("t", key="nope", columns={"id": "bigint"})


def test_the_same_instant_as_timestamp_and_datetime_is_stored_the_same_in_any_source_zone() -> None:
    table = SourceTable("t", key="id", columns={"id": "bigint", "made": "datetime(3)", "changed": "timestamp(3)"},
                        operations=lambda row, change: ("SUBMIT",), order_key="id")
    flow = Flow("f", {"t": table}, databases=("shop",))
    # 09:30 wall clock in Shanghai is 01:30 UTC: the DATETIME as Debezium's Timestamp, the TIMESTAMP as UTC text
    line = json.dumps({"op": "c", "after": {"id": 1, "made": 1793611800000, "changed": "2026-11-02T01:30:00Z"},
                       "source": {"db": "shop", "table": "t", "ts_ms": 1, "file": "binlog.000001", "pos": 4}})
    [event] = parse_line("debezium", line)
    [record] = route(flow, event, "debezium", Route(SHANGHAI)).records
    assert record.content["made"] == record.content["changed"] == "2026-11-02T01:30:00.000"


def test_source_databases_are_declared_and_a_deployment_may_override_them() -> None:
    header = {"order_id": "O1", "status": "10"}
    line = json.dumps({"id": 1, "database": "gqsh_staging", "table": "gqsh_order", "type": "INSERT", "es": 1,
                       "data": [header], "isDdl": False})
    [event] = parse_line("canal", line)
    assert route(ORDER_FLOW, event, "canal").ignored == ["database not followed"]
    followed = route(ORDER_FLOW, event, "canal", Route(databases=("gqsh_*",)))
    assert [(r.order_id, r.operation_type) for r in followed.records] == [("O1", "SUBMIT")]


def test_a_business_write_without_an_offset_is_read_in_the_source_zone() -> None:
    write = {"source": "payment", "order_id": "O1", "operation_type": "PAY", "unique_key": "T1",
             "payload": {"pay_txn_id": "T1", "pay_channel": "card", "paid_amount": "1.00",
                         "paid_at": "2026-11-02 09:30:00"}, "occurred_at": "2026-11-02T09:30:00+08:00"}
    [parsed] = parse_line("business", json.dumps(write))
    [record] = route(ORDER_FLOW, parsed, "business", Route(SHANGHAI)).records
    assert record.content["paid_at"] == "2026-11-02T01:30:00.000"
    assert record.position == Position(int(dt.datetime(2026, 11, 2, 1, 30, tzinfo=dt.UTC).timestamp() * 1000))


# --- positions ------------------------------------------------------------------------------------

UUID = "3e11fa47-71ca-11e1-9e33-c80aa9429562"


def test_gtids_read_as_domain_and_sequence() -> None:
    assert parse_gtid(f"{UUID}:812", "g") == parse_gtid(f"{UUID.upper()}:812", "g")
    assert parse_gtid(f"{UUID}:812", "g")[1] == 812  # type: ignore[index]
    assert parse_gtid("0-1-42", "g")[1] == 42  # type: ignore[index]
    assert parse_gtid(f"{UUID}:tag_1:9", "g")[1] == 9  # type: ignore[index]
    assert parse_gtid("00000000-0000-0000-0000-000000000000:0", "g") is None  # anonymous
    assert parse_gtid(None, "g") is None
    with pytest.raises(BadInput, match="is not one transaction's GTID"):
        parse_gtid("mysql-bin.000001:4", "g")
    # Canal's executed sets: the number of transactions in them
    assert parse_gtid_set(f"{UUID}:1-4200", "g") == (EXECUTED_SET, 4200)
    assert parse_gtid_set(f"{UUID}:1-5000,\n9b2c7d10-0f5e-11ef-8a1b-0242ac120002:1-3", "g") == (EXECUTED_SET, 5003)
    assert parse_gtid_set(f"{UUID}:1-10:12-20", "g") == (EXECUTED_SET, 19)
    assert parse_gtid_set("0-1-42,1-2-7", "g") == (EXECUTED_SET, 49)
    with pytest.raises(BadInput, match="is not a GTID set"):
        parse_gtid_set(f"{UUID}:9-1", "g")


def test_the_strongest_common_position_decides() -> None:
    g = parse_gtid(f"{UUID}:100", "g")
    other_server = parse_gtid("9b2c7d10-0f5e-11ef-8a1b-0242ac120002:5", "g")
    assert g is not None and other_server is not None
    later_by_gtid = Position(1000, gtid=(g[0], 101), binlog=(3, 100), server=1)
    earlier = Position(2000, gtid=g, binlog=(3, 900), server=1)
    assert compare(later_by_gtid, earlier) == (1, Basis.GTID)
    # different GTID domains: the binlog of the same server, then time
    assert compare(Position(5, gtid=other_server, binlog=(3, 950), server=1), earlier) == (1, Basis.BINLOG)
    assert compare(Position(5, gtid=other_server, binlog=(4, 10), server=2), earlier) == (-1, Basis.TIME)
    # a snapshot read at a position is older than a change streamed from that very position
    snapshot = Position(9_999, binlog=(3, 900), snapshot=True)
    assert compare(snapshot, Position(1, binlog=(3, 900), server=1)) == (-1, Basis.BINLOG)
    assert compare(snapshot, Position(1, binlog=(3, 899), server=1)) == (1, Basis.BINLOG)
    # rows of one event
    assert compare(Position(1, binlog=(3, 900), row=2), Position(1, binlog=(3, 900), row=1)) == (1, Basis.BINLOG)
    # nothing but time
    assert compare(Position(5), Position(5)) == (0, Basis.TIME)
    assert not Basis.TIME.exact and Basis.GTID.exact


@pytest.mark.parametrize("position", [
    Position(0), Position(1793611800125),
    Position(1793611800125, gtid=("e0b99de7", 2**63 - 1), binlog=(999_999, 2**32 - 1), server=2**32 - 1,
             row=99_999, snapshot=True),
    Position(1793611800125, binlog=(3, 4015), server=1, snapshot=True),
])
def test_a_stored_position_reads_back_the_same_and_fits_its_column(position: Position) -> None:
    text = encode(position)
    assert decode(text) == position and len(text) <= 64


def test_positions_an_older_tdc_stored_read_as_their_time() -> None:
    assert decode("1793611800125.00000000000000000077.00000") == Position(1793611800125)
    assert decode("1793611800125.000000030000000004015.00000") == Position(1793611800125)
    with pytest.raises(ValueError):
        decode("not a position")


def test_review_cases_of_positions() -> None:
    # A tagged GTID is numbered per tag: uuid:etl:7 is not ordered against uuid:100
    plain, tagged = parse_gtid(f"{UUID}:100", "g"), parse_gtid(f"{UUID}:etl:7", "g")
    assert plain is not None and tagged is not None and plain[0] != tagged[0]
    # Two Canal messages of one transaction: a row's index orders nothing across messages
    one_transaction = parse_gtid_set(f"{UUID}:1-4200", "g")
    assert compare(Position(1, gtid=one_transaction, row=1), Position(1, gtid=one_transaction, row=0)) \
        == (0, Basis.GTID)
    # Every part is bounded so that the stored form fits; a time in microseconds is refused
    for source, reason in [({"pos": 2**63}, "larger than a position holds"),
                           ({"server_id": 2**40}, "larger than a position holds"),
                           ({"ts_ms": 1_700_000_000_000_000}, "larger than a position holds")]:
        line = json.dumps({"op": "c", "after": {"order_id": "O1"}, "source": {
            "db": "gqsh", "table": "gqsh_order", "ts_ms": 1, "file": "mysql-bin.000001", "pos": 4, **source}})
        with pytest.raises(BadInput, match=reason):
            parse_line("debezium", line)
    assert "ms" in Position(10**15).describe()


def test_review_cases_of_decoding() -> None:
    with pytest.raises(BadInput, match="__op"):
        parse_line("debezium", json.dumps({"__op": ["c"], "__source_db": "gqsh", "__source_table": "t",
                                           "__source_ts_ms": 1}))
    schema = {"type": "struct", "fields": [{"field": "after", "fields": [
        {"field": "x", "name": "org.apache.kafka.connect.data.Decimal", "parameters": {"scale": "9" * 19}}]}]}
    with pytest.raises(BadInput, match="scale"):
        parse_line("debezium", json.dumps({"schema": schema, "payload": {
            "op": "c", "after": {"x": "AA=="}, "source": {"db": "d", "table": "t", "ts_ms": 1}}}))
    write = {"source": "payment", "order_id": "O1", "operation_type": "PAY", "unique_key": "T1",
             "payload": {"pay_txn_id": "T1", "pay_channel": "card", "paid_amount": "1.00", "paid_at": "2026-11-02"},
             "occurred_at": 2**70}
    [parsed] = parse_line("business", json.dumps(write))
    with pytest.raises(BadInput, match="occurred_at"):
        route(ORDER_FLOW, parsed, "business")
    # 28 integer digits are a valid decimal(30,2)
    assert column_type("decimal(30,2)").read("1" * 28 + ".5", Reading()) == "1" * 28 + ".50"


def test_the_newest_event_behind_each_operation_is_read_in_one_pass() -> None:
    from types import SimpleNamespace

    from chain.timings import newest_event_times
    from inputs.positions import Position, encode

    def row(operation: str, time_ms: int) -> SimpleNamespace:
        return SimpleNamespace(operation_type=operation, position=encode(Position(time_ms, binlog=(3, time_ms))))

    # Given an order's metadata rows: two behind SUBMIT, one behind PAY, and a CANCEL whose
    # second position cannot be read
    sources = [row("SUBMIT", 2_000), row("SUBMIT", 5_000), row("PAY", 4_000), row("CANCEL", 9_000),
               SimpleNamespace(operation_type="CANCEL", position="garbage")]
    # Then each operation has its newest time, and the unreadable one none (no lag recorded)
    assert newest_event_times(sources) == {"SUBMIT": 5_000, "PAY": 4_000}
