"""The state machine, checkers and generators on facts built in memory."""

import datetime as dt
import json
from decimal import Decimal
from zoneinfo import ZoneInfo

import pytest

from flows.state_machine import SUCCESSORS, Illegal, blocking_reason
from inputs.positions import Position, encode
from strategies import CHECKERS
from strategies.facts import OrderFacts
from strategies.generators import business_date


def _at(sequence: str) -> str:
    """A stored binlog position: offset ``sequence`` in one binlog file."""
    return encode(Position(1_700_000_000_000, binlog=(1, int(sequence))))


def facts(*rows: tuple[str, str, dict, str], deleted: tuple[str, str, str] | None = None) -> OrderFacts:
    metadata = [{"source": s, "unique_key": k, "kind": "insert", "content": json.dumps(c), "position": _at(p)}
                for s, k, c, p in rows]
    if deleted:
        metadata.append({"source": deleted[0], "unique_key": deleted[1], "kind": "delete", "content": "{}",
                         "position": _at(deleted[2])})
    return OrderFacts.from_metadata("O1", metadata)


HEADER = {"order_id": "O1", "status": 20, "item_count": 2, "pay_amount": "30.00"}


def test_pay_waits_for_submit_and_cancel_after_pay_is_illegal() -> None:
    assert blocking_reason("PAY", done=set(), ever_done=set()) == "waiting for SUBMIT"
    assert blocking_reason("PAY", done={"SUBMIT"}, ever_done={"SUBMIT"}) is None
    with pytest.raises(Illegal, match="CANCEL after PAY"):
        blocking_reason("CANCEL", done={"SUBMIT"}, ever_done={"SUBMIT", "PAY"})
    assert SUCCESSORS["PAY"] == ("DELIVER", "COMPLETE", "REFUND")


def test_newest_position_wins_and_a_delete_removes_the_row() -> None:
    known = facts(("gqsh_order", "O1", {**HEADER, "status": 10}, "2"), ("gqsh_order", "O1", HEADER, "3"),
                  ("gqsh_order_item", "1", {"item_id": 1}, "1"), deleted=("gqsh_order_item", "1", "4"))
    assert known.one("gqsh_order")["status"] == 20
    assert known.all("gqsh_order_item") == []


def test_submit_needs_exactly_item_count_lines() -> None:
    one_line = facts(("gqsh_order", "O1", HEADER, "1"), ("gqsh_order_item", "1", {"item_id": 1}, "1"))
    assert CHECKERS["SUBMIT"].check(one_line) == "1 of 2 item rows have arrived"
    both = facts(("gqsh_order", "O1", HEADER, "1"), ("gqsh_order_item", "1", {"item_id": 1}, "1"),
                 ("gqsh_order_item", "2", {"item_id": 2}, "1"))
    assert CHECKERS["SUBMIT"].check(both) is None


def test_pay_needs_a_payment_of_exactly_the_pay_amount() -> None:
    wrong = facts(("gqsh_order", "O1", HEADER, "1"), ("payment", "T1", {"paid_amount": "29.99"}, "1"))
    assert "does not match pay_amount 30.00" in CHECKERS["PAY"].check(wrong)
    right = facts(("gqsh_order", "O1", HEADER, "1"), ("payment", "T1", {"paid_amount": "30.00"}, "1"))
    assert CHECKERS["PAY"].check(right) is None


def test_refund_waits_until_details_sum_to_the_refund_amount() -> None:
    after_sales = {"after_sales_id": "A1", "status": 20, "refund_amount": "10.00"}
    partial = facts(("gqsh_order_after_sales", "A1", after_sales, "1"),
                    ("gqsh_order_after_sales_dtl", "1", {"after_sales_id": "A1", "refund_amount": "4.00"}, "1"))
    assert CHECKERS["REFUND"].check(partial) == "after-sales A1: details sum to 4.00 of 10.00"
    applied_only = facts(("gqsh_order_after_sales", "A1", {**after_sales, "status": 10}, "1"))
    assert CHECKERS["REFUND"].check(applied_only) is None
    assert Decimal("10.00") == Decimal(after_sales["refund_amount"])


def test_the_business_day_is_the_calendar_day_in_the_business_zone() -> None:
    # 20:30 UTC on 1 November is already 2 November in Shanghai, still 1 November in New York
    paid = dt.datetime(2026, 11, 1, 20, 30)
    assert str(business_date(paid, ZoneInfo("UTC"))) == "2026-11-01"
    assert str(business_date(paid, ZoneInfo("Asia/Shanghai"))) == "2026-11-02"
    assert str(business_date(paid, ZoneInfo("America/New_York"))) == "2026-11-01"
    assert business_date(None, ZoneInfo("UTC")) is None
