"""Events derived from declarations: the online orders' four events as the hand-written derivation
made them (kept here as the oracle), over varied images; another flow's events from its own
declaration."""

from __future__ import annotations

import datetime as dt
import itertools
import random
from decimal import Decimal
from typing import Any

from streams.events import Change, order_events
from streams.firsts import FirstOfEvent, first_of

AT = dt.datetime(2026, 11, 2, 10, 0, 0, 123456)

# --- the hand-written derivation the declarations replaced (streams/events.py before) ----------

CANCELLED = 50
PAY_ORDER_FIELDS = ("store_id", "member_id", "channel", "biz_date", "paid_at", "pay_channel", "pay_txn_id",
                    "total_amount", "discount_amount", "pay_amount")
PAY_LINE_FIELDS = ("item_id", "sku_id", "quantity", "unit_price", "amount")
CANCEL_FIELDS = ("store_id", "member_id", "channel", "biz_date", "created_at", "item_count", "total_amount",
                 "pay_amount")
RETURN_ORDER_FIELDS = ("store_id", "member_id", "channel", "biz_date")
RETURN_LINE_FIELDS = ("item_id", "sku_id", "quantity", "amount", "refund_quantity", "refund_amount")


def _paid(order: dict[str, Any]) -> bool:
    return order.get("paid_at") is not None and order.get("status") != CANCELLED


def old_pay_order_details(image: dict | None) -> dict:
    if image is None or not _paid(image["order"]):
        return {}
    order = image["order"]
    head = {name: order.get(name) for name in PAY_ORDER_FIELDS}
    return {(order["order_id"], str(item["item_id"])): head | {name: item.get(name) for name in PAY_LINE_FIELDS}
            for item in image["items"]}


def old_cancel_orders(image: dict | None) -> dict:
    if image is None or image["order"].get("status") != CANCELLED:
        return {}
    order = image["order"]
    return {(order["order_id"],): {name: order.get(name) for name in CANCEL_FIELDS}}


def old_apply_returns(image: dict | None) -> dict:
    if image is None:
        return {}
    order = image["order"]
    head = {name: order.get(name) for name in RETURN_ORDER_FIELDS}
    return {(order["order_id"], str(item["item_id"])): head | {name: item.get(name) for name in RETURN_LINE_FIELDS}
            for item in image["items"]
            if (item.get("refund_quantity") or 0) > 0 or Decimal(item.get("refund_amount") or "0") > 0}


OLD_FACTS = {"PayOrderDetail": old_pay_order_details, "CancelOrder": old_cancel_orders,
             "ApplyReturn": old_apply_returns}


def old_paid_order(image: dict | None) -> tuple | None:
    """(member, channel, order, paid_at, first_date, store) of a paid order with a member."""
    if image is None:
        return None
    order = image["order"]
    if not _paid(order) or not order.get("member_id"):
        return None
    day = order.get("biz_date")
    return (order["member_id"], order.get("channel") or "", order["order_id"],
            dt.datetime.fromisoformat(order["paid_at"]), dt.date.fromisoformat(day) if day else None,
            order.get("store_id"))


# --- varied images ------------------------------------------------------------------------------

def _image(rng: random.Random) -> dict[str, Any]:
    paid = rng.random() < 0.7
    lines = rng.randint(0, 3)
    order = {"order_id": "O1", "store_id": rng.choice(["S001", "S002", None]),
             "member_id": rng.choice(["M1", "M2", "", None]), "channel": rng.choice(["app", "pos", "", None]),
             "status": rng.choice([10, 20, 30, 40, 50]),
             "paid_at": f"2026-11-0{rng.randint(1, 3)}T09:00:00.{rng.randint(0, 999):03d}" if paid else None,
             "pay_amount": rng.choice(["30.00", "31.00"]), "total_amount": "30.00", "discount_amount": "0.00",
             "pay_channel": rng.choice(["card", None]), "pay_txn_id": rng.choice(["T1", "T2"]),
             "biz_date": rng.choice(["2026-11-02", None]), "created_at": "2026-11-02T08:00:00.000",
             "item_count": lines, "version": 3}
    items = [{"item_id": n, "sku_id": f"K{n}", "quantity": rng.randint(1, 2), "unit_price": "15.00",
              "amount": rng.choice(["15.00", "30.00"]), "refund_quantity": rng.choice([0, 0, 1, None]),
              "refund_amount": rng.choice(["0.00", "0.00", "15.00", "0.01", None])}
             for n in range(1, lines + 1)]
    return {"order": order, "items": items}


