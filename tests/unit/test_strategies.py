"""State machines, completeness checks and wide-row generators read from flow declarations, on
facts built in memory."""

import datetime as dt
import json
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from flows.declared.gqsh import GQSH
from flows.declared.pos import POS
from flows.declared.pur_mrb import PUR_MRB
from flows.declared.sal_order import SAL_ORDER
from flows.machine import Illegal, StateMachine
from inputs.positions import Position, encode
from strategies.checkers import check, deleted
from strategies.facts import OrderFacts
from strategies.generators import apply_operation, business_date, shape_of

MACHINE = StateMachine.of(GQSH)


def _at(sequence: str) -> str:
    """A stored binlog position: offset ``sequence`` in one binlog file."""
    return encode(Position(1_700_000_000_000, binlog=(1, int(sequence))))


def facts(*rows: tuple[str, str, dict, str], deleted: tuple[str, str, str] | None = None,
          order_id: str = "O1", gone: tuple[tuple[str, str, str], ...] = ()) -> OrderFacts:
    """Facts of ``rows`` (source, key, content, position) and deletes (source, key, position)."""
    metadata = [{"source": s, "unique_key": k, "kind": "insert", "content": json.dumps(c), "position": _at(p)}
                for s, k, c, p in rows]
    for source, key, position in ((deleted,) if deleted else ()) + gone:
        metadata.append({"source": source, "unique_key": key, "kind": "delete", "content": "{}",
                         "position": _at(position)})
    return OrderFacts.from_metadata(order_id, metadata)


HEADER = {"order_id": "O1", "status": 20, "item_count": 2, "pay_amount": "30.00"}


def test_pay_waits_for_submit_and_cancel_after_pay_is_illegal() -> None:
    assert MACHINE.blocking_reason("PAY", done=set(), ever_done=set()) == "waiting for SUBMIT"
    assert MACHINE.blocking_reason("PAY", done={"SUBMIT"}, ever_done={"SUBMIT"}) is None
    with pytest.raises(Illegal, match="CANCEL after PAY"):
        MACHINE.blocking_reason("CANCEL", done={"SUBMIT"}, ever_done={"SUBMIT", "PAY"})
    assert MACHINE.successors["PAY"] == ("DELIVER", "COMPLETE", "REFUND")
    assert MACHINE.order == ("SUBMIT", "PAY", "DELIVER", "COMPLETE", "REFUND", "CANCEL")
    assert MACHINE.status_after == {"SUBMIT": 10, "PAY": 20, "DELIVER": 30, "COMPLETE": 40, "CANCEL": 50}


def test_an_operation_declared_before_its_predecessor_still_runs_after_it() -> None:
    from dataclasses import replace

    reordered = replace(POS, operations=tuple(reversed(POS.operations)))
    order = StateMachine.of(reordered).order
    assert order.index("SUBMIT") < order.index("PAY") < order.index("REFUND")
    assert order.index("SUBMIT") < order.index("VOID")


def test_newest_position_wins_and_a_delete_removes_the_row() -> None:
    known = facts(("gqsh_order", "O1", {**HEADER, "status": 10}, "2"), ("gqsh_order", "O1", HEADER, "3"),
                  ("gqsh_order_item", "1", {"item_id": 1}, "1"), deleted=("gqsh_order_item", "1", "4"))
    assert known.one("gqsh_order")["status"] == 20
    assert known.all("gqsh_order_item") == []


def test_submit_needs_exactly_item_count_lines() -> None:
    one_line = facts(("gqsh_order", "O1", HEADER, "1"), ("gqsh_order_item", "1", {"item_id": 1}, "1"))
    assert check(GQSH, "SUBMIT", one_line) == "1 of 2 gqsh_order_item rows have arrived"
    both = facts(("gqsh_order", "O1", HEADER, "1"), ("gqsh_order_item", "1", {"item_id": 1}, "1"),
                 ("gqsh_order_item", "2", {"item_id": 2}, "1"))
    assert check(GQSH, "SUBMIT", both) is None
    assert check(GQSH, "SUBMIT", facts(("gqsh_order_item", "1", {"item_id": 1}, "1"))) == "no gqsh_order row yet"


