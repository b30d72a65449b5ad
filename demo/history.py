"""A generator of realistic order histories and the wide rows they must produce.

The expected rows are computed here from the generator's own model of each order, not by
tdc's code, so comparing them with ``dwd_order`` tests the pipeline.  Source changes are
rendered as Canal flat messages or Debezium events (``demo.render``, for the gqsh source as
``GQSH_SOURCE`` says); payments as business writes.  Arrival is displaced (each change moved
up to ``displacement`` places), some lines duplicated, and a few malformed lines mixed in.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from demo import render
from demo.flows.master_data import SKUS, STORES
from demo.render import SourceChange, SourceDatabase
from strategies.generators import business_date

CENT = Decimal("0.01")
#: The gqsh source as its lines have always been rendered: no table declared to the renderer
#: (key: the first column; decimals at two places), ``updated_at`` sent as a TIMESTAMP.
GQSH_SOURCE = SourceDatabase("gqsh", undeclared_timestamps=frozenset({"updated_at"}))


@dataclass
class History:
    run_id: str
    #: (input format, JSON line), in arrival order; dimension lines come first.
    lines: list[tuple[str, str]] = field(default_factory=list)
    #: The source changes the non-business lines render, in commit order (dimensions first).
    changes: list[SourceChange] = field(default_factory=list)
    expected_orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    expected_items: dict[int, dict[str, Any]] = field(default_factory=dict)
    malformed: int = 0
    duplicated: int = 0

    @property
    def order_ids(self) -> list[str]:
        return list(self.expected_orders)

    def business_days(self, zone: ZoneInfo) -> tuple[dt.date, dt.date] | None:
        """The first and last business day (in ``zone``) an order of the history is paid on."""
        days = sorted(business_date(o["paid_at"], zone) or dt.date.min for o in self.expected_orders.values()
                      if o["paid_at"] is not None)
        return (days[0], days[-1]) if days else None


def _money(value: Decimal) -> Decimal:
    return value.quantize(CENT)


class _OrderBuilder:
    """Plays out one order's life, recording source changes, payments and the final rows."""

    def __init__(self, rng: random.Random, order_id: str, start: dt.datetime, ids: dict[str, int]):
        self.rng = rng
        self.order_id = order_id
        self.now = start
        self.ids = ids
        self.changes: list[SourceChange] = []
        self.payments: list[dict[str, Any]] = []
        self.header: dict[str, Any] = {}

    def _tick(self, low: int = 1, high: int = 600) -> dt.datetime:
        self.now += dt.timedelta(seconds=self.rng.randint(low, high), milliseconds=self.rng.randint(0, 999))
        return self.now

    def _next(self, name: str) -> int:
        self.ids[name] += 1
        return self.ids[name]

    def _update_header(self, **changes: Any) -> None:
        before = dict(self.header)
        self.header.update(changes, updated_at=self._tick())
        self.changes.append(SourceChange("gqsh_order", "update", dict(self.header), self.now, before))

    def build(self, stores: int) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        rng = self.rng
        store = rng.choice(STORES[:stores])
        lines: list[dict[str, Any]] = []
        for _ in range(rng.randint(1, 4)):
            sku = rng.choice(SKUS)
            quantity = rng.randint(1, 3)
            unit_price = _money(Decimal(rng.randint(500, 9900)) / 100)
            lines.append({"item_id": self._next("item"), "order_id": self.order_id, "sku_id": sku[0],
                          "quantity": quantity, "unit_price": unit_price, "amount": unit_price * quantity})
        total = sum((line["amount"] for line in lines), Decimal("0.00"))
        discount = _money(total * Decimal(rng.choice([0, 0, 0, 5, 10])) / 100)
        created = self._tick()
        self.header = {
            "order_id": self.order_id, "store_id": store[0], "member_id": f"M{rng.randint(1, 5000):05d}",
            "channel": rng.choice(["app", "applet", "pos"]), "status": 10, "item_count": len(lines),
            "total_amount": total, "discount_amount": discount, "pay_amount": total - discount,
            "created_at": created, "paid_at": None, "updated_at": created,
        }
        ext = {"order_id": self.order_id, "delivery_type": rng.choice(["delivery", "pickup"]),
               "city": store[2], "remark": None}
        self.changes.append(SourceChange("gqsh_order", "insert", dict(self.header), created))
        for line in lines:
            self.changes.append(SourceChange("gqsh_order_item", "insert", dict(line), created))
        self.changes.append(SourceChange("gqsh_order_ext", "insert", ext, created))

        expected: dict[str, Any] = {
            "order_id": self.order_id, "store_id": store[0], "store_name": store[1], "city": store[2],
            "region": store[3], "member_id": self.header["member_id"], "channel": self.header["channel"],
            "item_count": len(lines), "total_amount": total, "discount_amount": discount,
            "pay_amount": total - discount, "pay_channel": None, "pay_txn_id": None, "paid_at": None,
            "delivery_type": ext["delivery_type"], "refund_amount": Decimal("0.00"), "refund_count": 0,
            "perf_staff_id": None, "perf_amount": None, "created_at": created,
        }
        if rng.random() < 0.15:
            self._correct(lines)
        refunds: dict[int, tuple[int, Decimal]] = {}
        fate = rng.random()
        if fate < 0.10:
            self._update_header(status=50)
        elif fate < 0.85:
            self._pay(expected)
            self._after_pay(expected, lines, refunds)
        expected["status"] = self.header["status"]
        for name in ("total_amount", "discount_amount", "pay_amount"):
            expected[name] = self.header[name]
        moment = expected["paid_at"] or created
        expected["biz_date"] = moment.date()
        items = []
        for line in lines:
            sku = next(s for s in SKUS if s[0] == line["sku_id"])
            refund_quantity, refund_amount = refunds.get(line["item_id"], (0, Decimal("0.00")))
            items.append({
                "item_id": line["item_id"], "order_id": self.order_id, "store_id": store[0],
                "biz_date": expected["biz_date"], "sku_id": sku[0], "sku_name": sku[1], "category": sku[2],
                "quantity": line["quantity"], "unit_price": line["unit_price"], "amount": line["amount"],
                "refund_quantity": refund_quantity, "refund_amount": refund_amount, "status": expected["status"],
            })
        return expected, items

    def _correct(self, lines: list[dict[str, Any]]) -> None:
        """The source corrects the order before payment: one line's quantity and the discount."""
        line = self.rng.choice(lines)
        before = dict(line)
        line["quantity"] += 1
        line["amount"] = line["unit_price"] * line["quantity"]
        self.changes.append(SourceChange("gqsh_order_item", "update", dict(line), self._tick(), before))
        total = sum((each["amount"] for each in lines), Decimal("0.00"))
        discount = _money(total * Decimal(self.rng.choice([0, 2, 8])) / 100)
        self._update_header(total_amount=total, discount_amount=discount, pay_amount=total - discount)

    def _pay(self, expected: dict[str, Any]) -> None:
        paid_at = self._tick()
        txn = f"T{uuid.UUID(int=self.rng.getrandbits(128)).hex[:20]}"
        channel = self.rng.choice(["wechat", "alipay", "card"])
        self.payments.append({
            "source": "payment", "order_id": self.order_id, "operation_type": "PAY", "unique_key": txn,
            "payload": {"pay_txn_id": txn, "pay_channel": channel, "paid_amount": str(self.header["pay_amount"]),
                        "paid_at": paid_at.isoformat(timespec="milliseconds")},
            "occurred_at": paid_at.isoformat(timespec="milliseconds"),
        })
        self._update_header(status=20, paid_at=paid_at)
        expected.update(pay_channel=channel, pay_txn_id=txn, paid_at=paid_at)

    def _after_pay(self, expected: dict[str, Any], lines: list[dict[str, Any]],
                   refunds: dict[int, tuple[int, Decimal]]) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.3:
            self._update_header(status=30)
        elif roll < 0.8:
            if rng.random() < 0.5:
                self._update_header(status=30)
            self._update_header(status=40)
            staff = f"E{rng.randint(1, 200):04d}"
            amount = _money(self.header["pay_amount"] * Decimal("0.02"))
            self.changes.append(SourceChange("perf_record", "insert", {
                "id": self._next("perf"), "order_id": self.order_id, "staff_id": staff, "perf_amount": amount},
                self._tick()))
            expected.update(perf_staff_id=staff, perf_amount=amount)
        for _ in range(rng.choice([0] * 7 + [1, 1, 2])):
            self._after_sales(expected, lines, refunds)

    def _after_sales(self, expected: dict[str, Any], lines: list[dict[str, Any]],
                     refunds: dict[int, tuple[int, Decimal]]) -> None:
        rng = self.rng
        key = f"AS{self.order_id}{self._next('after_sales'):04d}"
        chosen = rng.sample(lines, rng.randint(1, len(lines)))
        details = []
        for line in chosen:
            quantity = rng.randint(1, line["quantity"])
            details.append({"id": self._next("dtl"), "after_sales_id": key, "order_id": self.order_id,
                            "item_id": line["item_id"], "refund_quantity": quantity,
                            "refund_amount": line["unit_price"] * quantity})
        amount = sum((d["refund_amount"] for d in details), Decimal("0.00"))
        applied = self._tick()
        row = {"after_sales_id": key, "order_id": self.order_id, "status": 10, "refund_amount": amount,
               "reason": rng.choice(["damaged", "missing", "changed mind"]), "created_at": applied,
               "updated_at": applied}
        self.changes.append(SourceChange("gqsh_order_after_sales", "insert", dict(row), applied))
        for detail in details:
            self.changes.append(SourceChange("gqsh_order_after_sales_dtl", "insert", detail, applied))
        refunded = rng.random() < 0.8
        before = dict(row)
        row.update(status=20 if refunded else 30, updated_at=self._tick())
        self.changes.append(SourceChange("gqsh_order_after_sales", "update", dict(row), self.now, before))
        if refunded:
            expected["refund_amount"] += amount
            expected["refund_count"] += 1
            for detail in details:
                quantity, value = refunds.get(detail["item_id"], (0, Decimal("0.00")))
                refunds[detail["item_id"]] = (quantity + detail["refund_quantity"], value + detail["refund_amount"])


