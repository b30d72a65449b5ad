"""Flow declarations (issue 19, first step): the validator's errors, the ``gqsh`` declaration
equal to what the engine runs today, and ``tdc flow``."""

from __future__ import annotations

import datetime as dt
import itertools
import json
import subprocess
import sys
import textwrap
from dataclasses import replace
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

import pytest

from flows.declaration import (
    CHANGES,
    Aggregate,
    Copy,
    FlowDeclaration,
    Measure,
    Operation,
    Raise,
    Where,
    WideTable,
)
from flows.declared import BY_NAME, DECLARATIONS
from flows.declared.dimensions import SKU, STORE
from flows.declared.gqsh import GQSH
from flows.declared.pos import POS
from flows.rules import all_hold, raised_operations
from flows.validation import DeclarationError, checked, cycles, problems, problems_across

ROOT = Path(__file__).resolve().parents[2]
POS_HEADER = "dwd_gqsh_pos_order_t_order_info"


def _operation(flow: FlowDeclaration, name: str, **changes: Any) -> FlowDeclaration:
    """``flow`` with operation ``name`` changed."""
    return replace(flow, operations=tuple(replace(o, **changes) if o.name == name else o for o in flow.operations))


def _aggregate(flow: FlowDeclaration, name: str, **changes: Any) -> FlowDeclaration:
    return replace(flow, aggregates=tuple(replace(a, **changes) if a.name == name else a for a in flow.aggregates))


def _measure_on(column: str) -> tuple[Measure, ...]:
    return (Measure("order_count"), Measure("amount", column))


# --- the errors issue 19 names, word for word ------------------------------------------------

def test_every_declared_flow_holds_together() -> None:
    assert [flow.name for flow in DECLARATIONS] == ["gqsh", "pos", "sal_order", "pur_mrb", "stk_inventory"]
    assert all(problems(flow) == [] for flow in DECLARATIONS)
    assert problems_across(DECLARATIONS) == []


def test_a_predecessor_that_is_not_an_operation_is_named() -> None:
    broken = _operation(POS, "PAY", after=("SUBMITT",))
    assert problems(broken) == ["flow 'pos': operation 'PAY' after 'SUBMITT': no operation 'SUBMITT'"]


def test_an_unknown_dimension_is_named_where_it_is_looked_up_and_used() -> None:
    broken = replace(POS, dimensions=(SKU,))
    assert problems(broken) == [
        f"flow 'pos': wide table '{POS_HEADER}' lookup 'store': no dimension 'store'",
        f"flow 'pos': wide table '{POS_HEADER}' column 'store_name': no dimension 'store'",
        f"flow 'pos': wide table '{POS_HEADER}' column 'city': no dimension 'store'",
        f"flow 'pos': wide table '{POS_HEADER}' column 'region': no dimension 'store'",
    ]


def test_an_ads_measure_on_an_unknown_column_is_named() -> None:
    broken = _aggregate(POS, "ads_pos_order_sales", measures=_measure_on("amount"))
    assert problems(broken) == [
        f"flow 'pos': ads 'ads_pos_order_sales' measure 'amount': no column 'amount' in wide table '{POS_HEADER}'"]


def test_a_cycle_in_the_state_machine_is_drawn() -> None:
    broken = _operation(POS, "SUBMIT", after=("REFUND",))
    assert problems(broken) == [
        "flow 'pos': state machine: cycle PAY -> SUBMIT -> REFUND -> PAY (each waits for the next)"]
    assert problems(_operation(POS, "PAY", after=("PAY",))) == [
        "flow 'pos': state machine: cycle PAY -> PAY (each waits for the next)"]


def test_several_errors_are_reported_together() -> None:
    broken = _aggregate(_operation(replace(POS, dimensions=(STORE,)), "VOID", after=("SUBMITT",)),
                        "ads_pos_order_sales", measures=_measure_on("amount"))
    expected = [
        "flow 'pos': operation 'VOID' after 'SUBMITT': no operation 'SUBMITT'",
        "flow 'pos': wide table 'dwd_gqsh_pos_order_t_order_item' lookup 'sku': no dimension 'sku'",
        "flow 'pos': wide table 'dwd_gqsh_pos_order_t_order_item' column 'sku_name': no dimension 'sku'",
        "flow 'pos': wide table 'dwd_gqsh_pos_order_t_order_item' column 'category': no dimension 'sku'",
        f"flow 'pos': ads 'ads_pos_order_sales' measure 'amount': no column 'amount' in wide table '{POS_HEADER}'",
    ]
    assert problems(broken) == expected
    with pytest.raises(DeclarationError) as raised:
        checked([GQSH, broken])
    assert raised.value.problems == expected
    assert str(raised.value) == "\n".join(expected)


# --- other structural checks -----------------------------------------------------------------

def test_names_declared_twice_keys_and_columns_that_do_not_exist() -> None:
    header, item = POS.sources[0], POS.sources[1]
    wide = POS.wide[0]
    broken = replace(
        POS, sources=(replace(header, key=("order_id",), columns={**header.columns, "pos_no": "varchr(16)"}),
                      item, item, *POS.sources[2:]),
        wide=(replace(wide, columns=(replace(wide.columns[0], origin=Copy("t_order", "order_no")),
                                     replace(wide.columns[1], origin=Copy("t_order_info", "shop")),
                                     *wide.columns[2:])), POS.wide[1]))
    assert problems(broken) == [
        "flow 'pos': source 't_order_item': declared 2 times",
        "flow 'pos': source 't_order_info' column 'pos_no': 'varchr(16)' is not a column type tdc reads "
        "(varchar(n), bigint, decimal(p,s), date, datetime(p), timestamp(p), time(p), money)",
        "flow 'pos': source 't_order_info' key 'order_id': no column 'order_id' in source 't_order_info'",
        f"flow 'pos': wide table '{POS_HEADER}' column 'order_no': no source 't_order'",
        f"flow 'pos': wide table '{POS_HEADER}' column 'store_code': no column 'shop' in source 't_order_info'",
    ]