def test_pay_needs_a_payment_of_exactly_the_pay_amount() -> None:
    wrong = facts(("gqsh_order", "O1", HEADER, "1"), ("payment", "T1", {"paid_amount": "29.99"}, "1"))
    assert check(GQSH, "PAY", wrong) == "payment paid_amount 29.99 does not match gqsh_order.pay_amount 30.00"
    right = facts(("gqsh_order", "O1", HEADER, "1"), ("payment", "T1", {"paid_amount": "30.00"}, "1"))
    assert check(GQSH, "PAY", right) is None
    unpaid = facts(("gqsh_order", "O1", {**HEADER, "status": 10}, "1"),
                   ("payment", "T1", {"paid_amount": "30.00"}, "1"))
    assert check(GQSH, "PAY", unpaid) == "no gqsh_order row with status in (20, 30, 40) yet"


def test_refund_waits_until_details_sum_to_the_refund_amount() -> None:
    after_sales = {"after_sales_id": "A1", "status": 20, "refund_amount": "10.00"}
    partial = facts(("gqsh_order_after_sales", "A1", after_sales, "1"),
                    ("gqsh_order_after_sales_dtl", "1", {"after_sales_id": "A1", "refund_amount": "4.00"}, "1"))
    assert check(GQSH, "REFUND", partial) == (
        "gqsh_order_after_sales A1: gqsh_order_after_sales_dtl refund_amount sums to 4.00 of 10.00")
    applied_only = facts(("gqsh_order_after_sales", "A1", {**after_sales, "status": 10}, "1"))
    assert check(GQSH, "REFUND", applied_only) is None
    assert Decimal("10.00") == Decimal(after_sales["refund_amount"])


def test_the_business_day_is_the_calendar_day_in_the_business_zone() -> None:
    # 20:30 UTC on 1 November is already 2 November in Shanghai, still 1 November in New York
    paid = dt.datetime(2026, 11, 1, 20, 30)
    assert str(business_date(paid, ZoneInfo("UTC"))) == "2026-11-01"
    assert str(business_date(paid, ZoneInfo("Asia/Shanghai"))) == "2026-11-02"
    assert str(business_date(paid, ZoneInfo("America/New_York"))) == "2026-11-01"
    assert business_date(None, ZoneInfo("UTC")) is None


def test_kingdee_entries_wait_for_their_finance_rows() -> None:
    header = {"FID": 7, "FDOCUMENTSTATUS": "A", "FCANCELSTATUS": "A"}
    entry = ("t_sal_orderentry", "71", {"FENTRYID": 71, "FID": 7}, "1")
    unpaired = facts(("t_sal_order", "7", header, "1"), entry, order_id="7")
    assert check(SAL_ORDER, "SAVE", unpaired) == "t_sal_orderentry 71: no t_sal_orderentry_f row yet"
    paired = facts(("t_sal_order", "7", header, "1"), entry, ("t_sal_orderentry_f", "71", {"FENTRYID": 71}, "1"),
                   order_id="7")
    assert check(SAL_ORDER, "SAVE", paired) is None


# --- deleted documents: the header's newest record is a delete (Source.deletes_entity) ----------

MRB_HEADER = ("t_pur_mrb", "7", {"FID": 7, "FBILLNO": "CGTL000007", "FDATE": "2026-11-03T00:00:00",
                                 "FDOCUMENTSTATUS": "A", "FCANCELSTATUS": "A"}, "1")
MRB_ENTRIES = tuple(row for n in (71, 72) for row in (
    ("t_pur_mrbentry", str(n), {"FENTRYID": n, "FID": 7, "FSEQ": n - 70, "FRMREALQTY": "2.0000000000"}, "1"),
    ("t_pur_mrbentry_f", str(n), {"FENTRYID": n, "FID": 7, "FAMOUNT": "10.0000000000"}, "1")))
#: Kingdee's delete of the whole document: header, entries and finance entries, one record each.
MRB_DELETED = (("t_pur_mrb", "7", "5"), *((table, str(n), "5") for n in (71, 72)
                                          for table in ("t_pur_mrbentry", "t_pur_mrbentry_f")))


@pytest.mark.parametrize("gone", [MRB_DELETED, MRB_DELETED[:1], MRB_DELETED[1:] + MRB_DELETED[:1]],
                         ids=["whole document", "header first", "entries then header"])