def _images() -> list[dict[str, Any] | None]:
    rng = random.Random(7)
    return [None, *(_image(rng) for _ in range(120))]


def test_the_declared_gqsh_events_make_the_facts_the_hand_written_derivation_made() -> None:
    # Given many pairs of varied before and after images of one order
    images = _images()
    compared = 0
    for before, after in itertools.product(images[:40], images[1:41]):
        assert after is not None
        change = Change(1, "O1", 4, "update" if before else "insert", "PAY", before, after, AT)
        # When the declarations derive the change's events
        made = order_events(change)
        # Then they are the events the old functions' facts make, in the same order
        expected = []
        for kind, facts_of in OLD_FACTS.items():
            old_before, old_after = facts_of(before), facts_of(after)
            found = [(key, "create" if key not in old_before else "update", data)
                     for key, data in sorted(old_after.items()) if old_before.get(key) != data]
            found += [(key, "delete", old_before[key]) for key in sorted(old_before.keys() - old_after.keys())]
            expected += [(kind, key, op, data) for key, op, data in found]
        from streams.events import event_id

        assert [(e.type, e.event_id, e.op, e.data, e.version) for e in made] == [
            (kind, event_id(kind, *key), op, data, 4) for kind, key, op, data in expected]
        compared += len(made)
    assert compared > 1000  # the images made every kind of event


def test_a_first_consumption_candidate_is_the_paid_order_the_old_derivation_kept() -> None:
    first = _first_consume_date()
    for image in _images():
        candidate = first.candidate(image, "O1")
        old = old_paid_order(image)
        if old is None:
            assert candidate is None
            continue
        assert candidate is not None
        assert (*candidate.group, candidate.order_id, candidate.by, *(v for _, v in candidate.others)) == old


def _first_consume_date() -> FirstOfEvent:
    return first_of("gqsh", "FirstConsumeDate")


# --- another flow: the Kingdee sales orders ------------------------------------------------------

def _document(status: str = "C", cancel: str = "A", amount: str = "100.0000000000", entries: int = 2) -> dict:
    order = {"FID": 7, "FBILLNO": "XSDD0007", "FDATE": "2026-11-02T00:00:00.000", "FCUSTID": 11, "store_id": "S001",
             "FSALEORGID": 1, "FDOCUMENTSTATUS": status, "FCANCELSTATUS": cancel,
             "FAPPROVEDATE": "2026-11-02T10:00:00.000" if status == "C" else None, "entry_count": entries,
             "FQTY": "3.0000000000", "FAMOUNT": amount, "FTAXAMOUNT": "13.0000000000", "FALLAMOUNT": "113.0000000000",
             "biz_date": "2026-11-02", "status": 20 if status == "C" else 10, "version": 2}
    lines = [{"FENTRYID": 70 + n, "FID": 7, "FSEQ": n, "FMATERIALID": 500 + n, "FSTOCKID": 9,
              "FQTY": "1.5000000000", "FPRICE": "10.0000000000", "FAMOUNT": amount, "FALLAMOUNT": amount,
              "material_number": f"M{n}", "store_id": "S001", "biz_date": "2026-11-02"} for n in range(1, entries + 1)]
    return {"order": order, "items": lines}


def _sales_change(before: dict | None, after: dict, version: int = 2) -> Change:
    return Change(1, "sal_order:7", version, "update" if before else "insert", "AUDIT", before, after, AT)