def test_an_operation_nothing_raises_and_a_raise_of_an_unknown_operation() -> None:
    broken = replace(POS, raises=tuple(r for r in POS.raises if "VOID" not in r.operations)
                     + (replace(POS.raises[0], operations=("SUMBIT",), changes=("upsert",)),))
    assert problems(broken) == [
        "flow 'pos': raise on 't_order_info' change 'upsert': not a change type (insert, update, delete)",
        "flow 'pos': raise on 't_order_info' operation 'SUMBIT': no operation 'SUMBIT'",
        "flow 'pos': operation 'VOID': no source row or business write raises it",
    ]


def test_ads_keys_conditions_and_child_tables_are_checked() -> None:
    child = cast(WideTable, POS.wide[1])
    broken = _aggregate(POS, "ads_pos_order_item_sales", keys=("biz_date", "sku"), source="dwd_pos_item")
    broken = _aggregate(broken, "ads_pos_order_sales", keys=("biz_date", "shop"))
    broken = replace(broken, wide=(POS.wide[0], replace(child, parent=None)))
    assert problems(broken) == [
        "flow 'pos': wide table 'dwd_gqsh_pos_order_t_order_item': a child wide table needs rows_from (a source) "
        "and parent (a wide table)",
        "flow 'pos': wide table 'dwd_gqsh_pos_order_t_order_item' column 'store_code': "
        "wide table 'dwd_gqsh_pos_order_t_order_item' has no parent",
        "flow 'pos': wide table 'dwd_gqsh_pos_order_t_order_item' column 'biz_date': "
        "wide table 'dwd_gqsh_pos_order_t_order_item' has no parent",
        "flow 'pos': wide table 'dwd_gqsh_pos_order_t_order_item' column 'order_status': "
        "wide table 'dwd_gqsh_pos_order_t_order_item' has no parent",
        f"flow 'pos': ads 'ads_pos_order_sales' key 'shop': no column 'shop' in wide table '{POS_HEADER}'",
        "flow 'pos': ads 'ads_pos_order_item_sales' source 'dwd_pos_item': no wide table 'dwd_pos_item'",
    ]


def test_predicate_values_fit_their_operator_and_column_and_measures_are_numbers() -> None:
    broken = replace(POS, raises=(
        Raise("t_order_info", ("SUBMIT",), when=(Where("order_status", "in", 10),)),
        Raise("t_order_info", ("PAY",), when=(Where("order_status", "=", "20"), Where("pay_time", "not null", 1))),
        Raise("t_order_info", ("VOID",), when=(Where("store_code", "in", ("S1", 2)), Where("pos_no", "like", "P%"))),
        *POS.raises[3:]))
    broken = _aggregate(broken, "ads_pos_order_sales", measures=(Measure("cashiers", "cashier_name"),))
    assert problems(broken) == [
        "flow 'pos': raise on 't_order_info' when 'order_status in 10': 'in' takes a non-empty tuple of values",
        "flow 'pos': raise on 't_order_info' when \"order_status = '20'\": '20' is not a value of tinyint column "
        "'order_status'",
        "flow 'pos': raise on 't_order_info' when 'pay_time not null': 'not null' takes no value",
        "flow 'pos': raise on 't_order_info' when \"store_code in ('S1', 2)\": 2 is not a value of varchar(32) "
        "column 'store_code'",
        "flow 'pos': raise on 't_order_info' when \"pos_no like 'P%'\": no operator 'like' (one of =, !=, <, <=, >, "
        ">=, in, not in, is null, not null)",
        f"flow 'pos': ads 'ads_pos_order_sales' measure 'cashiers': column 'cashier_name' of wide table "
        f"'{POS_HEADER}' is not a number (varchar(64))",
    ]


def test_two_flows_may_not_claim_one_source_or_declare_a_dimension_two_ways() -> None:
    other = replace(POS, name="pos_copy", entity_prefix="pos_copy:", dimensions=(replace(STORE, key="store_name"), SKU))
    found = problems_across([POS, other])
    assert {"flow 'pos_copy': source 't_order_info': already a source of flow 'pos'",
            "flow 'pos_copy': source 't_order_item': already a source of flow 'pos'",
            "flow 'pos_copy': table 'dwd_gqsh_pos_order_t_order_info': already written by flow 'pos'"} <= set(found)
    assert problems_across([POS, other])[-1] == (
        "flow 'pos_copy': dimension 'store': declared differently by flow 'pos'")


def test_two_flows_may_not_share_entity_ids() -> None:
    assert problems_across([GQSH, replace(POS, entity_prefix="")])[-1] == (
        "flow 'pos': entity_prefix '': flow 'gqsh' has ''; an entity id must name one flow")
    assert problems_across([POS, replace(GQSH, name="gqsh2", entity_prefix="po")]) == [
        "flow 'gqsh2': entity_prefix 'po': end it with ':' (pos:)",
        "flow 'gqsh2': entity_prefix 'po': flow 'pos' has 'pos:'; an entity id must name one flow"]


def test_the_root_keeps_the_engines_bookkeeping_under_its_own_names() -> None:
    from flows.declaration import Bookkeeping, Column

    root = GQSH.wide[0]
    renamed = replace(root, columns=tuple(Column("row_version", "int", Bookkeeping("version"))
                                          if c.name == "version" else c for c in root.columns))
    assert problems(replace(GQSH, wide=(renamed, *GQSH.wide[1:])))[0] == (
        "flow 'gqsh': wide table 'dwd_order' column 'row_version': a Bookkeeping column is named after what it "
        "records: 'version'")
    bare = replace(root, columns=tuple(c for c in root.columns if c.name != "updated_at"))
    assert problems(replace(GQSH, wide=(bare, *GQSH.wide[1:])))[0] == (
        "flow 'gqsh': wide table 'dwd_order': the root wide table needs Column('updated_at', ..., "
        "Bookkeeping('updated_at')): the change time")
    undigested = replace(root, columns=tuple(c for c in root.columns if c.name != "source_digest"))
    assert problems(replace(GQSH, wide=(undigested, *GQSH.wide[1:])))[0] == (
        "flow 'gqsh': wide table 'dwd_order': the root wide table needs Column('source_digest', ..., "
        "Bookkeeping('source_digest')): what reconciliation proves a day's rows by")