def test_a_deleted_document_waits_for_nothing(gone: tuple[tuple[str, str, str], ...]) -> None:
    # Given a saved return whose header's newest record is a delete (its entries' too, or not yet)
    known = facts(MRB_HEADER, *MRB_ENTRIES, order_id="pur_mrb:7", gone=gone)
    # Then it is deleted and no operation waits for the data that is gone, not even CANCEL's void
    assert deleted(PUR_MRB, known)
    assert [check(PUR_MRB, operation, known) for operation in ("SAVE", "AUDIT", "CANCEL", "DELETE")] == [None] * 4


def test_deletes_only_are_a_deleted_document_and_entry_deletes_alone_wait_for_the_header() -> None:
    # Given only deletes (the inserts predate the CDC): the entries' deletes first
    entries_only = facts(order_id="pur_mrb:7", gone=MRB_DELETED[1:])
    assert not deleted(PUR_MRB, entries_only)
    assert check(PUR_MRB, "SAVE", entries_only) == "no t_pur_mrb row yet"
    # When the header's delete arrives, it is a deleted document
    assert deleted(PUR_MRB, facts(order_id="pur_mrb:7", gone=MRB_DELETED))
    assert check(PUR_MRB, "SAVE", facts(order_id="pur_mrb:7", gone=MRB_DELETED)) is None


def test_a_delete_displaced_before_the_insert_still_deletes_and_a_newer_record_revives() -> None:
    # Given the header's delete (position 5) stored before its older insert (1) arrived
    displaced = facts(MRB_HEADER, order_id="pur_mrb:7", gone=(("t_pur_mrb", "7", "5"),))
    assert deleted(PUR_MRB, displaced) and check(PUR_MRB, "SAVE", displaced) is None
    # But a record of the header newer than the delete is the header again: its rules hold again
    revived = facts((*MRB_HEADER[:3], "6"), order_id="pur_mrb:7", gone=(("t_pur_mrb", "7", "5"),))
    assert not deleted(PUR_MRB, revived)
    assert check(PUR_MRB, "SAVE", revived) == "no t_pur_mrbentry row yet"


def test_an_entry_deleted_from_a_kept_document_is_no_deleted_document() -> None:
    # Given a kept return one of whose entries is deleted, its finance entry not yet
    one_gone = facts(MRB_HEADER, *MRB_ENTRIES, order_id="pur_mrb:7", gone=(("t_pur_mrbentry", "71", "5"),))
    # Then SAVE runs with the other entry (a finance entry alone waits for nothing)
    assert not deleted(PUR_MRB, one_gone) and check(PUR_MRB, "SAVE", one_gone) is None
    # And a finance entry deleted before its entry makes SAVE wait for the entry's delete
    finance_first = facts(MRB_HEADER, *MRB_ENTRIES, order_id="pur_mrb:7", gone=(("t_pur_mrbentry_f", "71", "5"),))
    assert check(PUR_MRB, "SAVE", finance_first) == "t_pur_mrbentry 71: no t_pur_mrbentry_f row yet"


def test_a_flow_that_declares_no_deleting_source_still_waits_for_a_deleted_header() -> None:
    gone = facts(("gqsh_order_item", "1", {"item_id": 1}, "1"), deleted=("gqsh_order", "O1", "4"))
    assert not deleted(GQSH, gone)
    assert check(GQSH, "SUBMIT", gone) == "no gqsh_order row yet"


DIMENSIONS = {("store", "S1"): {"store_name": "Bund", "city": "Shanghai", "region": "East"},
              ("sku", "K1"): {"sku_name": "Beef", "category": "meat"}}


class _Dims:
    def get(self, dimension: str, key: object) -> dict:
        return DIMENSIONS.get((dimension, key), {})


ORDER = {"order_id": "O1", "store_id": "S1", "member_id": "M1", "channel": "app", "status": 20, "item_count": 1,
         "total_amount": "30.00", "discount_amount": "0.00", "pay_amount": "30.00",
         "created_at": "2026-11-01T20:00:00.000", "paid_at": None, "updated_at": None}
