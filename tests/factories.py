"""factory-boy factories for source rows, business writes, and their wire formats."""

from __future__ import annotations

import datetime as dt
import json
import uuid
from decimal import Decimal
from typing import Any

import factory

from demo.history import SourceChange, render_canal, render_debezium

T0 = dt.datetime(2026, 11, 2, 9, 30, 0, 125000)


class OrderHeaderFactory(factory.DictFactory):
    order_id = factory.LazyFunction(lambda: f"F{uuid.uuid4().hex[:16]}")
    store_id = factory.Sequence(lambda n: f"S{n % 8 + 1:03d}")
    member_id = "M00042"
    channel = "app"
    status = 10
    item_count = 1
    total_amount = Decimal("25.00")
    discount_amount = Decimal("0.00")
    pay_amount = Decimal("25.00")
    created_at = T0
    paid_at = None
    updated_at = T0


class OrderItemFactory(factory.DictFactory):
    item_id = factory.Sequence(lambda n: 9_000_000_000 + n)
    order_id = "F-missing"
    sku_id = "K0001"
    quantity = 1
    unit_price = Decimal("25.00")
    amount = Decimal("25.00")


class PaymentWriteFactory(factory.DictFactory):
    source = "payment"
    order_id = "F-missing"
    operation_type = "PAY"
    unique_key = factory.LazyFunction(lambda: f"T{uuid.uuid4().hex[:12]}")
    payload = factory.LazyAttribute(lambda o: {
        "pay_txn_id": o.unique_key, "pay_channel": "wechat", "paid_amount": "25.00",
        "paid_at": "2026-11-02T09:40:00.000"})
    occurred_at = "2026-11-02T09:40:00.000"


def _committed(at: dt.datetime) -> int:
    """A change's place in commit order when a test gives none: its time, in milliseconds since 2026."""
    return int((at - dt.datetime(2026, 1, 1)).total_seconds() * 1000)


def canal(table: str, row: dict[str, Any], kind: str = "insert", at: dt.datetime = T0,
          before: dict[str, Any] | None = None, sequence: int | None = None) -> str:
    """A Canal flat message line for one row change, committed ``sequence``-th (default: by ``at``)."""
    return render_canal(SourceChange(table, kind, row, at, before), sequence or _committed(at))


def debezium(table: str, row: dict[str, Any], kind: str = "insert", at: dt.datetime = T0,
             before: dict[str, Any] | None = None, sequence: int | None = None) -> str:
    """A Debezium change event line (no schema envelope) for one row change, committed
    ``sequence``-th (default: by ``at``)."""
    return render_debezium(SourceChange(table, kind, row, at, before), sequence or _committed(at))


def business(write: dict[str, Any]) -> str:
    return json.dumps(write)