def render_canal(change: SourceChange, sequence: int, source: SourceDatabase = GQSH_SOURCE) -> str:
    """``demo.render.render_canal``, by default for the gqsh source."""
    return render.render_canal(change, sequence, source)


def render_debezium(change: SourceChange, sequence: int, source: SourceDatabase = GQSH_SOURCE) -> str:
    """``demo.render.render_debezium``, by default for the gqsh source."""
    return render.render_debezium(change, sequence, source)


def _dimension_changes(at: dt.datetime) -> list[SourceChange]:
    changes = [SourceChange("dim_store_shop", "insert",
                            {"store_id": s[0], "store_name": s[1], "city": s[2], "region": s[3]}, at)
               for s in STORES]
    changes += [SourceChange("dim_product_sku", "insert",
                             {"sku_id": k[0], "sku_name": k[1], "category": k[2], "unit": k[3]}, at)
                for k in SKUS]
    return changes


MALFORMED = [
    "{not json",
    json.dumps({"id": 1, "database": "gqsh", "table": "gqsh_order", "type": "INSERT", "es": 1,
                "data": [{"order_id": "X-BAD3", "status": "10", "total_amount": "12,50"}]}),
    json.dumps({"source": "payment", "order_id": "X-BAD", "operation_type": "PAY", "unique_key": "t",
                "payload": {"pay_txn_id": "t", "pay_channel": "card", "paid_amount": "-3.00",
                            "paid_at": "2026-11-01 10:00:00"}, "occurred_at": "2026-11-01 10:00:00"}),
    json.dumps({"source": "payment", "order_id": "X-BAD2", "operation_type": "PAY", "unique_key": "u",
                "payload": {"pay_txn_id": "u", "pay_channel": "card", "paid_amount": "1.00",
                            "paid_at": "yesterday"}, "occurred_at": "2026-11-01 10:00:00"}),
]