LINE = {"item_id": 5, "order_id": "O1", "sku_id": "K1", "quantity": 2, "unit_price": "15.00", "amount": "30.00"}


def test_a_merge_writes_only_the_columns_whose_tables_raise_the_operation() -> None:
    after_sales = {"after_sales_id": "A1", "order_id": "O1", "status": 20, "refund_amount": "15.00"}
    detail = {"id": 1, "after_sales_id": "A1", "order_id": "O1", "item_id": 5, "refund_quantity": 1,
              "refund_amount": "15.00"}
    payment = {"pay_txn_id": "T1", "pay_channel": "card", "paid_amount": "30.00", "paid_at": "2026-11-01T21:00:00.000"}
    known = facts(("gqsh_order", "O1", ORDER, "1"), ("gqsh_order_item", "5", LINE, "1"),
                  ("gqsh_order_after_sales", "A1", after_sales, "2"), ("gqsh_order_after_sales_dtl", "1", detail, "2"),
                  ("payment", "T1", payment, "3"))
    shape = shape_of(GQSH)
    order, items = shape.new_row(shape.root) | {"order_id": "O1"}, {}
    zone = ZoneInfo("Asia/Shanghai")
    apply_operation(GQSH, "SUBMIT", order, items, known, _Dims(), zone)
    # The refund has arrived, but SUBMIT does not write it: REFUND has not run.
    assert (order["status"], order["refund_amount"], order["paid_at"], order["store_name"]) == (
        10, Decimal("0.00"), None, "Bund")
    assert order["biz_date"] == dt.date(2026, 11, 2)  # 20:00 UTC is the next day in Shanghai
    assert items[5]["sku_name"] == "Beef" and items[5]["refund_amount"] == Decimal("0.00")
    apply_operation(GQSH, "PAY", order, items, known, _Dims(), zone)
    assert (order["status"], order["pay_channel"], order["paid_at"]) == (20, "card", dt.datetime(2026, 11, 1, 21))
    apply_operation(GQSH, "REFUND", order, items, known, _Dims(), zone)
    assert (order["refund_amount"], order["refund_count"], order["status"], order["last_operation"]) == (
        Decimal("15.00"), 1, 20, "REFUND")
    assert (items[5]["refund_quantity"], items[5]["refund_amount"], items[5]["status"]) == (1, Decimal("15.00"), 20)
    assert order["perf_amount"] is None  # a sum declared NULL when there are no rows


def test_a_child_row_copies_from_its_paired_table_by_key() -> None:
    header = {"FID": 7, "FBILLNO": "XSDD0001", "FDATE": "2026-11-03T00:00:00.000", "FCUSTID": 9,
              "FDOCUMENTSTATUS": "C", "FCANCELSTATUS": "A"}
    entries = [("t_sal_orderentry", str(n), {"FENTRYID": n, "FID": 7, "FSEQ": n, "FMATERIALID": 100 + n,
                                             "FQTY": "2.0000000000", "FSTOCKID": 3}, "1") for n in (71, 72)]
    finance = [("t_sal_orderentry_f", str(n), {"FENTRYID": n, "FID": 7, "FAMOUNT": f"{n}.5000000000"}, "1")
               for n in (72, 71)]
    known = facts(("t_sal_order", "7", header, "1"), *entries, *finance, order_id="7")
    shape = shape_of(SAL_ORDER)
    order, items = shape.new_row(shape.root) | {"FID": 7}, {}
    apply_operation(SAL_ORDER, "SAVE", order, items, known, _Dims())
    assert {key: item["FAMOUNT"] for key, item in items.items()} == {71: Decimal("71.5"), 72: Decimal("72.5")}
    assert (order["entry_count"], order["FQTY"], order["FAMOUNT"], order["biz_date"]) == (
        2, Decimal("4"), Decimal("144.0"), dt.date(2026, 11, 3))
    assert {item["biz_date"] for item in items.values()} == {dt.date(2026, 11, 3)}