def test_a_flows_aggregates_share_one_ledger() -> None:
    from flows.declaration import Retraction

    split = _aggregate(POS, "ads_pos_order_item_sales", retraction=Retraction("ads_pos_item_ledger"))
    assert problems(split) == ["flow 'pos': aggregates: one ledger per flow keeps what each entity contributes to all "
                               "its aggregates; declared: ads_pos_item_ledger, ads_pos_order_ledger"]


def test_cycles_are_found_once_each() -> None:
    assert cycles({"A": ("B",), "B": ("A",), "C": ("C",), "D": ()}) == [["A", "B", "A"], ["C", "C"]]
    assert cycles({"A": (), "B": ("A",), "C": ("A", "B")}) == []


# --- the gqsh declaration says what the engine does today ----------------------------------------

def test_gqsh_reads_the_tables_and_keys_the_engine_routes() -> None:
    from flows.registry import ACCEPTED as ORDER_FLOW

    declared = {s.name: s for s in GQSH.sources}
    dimensions = {d.table: d for d in GQSH.dimensions}
    assert set(declared) | set(dimensions) == set(ORDER_FLOW.tables)
    assert GQSH.databases == ORDER_FLOW.databases
    for name, table in ORDER_FLOW.tables.items():
        if table.dimension is not None:
            dimension = dimensions[name]
            assert (dimension.name, dimension.key, dict(dimension.columns)) == (
                table.dimension, table.key, dict(table.columns))
        else:
            source = declared[name]
            assert (source.key, source.entity_key, dict(source.columns), source.settled_at) == (
                (table.key,), table.order_key, dict(table.columns), table.settled_at)
    assert {b.name: (b.operations, dict(b.payload)) for b in GQSH.business} == {
        name: (source.operations, dict(source.payload)) for name, source in ORDER_FLOW.business.items()}


def test_gqsh_header_status_raises_its_operations_and_each_reads_its_columns() -> None:
    from flows.registry import ACCEPTED

    header = {"order_id": "o1", "store_id": "s1", "member_id": "m1", "channel": "app", "item_count": 2,
              "total_amount": "10.00", "discount_amount": "0.00", "pay_amount": "10.00",
              "created_at": "2026-01-01T00:00:00", "paid_at": None, "updated_at": None}
    raised = {10: ("SUBMIT",), 20: ("SUBMIT", "PAY"), 30: ("SUBMIT", "PAY", "DELIVER"),
              40: ("SUBMIT", "PAY", "COMPLETE"), 50: ("SUBMIT", "CANCEL")}
    table = ACCEPTED.tables["gqsh_order"]
    for status, change in itertools.product([None, 0, 10, 15, 20, 30, 40, 50, 60], CHANGES):
        row = {**header, "status": status}
        assert table.operations(row, change) == raised.get(status, ()), (status, change)  # type: ignore[arg-type]
    assert table.reads is not None
    row = {**header, "status": 20}
    submit = table.reads("SUBMIT", row)
    assert "status" not in submit and "paid_at" not in submit and submit["member_id"] == "m1"
    assert table.reads("PAY", row) == {"pay_amount": "10.00"}
    assert ACCEPTED.tables["gqsh_order_item"].operations({"item_id": 1}, "delete") == ("SUBMIT",)
    assert ACCEPTED.tables["gqsh_order_item"].reads is None


#: dwd_order and dwd_order_item as tdc created them before the tables were made from the
#: declaration: databases made then must still be what the engine writes.
_DWD_ORDER = [
    ("order_id", "text", 64), ("store_id", "text", 32), ("store_name", "text", 128), ("city", "text", 64),
    ("region", "text", 64), ("member_id", "text", 32), ("channel", "text", 16), ("status", "int", None),
    ("item_count", "int", None), ("total_amount", "money", None), ("discount_amount", "money", None),
    ("pay_amount", "money", None), ("pay_channel", "text", 32), ("pay_txn_id", "text", 64), ("paid_at", "time", None),
    ("delivery_type", "text", 32), ("refund_amount", "money", None), ("refund_count", "int", None),
    ("perf_staff_id", "text", 32), ("perf_amount", "money", None), ("created_at", "time", None),
    ("biz_date", "date", None), ("last_operation", "text", 16), ("version", "int", None), ("updated_at", "time", None),
    ("source_digest", "int", None)]
_DWD_ORDER_ITEM = [
    ("item_id", "int", None), ("order_id", "text", 64), ("store_id", "text", 32), ("biz_date", "date", None),
    ("sku_id", "text", 32), ("sku_name", "text", 128), ("category", "text", 64), ("quantity", "int", None),
    ("unit_price", "money", None), ("amount", "money", None), ("refund_quantity", "int", None),
    ("refund_amount", "money", None), ("status", "int", None)]


