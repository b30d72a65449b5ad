"""The rendering of source changes as Canal and Debezium lines (``demo.render``), which the gqsh
history (``demo.history``) now goes through."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import uuid
from decimal import Decimal

import pytest

from demo.render import SourceChange, SourceDatabase, SourceTable, render_canal, render_debezium
from inputs.columns import Reading, column_type
from inputs.debezium import parse_debezium
from inputs.events import ChangeEvent

FORMATS = ("canal", "debezium")
#: Digests of demo.history's lines for generate_history(120, seed=20261101, run_id="r0000001")
#: with uuid4 fixed, recorded before its rendering moved to demo.render.
GQSH_DIGESTS = {"canal": "5805366a11b13055b654049a1aa7421962325b5e0a81ea871c34d06bcb8155d7",
                "debezium": "7e8e058cbcff33b3a26531e1c75c66adc6a89d334ae64188a335c3915cd7b6ff"}
T0 = dt.datetime(2026, 11, 2, 9, 30, 0, 125000)



def scale_of(declared: str) -> int | None:
    kind = column_type(declared)
    return kind.scale if kind.name == "decimal" else None


# --- the gqsh history, through the shared rendering --------------------------------------------

@pytest.mark.parametrize("input_format", FORMATS)
def test_gqsh_history_is_byte_identical_to_before_the_rendering_moved(monkeypatch, input_format: str) -> None:
    from demo.history import generate_history

    # Given uuid4 fixed (the history takes its item ids from it)
    monkeypatch.setattr(uuid, "uuid4", lambda: uuid.UUID(int=0x1234567890ABCDEF1234567890ABCDEF))
    # When the same history is generated
    lines = generate_history(120, seed=20261101, input_format=input_format, run_id="r0000001").lines
    # Then every byte is as it was
    digest = hashlib.sha256()
    for fmt, line in lines:
        digest.update(f"{fmt}\t{line}\n".encode())
    assert (len(lines), digest.hexdigest()) == (1215, GQSH_DIGESTS[input_format])


# --- the rendering ------------------------------------------------------------------------------

@pytest.mark.parametrize("declared, value", [
    ("decimal(23,10)", Decimal("18332.5279500000")), ("decimal(23,10)", Decimal("4027.1681415929")),
    ("decimal(23,10)", Decimal("-0.0000000001")), ("decimal(23,10)", Decimal("9999999999999.9999999999")),
    ("decimal(12,3)", Decimal("1.234")), ("decimal(12,3)", Decimal("0.050")), ("decimal(12,3)", Decimal("-2.500")),
    ("money", Decimal("0.01")), ("decimal(19,6)", Decimal("13.000000")),
])
def test_debezium_decimals_round_trip_at_the_declared_scale(declared: str, value: Decimal) -> None:
    # Given a table declaring the column, rendered as Debezium sends it
    source = SourceDatabase("jd_erp", {"t": SourceTable.declared(("id",), {"id": "int", "amount": declared})})
    event = json.loads(render_debezium(SourceChange("t", "insert", {"id": 1, "amount": value}, T0), 5, source))
    scale = scale_of(declared)
    # When tdc reads it without the schema envelope (the declared type decodes it)
    [bare] = parse_debezium(event)
    # and with it (the schema's scale decodes it, as the connector declares the column)
    schema = {"fields": [{"field": "after", "fields": [{"field": "amount", "name": "org.apache.kafka.connect.data."
                                                        "Decimal", "parameters": {"scale": str(scale)}}]}]}
    [enveloped] = parse_debezium({"schema": schema, "payload": event})
    # Then both give the value back
    assert isinstance(bare, ChangeEvent) and isinstance(enveloped, ChangeEvent)
    assert bare.after is not None and enveloped.after is not None
    assert Decimal(column_type(declared).read(bare.after["amount"], Reading(debezium=True))) == value
    assert enveloped.after["amount"] == value and enveloped.after["amount"].as_tuple().exponent == -(scale or 0)


def test_times_render_by_their_declared_type() -> None:
    # Given a table with a TIMESTAMP(3), a DATETIME(3) and a DATETIME column
    source = SourceDatabase("gqsh_pos", {"t": SourceTable.declared(("id",), {
        "id": "bigint", "changed": "timestamp(3)", "at": "datetime(3)", "day": "datetime"})})
    change = SourceChange("t", "insert", {"id": 1, "changed": T0, "at": T0, "day": T0.replace(microsecond=0)}, T0)
    # When rendered
    debezium = json.loads(render_debezium(change, 1, source))["after"]
    canal = json.loads(render_canal(change, 1, source))
    # Then Debezium sends the TIMESTAMP as UTC text (ZonedTimestamp), DATETIMEs as epoch milliseconds
    assert debezium["changed"] == "2026-11-02T09:30:00.125Z"
    assert debezium["at"] == int(T0.replace(tzinfo=dt.UTC).timestamp() * 1000)
    assert debezium["day"] == int(T0.replace(microsecond=0, tzinfo=dt.UTC).timestamp() * 1000)
    # and Canal the text MySQL prints, with the column's fractional digits; pkNames from the key
    assert canal["data"][0] == {"id": "1", "changed": "2026-11-02 09:30:00.125", "at": "2026-11-02 09:30:00.125",
                                "day": "2026-11-02 09:30:00"}
    assert canal["pkNames"] == ["id"] and canal["database"] == "gqsh_pos"
    assert canal["mysqlType"]["day"] == "datetime"