def test_a_deleted_documents_merges_leave_its_key_and_deleted_status_and_no_entries() -> None:
    # Given a saved return merged with its two entries
    shape = shape_of(PUR_MRB)
    order, items = shape.new_row(shape.root) | {"FID": 7}, {}
    apply_operation(PUR_MRB, "SAVE", order, items, facts(MRB_HEADER, *MRB_ENTRIES, order_id="pur_mrb:7"), _Dims())
    assert (order["FBILLNO"], order["entry_count"], sorted(items)) == ("CGTL000007", 2, [71, 72])
    # When Kingdee deletes it and SAVE and DELETE run on what is left
    gone = facts(MRB_HEADER, *MRB_ENTRIES, order_id="pur_mrb:7", gone=MRB_DELETED)
    for operation in ("SAVE", "DELETE"):
        apply_operation(PUR_MRB, operation, order, items, gone, _Dims())
    # Then the root row keeps its key and the deleted status, nothing of the gone rows
    assert (order["FID"], order["status"], order["last_operation"], items) == (7, 90, "DELETE", {})
    assert (order["FBILLNO"], order["FDATE"], order["biz_date"]) == (None, None, None)
    assert (order["entry_count"], order["FRMREALQTY"], order["FAMOUNT"]) == (0, Decimal(0), Decimal(0))


def test_an_entry_deleted_from_a_kept_document_takes_its_child_row_with_it() -> None:
    shape = shape_of(PUR_MRB)
    order, items = shape.new_row(shape.root) | {"FID": 7}, {}
    apply_operation(PUR_MRB, "SAVE", order, items, facts(MRB_HEADER, *MRB_ENTRIES, order_id="pur_mrb:7"), _Dims())
    edited = facts(MRB_HEADER, *MRB_ENTRIES, order_id="pur_mrb:7",
                   gone=(("t_pur_mrbentry", "71", "5"), ("t_pur_mrbentry_f", "71", "5")))
    apply_operation(PUR_MRB, "SAVE", order, items, edited, _Dims())
    assert (sorted(items), order["entry_count"], order["FAMOUNT"], order["FBILLNO"], order["status"]) == (
        [72], 1, Decimal("10"), "CGTL000007", 10)


def test_every_declared_flow_compiles_into_what_the_engine_runs() -> None:
    from flows.declared import DECLARATIONS
    from flows.registry import routing

    for flow in DECLARATIONS:
        machine, shape, routed = StateMachine.of(flow), shape_of(flow), routing(flow)
        assert set(machine.order) == {o.name for o in flow.operations}
        assert shape.root is flow.root
        assert set(routed.tables) == {s.name for s in flow.sources} | {d.table for d in flow.dimensions}


def test_entity_ids_name_their_flow_and_a_bare_id_may_not_read_as_anothers() -> None:
    from flows import route
    from flows.registry import combine, flow_of, routing
    from inputs.events import BadInput, BusinessWrite, ChangeEvent
    from inputs.positions import Position

    assert flow_of("pos:PO1").name == "pos" and flow_of("sal_order:7").name == "sal_order"
    assert flow_of("G1").name == "gqsh"
    both = combine((routing(GQSH), routing(POS)))
    sale = ChangeEvent("gqsh_pos", "t_order_info", "insert", None, {
        "order_no": "PO1", "store_code": "S001", "order_status": 10, "item_count": 1}, ("order_no",), Position(1))
    assert {r.order_id for r in route(both, sale, "canal").records} == {"pos:PO1"}
    write = BusinessWrite("payment", "pos:PO1", "PAY", "T1", {"pay_txn_id": "T1", "pay_channel": "card",
                                                            "paid_amount": "1.00", "paid_at": "2026-11-01 10:00:00"},
                          "2026-11-01 10:00:00")
    with pytest.raises(BadInput, match="starts with 'pos:', another flow's entity prefix"):
        route(both, write, "business")


def test_tdc_flows_names_declared_flows_only() -> None:
    from flows.registry import running
    from settings import SettingsError, load_settings

    assert [flow.name for flow in running(load_settings({"TDC_FLOWS": "gqsh, pos,gqsh"}).flows)] == ["gqsh", "pos"]
    with pytest.raises(ValueError, match="no flow 'posx'; declared: gqsh, pos, sal_order, pur_mrb, stk_inventory"):
        running(("gqsh", "posx"))
    with pytest.raises(SettingsError, match="TDC_FLOWS names no flow"):
        load_settings({"TDC_FLOWS": " , "})
