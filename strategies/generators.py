"""Generators, one per operation: apply what the operation contributes to the wide rows.

Each works on the current ``dwd_order`` row and ``dwd_order_item`` rows (read under the
optimistic lock) and the order's facts; every generator first refreshes the fields every
operation shares (header, extension, dimensions), then adds its own.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from decimal import Decimal
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from flows.gqsh import REFUNDED
from strategies.facts import OrderFacts

Row = dict[str, Any]
UTC = ZoneInfo("UTC")
ZERO = Decimal("0.00")


class Dimensions(Protocol):
    def store(self, store_id: str | None) -> dict[str, Any]: ...
    def sku(self, sku_id: str | None) -> dict[str, Any]: ...


def _money(value: str | None) -> Decimal | None:
    return None if value is None else Decimal(value)


def _time(value: str | None) -> dt.datetime | None:
    return None if value is None else dt.datetime.fromisoformat(value)


def _apply_header(order: Row, facts: OrderFacts) -> None:
    header = facts.one("gqsh_order") or {}
    if header:
        order.update(
            store_id=header["store_id"],
            member_id=header["member_id"],
            channel=header["channel"],
            item_count=header["item_count"],
            total_amount=_money(header["total_amount"]),
            discount_amount=_money(header["discount_amount"]),
            pay_amount=_money(header["pay_amount"]),
            created_at=_time(header["created_at"]),
        )
    ext = facts.one("gqsh_order_ext")
    if ext is not None:
        order["delivery_type"] = ext["delivery_type"]


def business_date(moment: dt.datetime | None, zone: ZoneInfo) -> dt.date | None:
    """The business day of a stored (UTC) time, where the business keeps its days."""
    if moment is None:
        return None
    return moment.replace(tzinfo=dt.UTC).astimezone(zone).date()


def _derive(order: Row, items: dict[int, Row], dims: Dimensions, zone: ZoneInfo) -> None:
    store = dims.store(order.get("store_id"))
    order.update(store_name=store.get("store_name"), city=store.get("city"), region=store.get("region"))
    order["biz_date"] = business_date(order.get("paid_at") or order.get("created_at"), zone)
    for item in items.values():
        sku = dims.sku(item.get("sku_id"))
        item.update(
            store_id=order.get("store_id"),
            biz_date=order["biz_date"],
            status=order.get("status", 0),
            sku_name=sku.get("sku_name"),
            category=sku.get("category"),
        )


def dimension_keys(facts: OrderFacts) -> list[tuple[str, str | None]]:
    """The (dimension, key) entries a merge of the order will look up, to fetch them at once."""
    header = facts.one("gqsh_order") or {}
    return [("store", header.get("store_id"))] + [("sku", row.get("sku_id")) for row in facts.all("gqsh_order_item")]


class SubmitGenerator:
    """Header fields and the order lines as the source holds them now."""

    def generate(self, order: Row, items: dict[int, Row], facts: OrderFacts) -> None:
        current = {row["item_id"]: row for row in facts.all("gqsh_order_item")}
        for item_id in list(items):
            if item_id not in current:
                del items[item_id]
        for item_id, row in current.items():
            item = items.setdefault(item_id, {"item_id": item_id, "refund_quantity": 0, "refund_amount": ZERO})
            item.update(
                order_id=facts.order_id,
                sku_id=row["sku_id"],
                quantity=row["quantity"] or 0,
                unit_price=_money(row["unit_price"]),
                amount=_money(row["amount"]),
            )


class PayGenerator:
    """Payment channel, transaction and time; the business date becomes the payment date."""

    def generate(self, order: Row, items: dict[int, Row], facts: OrderFacts) -> None:
        expected = order.get("pay_amount")
        payments = facts.all("payment")
        matching = [p for p in payments if _money(p["paid_amount"]) == expected] or payments
        payment = max(matching, key=lambda p: p["paid_at"])
        order.update(
            pay_channel=payment["pay_channel"],
            pay_txn_id=payment["pay_txn_id"],
            paid_at=_time(payment["paid_at"]),
        )


class NoFieldsGenerator:
    """An operation that only moves the status (DELIVER, CANCEL)."""

    def generate(self, order: Row, items: dict[int, Row], facts: OrderFacts) -> None:
        return None


class CompleteGenerator:
    """Performance records attach here: staff of the first record, amounts summed."""

    def generate(self, order: Row, items: dict[int, Row], facts: OrderFacts) -> None:
        records = facts.all("perf_record")
        order["perf_staff_id"] = records[0]["staff_id"] if records else None
        order["perf_amount"] = sum((Decimal(r["perf_amount"]) for r in records), ZERO) if records else None


class RefundGenerator:
    """Refunded after-sales summed per order and, from their details, per line."""

    def generate(self, order: Row, items: dict[int, Row], facts: OrderFacts) -> None:
        refunded = [a for a in facts.all("gqsh_order_after_sales") if a["status"] == REFUNDED]
        keys = {a["after_sales_id"] for a in refunded}
        order["refund_amount"] = sum((Decimal(a["refund_amount"]) for a in refunded), ZERO)
        order["refund_count"] = len(refunded)
        quantities: dict[int, int] = defaultdict(int)
        amounts: dict[int, Decimal] = defaultdict(lambda: ZERO)
        for detail in facts.all("gqsh_order_after_sales_dtl"):
            if detail["after_sales_id"] in keys:
                quantities[detail["item_id"]] += detail["refund_quantity"] or 0
                amounts[detail["item_id"]] += Decimal(detail["refund_amount"])
        for item_id, item in items.items():
            item["refund_quantity"] = quantities.get(item_id, 0)
            item["refund_amount"] = amounts.get(item_id, ZERO)


def apply_operation(generator: Any, operation_status: int | None, operation: str, order: Row,
                    items: dict[int, Row], facts: OrderFacts, dims: Dimensions, zone: ZoneInfo = UTC) -> None:
    """Run one generator on the rows: shared header fields, its own fields, the status it
    reaches, then what derives from them (business date, dimensions, line status)."""
    _apply_header(order, facts)
    generator.generate(order, items, facts)
    if operation_status is not None:
        order["status"] = max(order.get("status") or 0, operation_status)
    order["last_operation"] = operation
    _derive(order, items, dims, zone)