def test_gqsh_wide_tables_made_from_the_declaration_are_the_ones_older_databases_hold() -> None:
    from chain.wide_rows import layout_of
    from demo.tables import ITEM_TABLE, ORDER_TABLE
    from models.digests import kind_of

    for table, expected, key in ((ORDER_TABLE, _DWD_ORDER, "order_id"), (ITEM_TABLE, _DWD_ORDER_ITEM, "item_id")):
        assert [(c.name, kind_of(c), getattr(c.type, "length", None)) for c in table.columns] == expected
        assert [c.name for c in table.primary_key.columns] == [key]
    assert {i.name: [c.name for c in i.columns] for i in ORDER_TABLE.indexes} == {
        "ix_dwd_order_store_day": ["store_id", "biz_date"], "ix_dwd_order_member": ["member_id"],
        "ix_dwd_order_created": ["created_at"], "ix_dwd_order_biz_date": ["biz_date"]}
    assert {i.name for i in ITEM_TABLE.indexes} == {
        "ix_dwd_order_item_order_id", "ix_dwd_order_item_biz_date", "ix_dwd_order_item_sku_id"}
    assert not ORDER_TABLE.c.status.nullable and not ITEM_TABLE.c.order_id.nullable and ORDER_TABLE.c.paid_at.nullable
    layout = layout_of(GQSH)
    looked_up = {c.name for c in [*ORDER_TABLE.columns, *ITEM_TABLE.columns]} - {
        c.name for c in [*layout.source_root, *layout.source_child]} - layout.bookkeeping
    assert looked_up == {"store_name", "city", "region", "sku_name", "category"}


def test_gqsh_ads_tables_made_from_the_declaration_are_the_ones_older_warehouses_hold() -> None:
    from models.digests import kind_of
    from models.warehouse import ADS_TABLES, LEDGERS
    DEFAULT_LEDGER = LEDGERS["gqsh"]

    schema = {name: [(c.name, kind_of(c), c.primary_key) for c in table.columns] for name, table in ADS_TABLES.items()
              if name in {a.name for a in GQSH.aggregates}}
    order = [("order_count", "int", False), ("pay_amount", "money", False), ("refund_amount", "money", False),
             ("net_amount", "money", False)]
    assert schema == {
        "ads_order_sales": [("biz_date", "date", True), ("store_id", "text", True), *order],
        "ads_order_item_sales": [("biz_date", "date", True), ("sku_id", "text", True), ("quantity", "int", False),
                                 ("amount", "money", False), ("refund_quantity", "int", False),
                                 ("refund_amount", "money", False)],
        "ads_order_sales_sum": [("biz_date", "date", True), *order]}
    assert {a.retraction.ledger for a in GQSH.aggregates} == {DEFAULT_LEDGER.name} == {"ads_order_ledger"}
    assert [c.name for c in DEFAULT_LEDGER.columns] == [
        "order_id", "wide_version", "biz_date", "contribution", "fence", "updated_at"]


def test_a_gqsh_order_contributes_once_paid_while_not_cancelled() -> None:
    from warehouse.contributions import Contribution, contribution_of

    day = dt.date(2026, 1, 1)
    item = {"sku_id": "K1", "biz_date": day, "quantity": 2, "amount": Decimal("20.00"), "refund_quantity": 1,
            "refund_amount": Decimal("10.00")}
    for paid_at, status, biz_date, store_id in itertools.product(
            [None, dt.datetime(2026, 1, 1)], [10, 20, 40, 50], [None, day], [None, "s1"]):
        order = {"paid_at": paid_at, "status": status, "biz_date": biz_date, "store_id": store_id,
                 "pay_amount": Decimal("20.00"), "refund_amount": Decimal("10.00")}
        contribution = contribution_of(GQSH, order, [item, {**item, "quantity": 1}])
        counted = paid_at is not None and status != 50 and biz_date is not None and store_id is not None
        assert (contribution is not None) == counted, order
        if contribution is not None:
            assert contribution.cells == {
                ("ads_order_sales", (day, "s1")): {"order_count": 1, "pay_amount": Decimal("20.00"),
                                                   "refund_amount": Decimal("10.00"), "net_amount": Decimal("10.00")},
                ("ads_order_sales_sum", (day,)): {"order_count": 1, "pay_amount": Decimal("20.00"),
                                                  "refund_amount": Decimal("10.00"), "net_amount": Decimal("10.00")},
                ("ads_order_item_sales", (day, "K1")): {"quantity": 3, "amount": Decimal("40.00"),
                                                        "refund_quantity": 2, "refund_amount": Decimal("20.00")}}
            assert contribution.day == day
            assert Contribution.from_json(contribution.to_json()) == contribution


def test_a_ledger_entry_an_older_tdc_wrote_is_taken_back_exactly() -> None:
    from warehouse.contributions import Contribution, delta

    legacy = Contribution.from_json(json.dumps({
        "biz_date": "2026-01-01", "store_id": "s1", "pay_amount": "20.00", "refund_amount": "5.00",
        "skus": {"K1": [2, "20.00", 1, "5.00"]}}))
    day = dt.date(2026, 1, 1)
    assert legacy.cells[("ads_order_sales", (day, "s1"))]["net_amount"] == Decimal("15.00")
    assert legacy.cells[("ads_order_item_sales", (day, "K1"))] == {
        "quantity": 2, "amount": Decimal("20.00"), "refund_quantity": 1, "refund_amount": Decimal("5.00")}
    same = Contribution.from_json(legacy.to_json())
    assert delta([(legacy, same)]) == {}


def test_gqsh_index_and_events_carry_what_search_and_streams_send() -> None:
    from search.documents import NOT_INDEXED

    assert GQSH.index is not None and GQSH.root is not None
    assert GQSH.index.fields == tuple(c.name for c in GQSH.root.columns if c.name not in NOT_INDEXED)
    assert GQSH.index.nested == {"dwd_order_item": (
        "item_id", "sku_id", "sku_name", "category", "quantity", "unit_price", "amount", "refund_quantity",
        "refund_amount", "status")}
    # The fields the hand-written derivation carried, in its order (streams.events before it read
    # the declarations).
    declared = {e.name: tuple(e.field_names()) for e in GQSH.events}
    assert declared == {
        "PayOrderDetail": ("store_id", "member_id", "channel", "biz_date", "paid_at", "pay_channel", "pay_txn_id",
                           "total_amount", "discount_amount", "pay_amount", "item_id", "sku_id", "quantity",
                           "unit_price", "amount"),
        "CancelOrder": ("store_id", "member_id", "channel", "biz_date", "created_at", "item_count", "total_amount",
                        "pay_amount"),
        "ApplyReturn": ("store_id", "member_id", "channel", "biz_date", "item_id", "sku_id", "quantity", "amount",
                        "refund_quantity", "refund_amount"),
        "FirstConsumeDate": ("member_id", "channel", "first_paid_at", "first_date", "order_id", "store_id"),
    }