def test_an_audited_sales_document_is_created_updated_and_deleted_from_its_declaration() -> None:
    # A saved document makes nothing; auditing it makes the document and one fact per entry
    audited = order_events(_sales_change(_document(status="A"), _document()))
    assert [(e.type, e.op) for e in audited] == [("SalesOrderAudited", "create")] + [
        ("SalesOrderEntryAudited", "create")] * 2
    assert audited[0].data["FBILLNO"] == "XSDD0007" and audited[0].order_id == "sal_order:7"
    assert audited[1].data["FBILLNO"] == "XSDD0007" and audited[1].data["FENTRYID"] == 71
    # A corrected amount is an update of the same facts; an entry taken out is a delete
    corrected = order_events(_sales_change(_document(), _document(amount="90.0000000000", entries=1), 3))
    assert [(e.type, e.op) for e in corrected] == [
        ("SalesOrderAudited", "update"), ("SalesOrderEntryAudited", "update"), ("SalesOrderEntryAudited", "delete")]
    assert {e.event_id for e in corrected} == {e.event_id for e in audited}
    # Taken back to re-audit (FDOCUMENTSTATUS D), every fact is gone
    unaudited = order_events(_sales_change(_document(amount="90.0000000000", entries=1), _document(status="D"), 4))
    assert [(e.type, e.op) for e in unaudited] == [("SalesOrderAudited", "delete"),
                                                   ("SalesOrderEntryAudited", "delete")]


def test_a_customers_first_audited_order_is_a_first_of_event_of_its_own() -> None:
    first = first_of("sal_order", "FirstCustomerOrder")
    candidate = first.candidate(_document(), "sal_order:7")
    assert candidate is not None and candidate.group == (11,)
    assert candidate.by == dt.datetime(2026, 11, 2, 10, 0)
    assert first.candidate(_document(status="A"), "sal_order:7") is None
    assert first.candidate(_document(cancel="B"), "sal_order:7") is None
    event = first.event(candidate.group, candidate, 1, "create", _sales_change(None, _document()))
    assert (event.key, event.order_id, event.data["FCUSTID"], event.data["first_audited_at"]) == (
        "11", "sal_order:7", 11, "2026-11-02T10:00:00.000")


def test_gqshs_first_consumption_tables_made_from_the_declaration_are_the_ones_older_warehouses_hold() -> None:
    from sqlalchemy.dialects import mysql
    from sqlalchemy.schema import CreateIndex, CreateTable

    from models.firsts import FIRST_TABLES

    tables = FIRST_TABLES["FirstConsumeDate"]

    def ddl(statement: Any) -> str:
        return " ".join(str(statement.compile(dialect=mysql.dialect())).split())

    assert ddl(CreateTable(tables.first)) == (
        "CREATE TABLE first_consume ( member_id VARCHAR(32) NOT NULL, channel VARCHAR(16) NOT NULL, order_id "
        "VARCHAR(64) NOT NULL, first_paid_at DATETIME(3) NOT NULL, first_date DATE, store_id VARCHAR(32), revision "
        "INTEGER NOT NULL, updated_at DATETIME(3) NOT NULL, gone_at DATETIME(3), moved_by_order VARCHAR(64), "
        "moved_by_version INTEGER, PRIMARY KEY (member_id, channel) )")
    assert ddl(CreateTable(tables.entities)) == (
        "CREATE TABLE first_consume_order ( order_id VARCHAR(64) NOT NULL, version INTEGER NOT NULL, member_id "
        "VARCHAR(32), channel VARCHAR(16), paid_at DATETIME(3), first_date DATE, store_id VARCHAR(32), updated_at "
        "DATETIME(3) NOT NULL, PRIMARY KEY (order_id) )")
    assert [ddl(CreateIndex(index)) for index in tables.entities.indexes] == [
        "CREATE INDEX ix_first_consume_order_first ON first_consume_order (member_id, channel, paid_at, order_id)"]
