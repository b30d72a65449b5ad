"""Completeness checks, one per operation (DESIGN section 3): has the data it needs arrived?

Each ``check`` returns None when the operation may run, or the reason it must wait.
"""

from __future__ import annotations

from decimal import Decimal

from flows.gqsh import COMPLETED, DELIVERED, PAID, REFUNDED
from strategies.facts import OrderFacts


def _header_status(facts: OrderFacts) -> int | None:
    header = facts.one("gqsh_order")
    return None if header is None else header.get("status")


class SubmitChecker:
    """The header, and exactly ``item_count`` item rows."""

    def check(self, facts: OrderFacts) -> str | None:
        header = facts.one("gqsh_order")
        if header is None:
            return "order header has not arrived"
        items = len(facts.all("gqsh_order_item"))
        expected = header.get("item_count") or 0
        if items != expected:
            return f"{items} of {expected} item rows have arrived"
        return None


class PayChecker:
    """A paid header and a payment whose paid_amount equals its pay_amount."""

    def check(self, facts: OrderFacts) -> str | None:
        if _header_status(facts) not in (PAID, DELIVERED, COMPLETED):
            return "order header is not paid yet"
        header = facts.one("gqsh_order")
        assert header is not None
        payments = facts.all("payment")
        if not payments:
            return "payment has not arrived"
        expected = Decimal(header["pay_amount"] or "0")
        if not any(Decimal(p["paid_amount"]) == expected for p in payments):
            paid = ", ".join(p["paid_amount"] for p in payments)
            return f"payment of {paid} does not match pay_amount {expected}"
        return None


class StatusChecker:
    """The header has reached one of the statuses that record the operation."""

    def __init__(self, *statuses: int):
        self.statuses = statuses

    def check(self, facts: OrderFacts) -> str | None:
        status = _header_status(facts)
        if status not in self.statuses:
            return f"order header status is {status}, waiting for {' or '.join(map(str, self.statuses))}"
        return None


class RefundChecker:
    """Every refunded after-sales header has detail rows summing to its refund_amount."""

    def check(self, facts: OrderFacts) -> str | None:
        details = facts.all("gqsh_order_after_sales_dtl")
        for after_sales in facts.all("gqsh_order_after_sales"):
            if after_sales["status"] != REFUNDED:
                continue
            key = after_sales["after_sales_id"]
            total = sum((Decimal(d["refund_amount"]) for d in details if d["after_sales_id"] == key), Decimal(0))
            expected = Decimal(after_sales["refund_amount"] or "0")
            if total != expected:
                return f"after-sales {key}: details sum to {total} of {expected}"
        return None