# --- the other flows ---------------------------------------------------------------------------

def test_pos_raises_operations_by_status_and_refunds() -> None:
    assert raised_operations(POS, "t_order_info", "insert", {"order_status": 10}) == ("SUBMIT",)
    assert raised_operations(POS, "t_order_info", "update", {"order_status": 20}) == ("SUBMIT", "PAY")
    assert raised_operations(POS, "t_order_info", "update", {"order_status": 90}) == ("SUBMIT", "VOID")
    assert raised_operations(POS, "t_order_item_refund", "delete", {}) == ("REFUND",)
    sal = BY_NAME["sal_order"]
    assert raised_operations(sal, "t_sal_order", "update", {"FDOCUMENTSTATUS": "C", "FCANCELSTATUS": "A"}) == (
        "SAVE", "AUDIT")
    assert isinstance(POS.operations[0], Operation) and isinstance(POS.aggregates[0], Aggregate)


# --- tdc flow ----------------------------------------------------------------------------------

def _tdc(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", "flow", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def test_flow_list_names_every_flow_with_its_sources_and_outputs() -> None:
    listed = _tdc("list")
    assert listed.returncode == 0, listed.stderr
    for flow in DECLARATIONS:
        assert f"\n{flow.name} " in "\n" + listed.stdout
    assert "t_order_refund_info" in listed.stdout and "ads_pos_order_item_sales" in listed.stdout
    assert "dim_store_shop (dimension store)" in listed.stdout


def test_flow_list_marks_the_flows_run_here() -> None:
    import os

    env = {k: v for k, v in os.environ.items() if k != "TDC_FLOWS"} | {"TDC_FLOWS": "gqsh,sal_order"}
    listed = _tdc("list", env=env).stdout
    marked = {line.split()[0] for line in listed.splitlines() if line.split()[1:2] == ["*"]}
    assert marked == {"gqsh", "sal_order"}
    assert listed.splitlines()[-1].startswith("* run here (TDC_FLOWS=gqsh,sal_order)")


def test_flow_show_draws_the_state_machine() -> None:
    shown = _tdc("show", "gqsh")
    assert shown.returncode == 0, shown.stderr
    assert "\n".join(["  SUBMIT", "  ├── PAY", "  │   ├── DELIVER", "  │   ├── COMPLETE", "  │   └── REFUND",
                      "  └── CANCEL  (illegal after PAY)"]) in shown.stdout
    assert "    refund_amount    money         sum of gqsh_order_after_sales.refund_amount where status = 20" in (
        shown.stdout)
    assert "\nentity ids: <order_id>\n" in shown.stdout
    assert "\nentity ids: pos:<order_no>\n" in _tdc("show", "pos").stdout
    missing = _tdc("show", "kingdee")
    assert missing.returncode == 2 and (
        "no flow 'kingdee' (declared: gqsh, pos, sal_order, pur_mrb, stk_inventory)" in missing.stderr)


BROKEN = """
    from dataclasses import replace

    from flows.declaration import Measure
    from flows.declared.pos import POS

    FLOW = replace(
        POS,
        operations=tuple(replace(o, after=("SUBMITT",)) if o.name == "PAY" else o for o in POS.operations),
        aggregates=tuple(replace(a, measures=(Measure("amount", "amount"),)) if a.name == "ads_pos_order_sales"
                         else a for a in POS.aggregates))
"""

GOOD = """
    from flows.declaration import (Bookkeeping, Column, Copy, FlowDeclaration, Looked, Lookup, Operation, Raise,
                                   RowArrived, Source, WideTable)
    from flows.declared.dimensions import STORE

    VISITS = FlowDeclaration(
        name="store_visit", entity_prefix="visit:", description="Footfall counters", databases=("counter",),
        sources=(Source("t_visit", key=("id",), entity_key="id",
                        columns={"id": "bigint", "store_id": "varchar(32)", "visitors": "int"}),),
        operations=(Operation("COUNT", complete_when=(RowArrived("t_visit"),)),),
        raises=(Raise("t_visit", ("COUNT",)),),
        dimensions=(STORE,),
        wide=(WideTable("dwd_visit", key=("id",), lookups=(Lookup("store", by="store_id"),), columns=(
            Column("id", "bigint", Copy("t_visit", "id")),
            Column("store_id", "varchar(32)", Copy("t_visit", "store_id")),
            Column("store_name", "varchar(128)", Looked("store", "store_name")),
            Column("visitors", "int", Copy("t_visit", "visitors")),
            Column("version", "int", Bookkeeping("version")),
            Column("updated_at", "datetime(3)", Bookkeeping("updated_at")),
            Column("source_digest", "bigint", Bookkeeping("source_digest")))),))
"""


def test_flow_validate_rejects_a_broken_file_with_every_problem(tmp_path: Path) -> None:
    broken = tmp_path / "broken_pos.py"
    broken.write_text(textwrap.dedent(BROKEN))
    result = _tdc("validate", str(broken))
    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        "flow 'pos': operation 'PAY' after 'SUBMITT': no operation 'SUBMITT'",
        f"flow 'pos': ads 'ads_pos_order_sales' measure 'amount': no column 'amount' in wide table '{POS_HEADER}'",
    ]