def generate_history(orders: int, seed: int | None = None, input_format: str = "canal",
                     displacement: int = 40, duplicate_rate: float = 0.03, malformed: int = 6,
                     run_id: str | None = None, stores: int = len(STORES), span_minutes: int = 7 * 24 * 60,
                     ) -> History:
    """A history of ``orders`` orders as ``input_format`` ('canal' or 'debezium') lines plus
    payment writes, with the rows it must produce.

    Orders start within ``span_minutes`` of 1 November 2026 08:00, in the first ``stores`` stores."""
    rng = random.Random(seed)
    run_id = run_id or uuid.uuid4().hex[:8]
    history = History(run_id=run_id)
    base = dt.datetime(2026, 11, 1, 8, 0, 0)
    item_base = int(uuid.uuid4().int % 10**9) * 10**5
    ids = {"item": item_base, "perf": item_base, "dtl": item_base, "after_sales": 0}
    changes: list[SourceChange] = []
    payments: list[tuple[dt.datetime, dict[str, Any]]] = []
    for n in range(orders):
        start = base + dt.timedelta(minutes=rng.randint(0, span_minutes))
        builder = _OrderBuilder(rng, f"D{run_id}{n:05d}", start, ids)
        expected, items = builder.build(stores)
        history.expected_orders[builder.order_id] = expected
        history.expected_items.update((item["item_id"], item) for item in items)
        changes += builder.changes
        payments += [(dt.datetime.fromisoformat(p["occurred_at"]), p) for p in builder.payments]

    rendered = render_canal if input_format == "canal" else render_debezium
    history.lines += [(input_format, rendered(change, n)) for n, change in enumerate(_dimension_changes(base))]
    timeline: list[tuple[dt.datetime, int, str, str]] = []
    changes.sort(key=lambda c: c.at)
    history.changes = _dimension_changes(base) + changes
    for sequence, change in enumerate(changes, start=1000):
        timeline.append((change.at, sequence, input_format, rendered(change, sequence)))
    for at, payment in payments:
        timeline.append((at, 0, "business", json.dumps(payment)))
    timeline.sort(key=lambda entry: (entry[0], entry[1]))
    arrivals, history.duplicated = render.disorder([(fmt, line) for _, _, fmt, line in timeline], rng,
                                                   displacement, duplicate_rate)
    for n in range(malformed):
        bad = MALFORMED[n % len(MALFORMED)]
        arrivals.insert(rng.randrange(len(arrivals)), ("business" if "payment" in bad else input_format, bad))
        history.malformed += 1
    history.lines += arrivals
    return history