def test_flow_validate_accepts_a_good_file_and_the_declared_flows(tmp_path: Path) -> None:
    good = tmp_path / "visits.py"
    good.write_text(textwrap.dedent(GOOD))
    result = _tdc("validate", str(good))
    assert (result.returncode, result.stdout) == (0, "ok: 'store_visit' holds together\n"), result.stderr
    declared = _tdc("validate")
    assert (declared.returncode, declared.stdout) == (
        0, "ok: 5 flows hold together (gqsh, pos, sal_order, pur_mrb, stk_inventory)\n")


def test_flow_validate_reports_a_file_that_does_not_run_or_declares_nothing(tmp_path: Path) -> None:
    crashing = tmp_path / "crashing.py"
    crashing.write_text("from flows.declaration import Source\nSource('t', key=('id',))\n")
    result = _tdc("validate", str(crashing))
    assert result.returncode == 1 and "TypeError" in result.stderr and str(crashing) in result.stderr
    empty = tmp_path / "empty.py"
    empty.write_text("X = 1\n")
    assert _tdc("validate", str(empty)).stderr == f"tdc: {empty}: no FlowDeclaration at module level\n"
    assert _tdc("validate", str(tmp_path / "absent.py")).returncode == 2


# --- the Kingdee purchase returns and inventory --------------------------------------------------

PUR_MRB_ENTRY, STK_BALANCES = "dwd_t_pur_mrb_entry", "dwd_t_stk_inventory"


def test_pur_mrb_and_stk_inventory_hold_together_beside_the_other_flows() -> None:
    pur_mrb, inventory = BY_NAME["pur_mrb"], BY_NAME["stk_inventory"]
    assert problems(pur_mrb) == problems(inventory) == []
    assert problems_across(DECLARATIONS) == []
    assert (pur_mrb.databases, inventory.databases) == (("jd_erp",), ("jd_erp",))
    ledgers = {a.name: a.retraction.ledger for flow in DECLARATIONS for a in flow.aggregates}
    assert (ledgers["ads_jd_instock"], ledgers["ads_jd_stock_balance"]) == (
        "ads_jd_instock_ledger", "ads_jd_stock_balance_ledger")
    owners: dict[str, set[str]] = {}
    for flow in DECLARATIONS:
        for aggregate in flow.aggregates:
            owners.setdefault(aggregate.retraction.ledger, set()).add(flow.name)
    assert all(len(flows) == 1 for flows in owners.values())  # no flow retracts into another's ledger


def test_pur_mrb_raises_by_document_and_cancel_status() -> None:
    # given the Kingdee purchase return flow
    flow = BY_NAME["pur_mrb"]
    created, audited = {"FDOCUMENTSTATUS": "A", "FCANCELSTATUS": "A"}, {"FDOCUMENTSTATUS": "C", "FCANCELSTATUS": "A"}
    voided = {"FDOCUMENTSTATUS": "A", "FCANCELSTATUS": "B"}
    # then a saved return raises SAVE, an audited one AUDIT, a voided one CANCEL, a deleted one
    # SAVE (what is left of it) and DELETE; its header's delete deletes the document
    assert raised_operations(flow, "t_pur_mrb", "insert", created) == ("SAVE",)
    assert raised_operations(flow, "t_pur_mrb", "update", audited) == ("SAVE", "AUDIT")
    assert raised_operations(flow, "t_pur_mrb", "update", voided) == ("SAVE", "CANCEL")
    assert raised_operations(flow, "t_pur_mrb", "delete", created) == ("SAVE", "DELETE")
    assert raised_operations(flow, "t_pur_mrb", "delete", {**voided, **audited}) == ("SAVE", "DELETE")
    assert raised_operations(flow, "t_pur_mrbentry", "delete", {}) == ("SAVE",)
    assert [s.name for s in flow.sources if s.deletes_entity] == ["t_pur_mrb"]
    assert raised_operations(flow, "t_pur_mrbentry_f", "update", {}) == ("SAVE",)
    # and an audited return taken back (re-audit, D) may be voided or deleted: neither is illegal
    operations = {o.name: o for o in flow.operations}
    assert operations["CANCEL"].illegal_after == operations["DELETE"].illegal_after == ()
    ads = flow.aggregates[0]
    assert all_hold(ads.when, {**audited, "status": 20, "biz_date": "2026-01-05"})
    for row in (created, voided, {**audited, "status": 90}):
        assert not all_hold(ads.when, {**row, "status": row.get("status", 20), "biz_date": "2026-01-05"})


def test_sal_order_deletes_like_pur_mrb_and_a_deleted_order_leaves_the_ads() -> None:
    # given the Kingdee sales order flow
    flow = BY_NAME["sal_order"]
    created, audited = {"FDOCUMENTSTATUS": "A", "FCANCELSTATUS": "A"}, {"FDOCUMENTSTATUS": "C", "FCANCELSTATUS": "A"}
    # then a header's delete raises SAVE and DELETE (not AUDIT or CANCEL, whatever its image says),
    # an entry's SAVE, and the header's delete deletes the order
    assert raised_operations(flow, "t_sal_order", "delete", created) == ("SAVE", "DELETE")
    assert raised_operations(flow, "t_sal_order", "delete", {**audited, "FCANCELSTATUS": "B"}) == ("SAVE", "DELETE")
    assert raised_operations(flow, "t_sal_orderentry", "delete", {}) == ("SAVE",)
    assert [s.name for s in flow.sources if s.deletes_entity] == ["t_sal_order"]
    operations = {o.name: o for o in flow.operations}
    assert (operations["DELETE"].after, operations["DELETE"].illegal_after, operations["DELETE"].status) == (
        ("SAVE",), (), 90)
    ads = flow.aggregates[0]
    assert all_hold(ads.when, {**audited, "status": 20, "biz_date": "2026-01-05"})
    assert not all_hold(ads.when, {**audited, "status": 90, "biz_date": "2026-01-05"})


def test_a_deleting_source_is_one_row_per_entity_whose_deletes_raise_something() -> None:
    flow = BY_NAME["pur_mrb"]
    entries = replace(flow, sources=tuple(replace(s, deletes_entity=True) if s.name == "t_pur_mrbentry" else s
                                          for s in flow.sources))
    assert problems(entries) == [
        "flow 'pur_mrb': source 't_pur_mrbentry' deletes_entity: its key ('FENTRYID',) is not its entity_key 'FID': "
        "one row per entity is the entity's own"]
    unraised = replace(flow, raises=tuple(r for r in flow.raises if not (r.table == "t_pur_mrb" and "delete" in
                                                                        r.changes)),
                       operations=tuple(o for o in flow.operations if o.name != "DELETE"))
    assert problems(unraised) == ["flow 'pur_mrb': source 't_pur_mrb' deletes_entity: no raise takes its deletes"]


def test_stk_inventory_raises_a_balance_per_change_and_counts_each_row_once() -> None:
    # given the Kingdee inventory flow
    flow = BY_NAME["stk_inventory"]
    row = {"FID": "9f1c", "FKEEPERTYPEID": "BD_Customer", "FKEEPERID": 100231, "FBASEQTY": "12.0000000000"}
    # then every insert or update is a BALANCE, a delete CLEAR
    assert raised_operations(flow, "t_stk_inventory", "insert", row) == ("BALANCE",)
    assert raised_operations(flow, "t_stk_inventory", "update", row) == ("BALANCE",)
    assert raised_operations(flow, "t_stk_inventory", "delete", row) == ("CLEAR",)
    # and the ADS takes each row's latest state through a ledger keyed by the row, not by day
    ads = flow.aggregates[0]
    assert (ads.name, ads.keys) == ("ads_jd_stock_balance", ("FSTOCKORGID", "store_id", "FMATERIALID", "FSTOCKID"))
    assert all_hold(ads.when, {"status": 10, "FBASEQTY": "12.0000000000"})
    assert not all_hold(ads.when, {"status": 90, "FBASEQTY": "12.0000000000"})
    assert flow.root is not None and flow.root.column("FCUSTID") is not None


def test_tdc_flow_show_draws_the_kingdee_state_machines() -> None:
    returns = _tdc("show", "pur_mrb")
    assert returns.returncode == 0, returns.stderr
    assert "\n".join(["  SAVE", "  ├── AUDIT", "  ├── CANCEL", "  └── DELETE"]) in returns.stdout
    assert "  t_pur_mrb (delete) -> DELETE" in returns.stdout
    assert "    complete when a t_pur_mrbentry_f row for every t_pur_mrbentry row (by FENTRYID)" in returns.stdout
    inventory = _tdc("show", "stk_inventory")
    assert inventory.returncode == 0, inventory.stderr
    assert "\n".join(["  BALANCE", "  └── CLEAR"]) in inventory.stdout
    assert ("    FCUSTID          int             t_stk_inventory.FKEEPERID of the newest row by FUPDATETIME where "
            "FKEEPERTYPEID = 'BD_Customer'") in inventory.stdout
    assert "    retraction: ledger ads_jd_stock_balance_ledger by version" in inventory.stdout


def test_broken_pur_mrb_and_stk_inventory_are_rejected_precisely() -> None:
    pur_mrb, inventory = BY_NAME["pur_mrb"], BY_NAME["stk_inventory"]
    returns = _aggregate(pur_mrb, "ads_jd_instock", measures=(Measure("return_qty", "FQTY"),))
    assert problems(returns) == [
        f"flow 'pur_mrb': ads 'ads_jd_instock' measure 'return_qty': no column 'FQTY' in wide table '{PUR_MRB_ENTRY}'"]
    balances = _aggregate(inventory, "ads_jd_stock_balance", keys=("store_code", "FMATERIALID"),
                          when=(Where("FISEFFECTIVED", "=", "1"),))
    assert problems(balances) == [
        f"flow 'stk_inventory': ads 'ads_jd_stock_balance' key 'store_code': no column 'store_code' in wide table "
        f"'{STK_BALANCES}'",
        f"flow 'stk_inventory': ads 'ads_jd_stock_balance' when \"FISEFFECTIVED = '1'\": no column 'FISEFFECTIVED' "
        f"in wide table '{STK_BALANCES}'",
    ]
    # a shared dimension declared another way than sal_order declares it
    other_stock = replace(inventory.dimensions[1], columns={"FSTOCKID": "int", "FNAME": "varchar(255)"})
    drifted = replace(inventory, dimensions=(inventory.dimensions[0], other_stock, inventory.dimensions[2]))
    assert problems_across([BY_NAME["sal_order"], drifted]) == [
        "flow 'stk_inventory': dimension 'jd_stock': declared differently by flow 'sal_order'"]


def test_a_ledger_entry_keyed_by_a_time_or_an_amount_comes_back_in_its_type(monkeypatch) -> None:
    from flows.ads import Declared
    from flows.declaration import Retraction
    from inputs.columns import column_type
    from warehouse import contributions

    aggregate = Aggregate("ads_by_hour", "dwd_x", ("hour", "price"), (Measure("n"),), (), Retraction("ledger_x"))
    declared = Declared(aggregate, {"hour": column_type("datetime(3)"), "price": column_type("decimal(12,3)")},
                        {"n": None}, child=False)
    monkeypatch.setitem(contributions.DECLARED, "ads_by_hour", declared)
    cell = ("ads_by_hour", (dt.datetime(2026, 1, 1, 9), Decimal("1.250")))
    made = contributions.Contribution(None, {cell: {"n": 1}})
    assert contributions.Contribution.from_json(made.to_json()) == made


def test_what_the_engine_cannot_merge_yet_is_refused_when_the_flow_is_validated() -> None:
    # A source keyed by two columns, a second child table, a grandchild and a composite wide key
    # are refused at validation, with what is supported, not later by the running engine
    entries = replace(POS.sources[1], key=("order_no", "line_no"))
    header, line = POS.wide
    second = replace(line, name="dwd_pos_line_copy")
    grandchild = replace(line, name="dwd_pos_grandchild", parent=line.name)
    keyed = replace(header, key=("order_no", "store_code"))
    found = problems(replace(POS, sources=(POS.sources[0], entries, *POS.sources[2:]),
                             wide=(keyed, line, second)))
    assert f"flow 'pos': source '{entries.name}' key: order_no, line_no: tdc routes rows by a key of one column " \
           "(a key of several columns is not supported yet)" in found
    assert "flow 'pos': wide table 'dwd_pos_line_copy': the engine merges one root wide table and at most one " \
           "child table under it (a second child table is not supported yet)" in found
    assert f"flow 'pos': wide table '{header.name}' key: order_no, store_code: a wide table's key is one column " \
           "(a key of several columns is not supported yet)" in found
    assert (f"flow 'pos': wide table 'dwd_pos_grandchild' parent '{line.name}': the child table's parent must be the "
            "root wide table") in problems(replace(POS, wide=(header, grandchild, line)))
    assert all(problems(flow) == [] for flow in DECLARATIONS)


# --- index documents ---------------------------------------------------------------------------

def test_a_broken_index_document_is_named_by_flow_index_and_field() -> None:
    # Given pos's index document with an unknown field, a nested field its line table lacks, a
    # text field that is an amount, a condition on no field and a day that is not a field
    from flows.declaration import IndexDocument

    assert POS.index is not None
    broken = replace(POS, index=IndexDocument(
        "tdc-orders-pos", (*POS.index.fields, "till_name"),
        nested={"dwd_gqsh_pos_order_t_order_item": ("item_id", "colour")}, text=("pay_amount",),
        conditions={"store_id": "shop", "colour": "items.item_id"}, day="sold_on", amount="store_code"))
    # Then each is named with its flow, index and field
    line = "dwd_gqsh_pos_order_t_order_item"
    assert problems(broken) == [
        f"flow 'pos': index 'tdc-orders-pos' field 'till_name': no column 'till_name' in wide table '{POS_HEADER}'",
        f"flow 'pos': index 'tdc-orders-pos' nested '{line}' field 'colour': no column 'colour' in wide table "
        f"'{line}'",
        "flow 'pos': index 'tdc-orders-pos' text 'pay_amount': not a text column (money)",
        "flow 'pos': index 'tdc-orders-pos' day 'sold_on': not a root field of the document",
        "flow 'pos': index 'tdc-orders-pos' condition 'store_id' field 'shop': not a field of the document",
        "flow 'pos': index 'tdc-orders-pos' condition 'colour': no such condition (store_id, status, member_id, "
        "channel, sku_id)",
        f"flow 'pos': index 'tdc-orders-pos' amount 'store_code': column 'store_code' of wide table '{POS_HEADER}' "
        "is not a number (varchar(32))",
    ]


def test_an_index_document_carries_its_id_and_version_and_nests_the_root_child() -> None:
    from flows.declaration import IndexDocument

    # Given documents without the root's key or version, or nesting the wrong table twice
    assert POS.index is not None
    bare = replace(POS, index=IndexDocument("tdc-orders-pos", ("store_code", "pay_amount")))
    nested = replace(POS, index=replace(POS.index, nested={POS_HEADER: ("order_no",),
                                                           "dwd_gqsh_pos_order_t_order_item": ("item_id",)},
                                        nested_as="pay_amount", text=(), conditions={}))
    # Then each is named
    assert problems(bare) == [
        "flow 'pos': index 'tdc-orders-pos' fields: no 'order_no': the root's key is the document's id",
        "flow 'pos': index 'tdc-orders-pos' fields: no 'version': documents are written at the root's version"]
    assert problems(nested) == [
        "flow 'pos': index 'tdc-orders-pos' nested: 2 tables; a document nests one child wide table",
        f"flow 'pos': index 'tdc-orders-pos' nested '{POS_HEADER}' as 'pay_amount': already a field of the document",
        "flow 'pos': index 'tdc-orders-pos' nested 'dwd_gqsh_pos_order_t_order_item' as 'pay_amount': already a "
        "field of the document"]


def test_two_flows_may_not_share_an_index_or_its_versioned_indices() -> None:
    # Given pos declaring gqsh's alias, and sal_order one inside gqsh's versioned indices
    assert POS.index is not None and BY_NAME["sal_order"].index is not None
    same = replace(POS, index=replace(POS.index, index="tdc-orders"))
    inside = replace(BY_NAME["sal_order"], index=replace(BY_NAME["sal_order"].index, index="tdc-orders-v2"))
    # Then both are named, with the flow that has the alias first
    assert problems_across([GQSH, same, inside]) == [
        "flow 'pos': index 'tdc-orders': already the index of flow 'gqsh'",
        "flow 'sal_order': index 'tdc-orders-v2': overlaps the versioned indices of index 'tdc-orders' "
        "(tdc-orders-v1, ...) of flow 'gqsh'"]
    with pytest.raises(DeclarationError, match="already the index of flow 'gqsh'"):
        checked([GQSH, same])


def test_an_index_document_sorts_by_a_time_and_bounds_a_day() -> None:
    assert POS.index is not None
    odd = replace(POS, index=replace(POS.index, newest_by="cashier_id", day="pay_time", nested_as="lines.all"))
    assert problems(odd) == [
        "flow 'pos': index 'tdc-orders-pos' nested_as 'lines.all': not a field name (no dots)",
        "flow 'pos': index 'tdc-orders-pos' text 'items.sku_name': not a field of the document",
        "flow 'pos': index 'tdc-orders-pos' newest_by 'cashier_id': not a date or datetime or timestamp column "
        "(varchar(32))",
        "flow 'pos': index 'tdc-orders-pos' day 'pay_time': not a date column (datetime(3))",
        "flow 'pos': index 'tdc-orders-pos' condition 'sku_id' field 'items.sku_code': not a field of the document"]
