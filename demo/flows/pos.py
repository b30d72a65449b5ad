"""A demo history of the ``pos`` flow (till sales and refunds) and what it must produce.

A sale is held at the till with its lines, sometimes corrected (a line weighed again, the odd
cents wiped off the total), then mostly paid; some are voided while held, a few left held.
After payment some get refunds: applied, then refunded (money moves) or rejected, or still
waiting.  Weighed goods are sold by the kilogram at three decimal places.

The expected rows follow ``demo.flows``' semantics; for this flow: the status is the highest
of SUBMIT 10, PAY 20 and VOID 90 (REFUND sets none); ``refund_amount``/``refund_count``
count refunded refunds (status 20) only, ``last_refund_time`` is their latest
``refund_time``; ``biz_date`` is the day of ``pay_time``, else ``order_time``.  A sale counts
in the ADS once paid and not voided, on its ``biz_date``.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from demo.flows import (
    UTC,
    Cells,
    FlowHistory,
    Life,
    add_cell,
    assemble,
    business_day,
    cycle,
    id_start,
    scaled,
    source_database,
)
from demo.flows.master_data import SKUS, STORES, WEIGHED_SKUS
from demo.render import SourceChange
from flows.declared.pos import (
    APPLIED,
    HEADER_TABLE,
    HELD,
    ITEM,
    ITEM_REFUND,
    LINE_TABLE,
    ORDER,
    PAID,
    POS,
    REFUND,
    REFUNDED,
    REJECTED,
    VOIDED,
)

#: The status each operation gives the wide row; REFUND gives none.
SUBMIT_STATUS, PAY_STATUS, VOID_STATUS = 10, 20, 90
SALES, ITEM_SALES = "ads_pos_order_sales", "ads_pos_order_item_sales"
_MONEY, _WEIGHT = 2, 3
_CASHIERS = ["Li Na", "Wang Wei", "Zhang Min", "Liu Yang", "Chen Jing", "Yang Fan", "Zhao Lei", "Huang Li"]
_PAY_TYPES = ["wechat", "wechat", "alipay", "alipay", "unionpay", "cash", "card"]
_REASONS = ["damaged packaging", "wrong weight", "customer changed mind", "past best-before", "charged twice"]
#: The most lines a sale has, and refunds per sale: what a run's ids are reserved for.
_MOST_LINES, _MOST_REFUNDS, _MOST_REFUND_LINES = 10, 2, 3
_SKU = {sku[0]: sku for sku in SKUS + WEIGHED_SKUS}
_STORE = {store[0]: store for store in STORES}


class _Sale(Life):
    """Plays out one sale's life at the till, recording its source changes and final rows."""

    def __init__(self, rng: random.Random, order_no: str, opened: dt.datetime, ids: dict[str, int],
                 prices: dict[str, Decimal], zone: ZoneInfo):
        super().__init__(rng, opened, ids, zone)
        self.order_no = order_no
        self.prices = prices
        self.header: dict[str, Any] = {}
        self.items: list[dict[str, Any]] = []
        self.refunds: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
        #: Statuses of the operations the rows raise (all of them run).
        self.statuses = [SUBMIT_STATUS]
        #: Line id -> (quantity, amount) taken back by refunds not rejected.
        self.taken: dict[int, tuple[Decimal, Decimal]] = {}

    def _tick(self, low: int, high: int) -> dt.datetime:
        """Tills keep milliseconds."""
        self.now += dt.timedelta(seconds=self.rng.randint(low, high), milliseconds=self.rng.randint(0, 999))
        return self.now

    def _next(self, name: str) -> int:
        self.ids[name] += 1
        return self.ids[name]

    def _update(self, table: str, row: dict[str, Any], **values: Any) -> None:
        """An update stamps the row's update_time, when it has one."""
        if "update_time" in row:
            values = {**values, "update_time": self.now}
        super()._update(table, row, **values)

    def _priced(self, line: dict[str, Any]) -> None:
        line["amount"] = scaled(line["sale_price"] * line["quantity"], _MONEY)
        line["discount_amount"] = scaled(line["price"] * line["quantity"], _MONEY) - line["amount"]

    def _totals(self, wiped: Decimal) -> dict[str, Decimal]:
        total = sum((scaled(line["price"] * line["quantity"], _MONEY) for line in self.items), Decimal("0.00"))
        discount = sum((line["discount_amount"] for line in self.items), Decimal("0.00")) + wiped
        return {"total_amount": total, "discount_amount": discount, "pay_amount": total - discount}

    def _quantity(self, sku: tuple[str, str, str, str]) -> Decimal:
        if sku[3] == "kg":
            return Decimal(self.rng.randint(150, 2500)).scaleb(-_WEIGHT)
        return scaled(Decimal(self.rng.choice([1, 1, 1, 2, 2, 3, 4, 6])), _WEIGHT)

    def hold(self, store: tuple[str, str, str, str]) -> None:
        """The cashier rings the sale up and holds it: the header and its lines, one transaction."""
        rng, opened = self.rng, self.now
        skus = rng.sample(sorted(_SKU), rng.choice([1, 1, 2, 2, 3, 3, 4, 5, 6, _MOST_LINES]))
        for line_no, code in enumerate(skus, start=1):
            price = self.prices[code]
            line = {"id": self._next("item"), "order_no": self.order_no, "line_no": line_no, "sku_code": code,
                    "barcode": _barcode(code), "quantity": self._quantity(_SKU[code]), "price": price,
                    "sale_price": price if rng.random() < 0.7 else scaled(price * Decimal("0.88"), _MONEY),
                    "discount_amount": None, "amount": None, "create_time": opened}
            self._priced(line)
            self.items.append(line)
        till = rng.randint(1, 4)
        cashier = rng.randrange(len(_CASHIERS))
        local = opened.replace(tzinfo=UTC).astimezone(self.zone)
        self.header = {
            "order_no": self.order_no, "store_code": store[0], "pos_no": f"{store[0]}-{till:02d}",
            "shift_no": f"{store[0]}-{local:%Y%m%d}-{1 if local.hour < 15 else 2}",
            "cashier_id": f"{store[0]}C{cashier:02d}", "cashier_name": _CASHIERS[cashier],
            "member_id": f"M{rng.randint(1, 99_999_999):08d}" if rng.random() < 0.6 else None,
            "order_status": HELD, "item_count": len(self.items), **self._totals(Decimal("0.00")),
            "pay_type": None, "pay_time": None, "order_time": opened, "create_time": opened, "update_time": opened,
        }
        self.changes.append(SourceChange(ORDER, "insert", dict(self.header), opened))
        self.changes += [SourceChange(ITEM, "insert", dict(line), opened) for line in self.items]

    def correct(self) -> None:
        """Before payment: a line weighed again (or one more of it) and the totals with it, and
        sometimes the odd cents wiped off what is to pay."""
        line = self.rng.choice(self.items)
        if _SKU[line["sku_code"]][3] == "kg":
            factor = Decimal(self.rng.choice([-1, 1]) * self.rng.randint(3, 20) + 100) / 100
            quantity = scaled(line["quantity"] * factor, _WEIGHT)
            if quantity == line["quantity"] or quantity < Decimal("0.100"):
                quantity = line["quantity"] + Decimal("0.050")
        else:
            quantity = line["quantity"] + 1
        before = dict(line)
        line["quantity"] = quantity
        self._priced(line)
        self.changes.append(SourceChange(ITEM, "update", dict(line), self._tick(5, 120), before))
        self._update(ORDER, self.header, **self._totals(Decimal("0.00")))
        if self.rng.random() < 0.5:
            wiped = self.header["pay_amount"] % Decimal("0.10")
            if wiped:
                self._tick(1, 30)
                self._update(ORDER, self.header, **self._totals(wiped))

    def void(self) -> None:
        self._tick(30, 900)
        self._update(ORDER, self.header, order_status=VOIDED)
        self.statuses.append(VOID_STATUS)

    def pay(self) -> None:
        paid = self._tick(20, 900)
        self._update(ORDER, self.header, order_status=PAID, pay_type=self.rng.choice(_PAY_TYPES), pay_time=paid)
        self.statuses.append(PAY_STATUS)

    def refund(self) -> None:
        """A refund of some of what is left of some lines: applied, then refunded, rejected or
        left waiting.  Its lines always sum to its amount."""
        rng = self.rng
        left = [(line, line["quantity"] - self.taken.get(line["id"], (Decimal(0), Decimal(0)))[0],
                 line["amount"] - self.taken.get(line["id"], (Decimal(0), Decimal(0)))[1]) for line in self.items]
        left = [entry for entry in left if entry[1] > 0 and entry[2] > 0]
        if not left:
            return
        applied = self._tick(1800, 3 * 86400)
        refund_no = f"RF{self.order_no[2:]}{len(self.refunds) + 1:02d}"
        details = []
        for line, quantity, amount in rng.sample(left, rng.randint(1, min(_MOST_REFUND_LINES, len(left)))):
            if rng.random() < 0.5:
                taken_quantity, taken_amount = quantity, amount
            else:
                part = Decimal(rng.randint(20, 80)) / 100
                step = Decimal("0.001") if _SKU[line["sku_code"]][3] == "kg" else Decimal(1)
                taken_quantity = max(step, (quantity * part).quantize(step))
                taken_quantity = min(taken_quantity, quantity).quantize(Decimal("0.001"))
                taken_amount = min(amount, scaled(line["sale_price"] * taken_quantity, _MONEY))
            details.append({"id": self._next("item_refund"), "refund_no": refund_no, "order_no": self.order_no,
                            "item_id": line["id"], "sku_code": line["sku_code"], "refund_quantity": taken_quantity,
                            "refund_amount": taken_amount})
        row = {"refund_no": refund_no, "order_no": self.order_no, "store_code": self.header["store_code"],
               "pos_no": self.header["pos_no"], "cashier_id": self.header["cashier_id"], "refund_status": APPLIED,
               "refund_amount": sum((d["refund_amount"] for d in details), Decimal("0.00")),
               "refund_reason": rng.choice(_REASONS), "refund_time": None, "create_time": applied,
               "update_time": applied}
        self.changes.append(SourceChange(REFUND, "insert", dict(row), applied))
        self.changes += [SourceChange(ITEM_REFUND, "insert", dict(detail), applied) for detail in details]
        self.refunds.append((row, details))
        outcome = rng.random()
        if outcome < 0.9:
            self._tick(60, 7200)
            if outcome < 0.7:
                self._update(REFUND, row, refund_status=REFUNDED, refund_time=self.now)
            else:
                self._update(REFUND, row, refund_status=REJECTED)
                return
        for detail in details:
            quantity, amount = self.taken.get(detail["item_id"], (Decimal(0), Decimal(0)))
            self.taken[detail["item_id"]] = (quantity + detail["refund_quantity"], amount + detail["refund_amount"])

    def live(self) -> None:
        """The whole life: held, maybe corrected, then voided, left held or paid (and refunded)."""
        rng = self.rng
        if rng.random() < 0.15:
            self.correct()
        fate = rng.random()
        if fate < 0.08:
            self.void()
        elif fate >= 0.13:
            self.pay()
            for _ in range(rng.choice([0] * 7 + [1, 1, _MOST_REFUNDS])):
                self.refund()

    # --- what it must produce ------------------------------------------------------------------

    def refunded(self) -> list[tuple[dict[str, Any], list[dict[str, Any]]]]:
        return [(row, details) for row, details in self.refunds if row["refund_status"] == REFUNDED]

    def expected(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The header's wide row and its lines'."""
        h = self.header
        store = _STORE[h["store_code"]]
        refunded = self.refunded()
        times = [row["refund_time"] for row, _ in refunded]
        header = {name: h[name] for name in ("order_no", "store_code", "pos_no", "shift_no", "cashier_id",
                                             "cashier_name", "member_id", "item_count", "total_amount",
                                             "discount_amount", "pay_amount", "pay_type", "pay_time", "order_time")}
        header.update(
            store_name=store[1], city=store[2], region=store[3], order_status=max(self.statuses),
            refund_amount=sum((row["refund_amount"] for row, _ in refunded), Decimal("0.00")),
            refund_count=len(refunded), last_refund_time=max(times) if times else None,
            biz_date=business_day(h["pay_time"] or h["order_time"], self.zone))
        lines = []
        for item in self.items:
            taken = [d for _, details in refunded for d in details if d["item_id"] == item["id"]]
            sku = _SKU[item["sku_code"]]
            lines.append({
                "item_id": item["id"], "order_no": self.order_no, "line_no": item["line_no"],
                "store_code": h["store_code"], "biz_date": header["biz_date"], "sku_code": sku[0],
                "barcode": item["barcode"], "sku_name": sku[1], "category": sku[2], "quantity": item["quantity"],
                "price": item["price"], "sale_price": item["sale_price"], "discount_amount": item["discount_amount"],
                "amount": item["amount"],
                "refund_quantity": sum((d["refund_quantity"] for d in taken), Decimal("0.000")),
                "refund_amount": sum((d["refund_amount"] for d in taken), Decimal("0.00")),
                "order_status": header["order_status"]})
        return header, lines

    def contribute(self, cells: Cells) -> None:
        """Add the sale to the ADS cells, from its source rows: paid and not voided, on the day
        it was paid."""
        if self.header["pay_time"] is None or VOID_STATUS in self.statuses:
            return
        day = business_day(self.header["pay_time"], self.zone)
        store = self.header["store_code"]
        refunds = self.refunded()
        back = sum((row["refund_amount"] for row, _ in refunds), Decimal("0.00"))
        add_cell(cells, SALES, (day, store), order_count=1, pay_amount=self.header["pay_amount"],
                 refund_amount=back, net_amount=self.header["pay_amount"] - back)
        for item in self.items:
            quantity, amount = Decimal("0.000"), Decimal("0.00")
            for _, details in refunds:
                for detail in details:
                    if detail["item_id"] == item["id"]:
                        quantity, amount = quantity + detail["refund_quantity"], amount + detail["refund_amount"]
            add_cell(cells, ITEM_SALES, (day, store, item["sku_code"]), quantity=item["quantity"],
                     amount=item["amount"], refund_quantity=quantity, refund_amount=amount)


def _barcode(code: str) -> str:
    """The SKU's EAN-13 (country prefix 69), its check digit computed as GS1 specifies."""
    digits = f"69{int(code[1:]) * 7919 % 10**10:010d}"
    check = (10 - sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(digits)) % 10) % 10
    return f"{digits}{check}"


def _opened(rng: random.Random, zone: ZoneInfo) -> dt.datetime:
    """When a sale is rung up: store hours (09:00-22:30 in ``zone``) over a week from 1 November
    2026, a few just before midnight (paid the next day); as naive UTC, to the millisecond."""
    day = dt.datetime(2026, 11, 1) + dt.timedelta(days=rng.randrange(7))
    if rng.random() < 0.05:
        seconds = rng.randint(23 * 3600 + 50 * 60, 24 * 3600 - 1)
    else:
        seconds = rng.randint(9 * 3600, 22 * 3600 + 30 * 60)
    local = day + dt.timedelta(seconds=seconds, milliseconds=rng.randint(0, 999))
    return local.replace(tzinfo=zone).astimezone(UTC).replace(tzinfo=None)


def _dimensions(at: dt.datetime) -> list[SourceChange]:
    changes = [SourceChange("dim_store_shop", "insert",
                            {"store_id": s[0], "store_name": s[1], "city": s[2], "region": s[3]}, at) for s in STORES]
    changes += [SourceChange("dim_product_sku", "insert",
                             {"sku_id": k[0], "sku_name": k[1], "category": k[2], "unit": k[3]}, at)
                for k in SKUS + WEIGHED_SKUS]
    return changes


def _malformed(at: dt.datetime) -> list[SourceChange | str]:
    """Lines the engine must quarantine: not JSON, an amount that is no number, a line without its id."""
    return [
        "{not json",
        SourceChange(ORDER, "insert", {"order_no": "PO-BAD-AMOUNT", "store_code": "S001", "order_status": HELD,
                                       "item_count": 1, "total_amount": "12,50", "order_time": at}, at),
        SourceChange(ITEM, "insert", {"order_no": "PO-BAD-KEY", "line_no": 1, "sku_code": "K0001",
                                      "quantity": Decimal("1.000"), "amount": Decimal("9.90")}, at),
    ]


def generate(entities: int, seed: int | None = None, input_format: str = "canal", displacement: int = 40,
             duplicate_rate: float = 0.03, malformed: int = 6, zone: ZoneInfo = UTC,
             run_id: str | None = None) -> FlowHistory:
    """A history of ``entities`` till sales as ``input_format`` ('canal' or 'debezium') lines,
    with the wide rows and ADS cells it must produce.  ``run_id`` (default: a fresh one) makes
    the order numbers and ids; the same seed and run id give the same lines."""
    rng = random.Random(seed)
    run_id = run_id or uuid.uuid4().hex[:8]
    history = FlowHistory(flow=POS.name, run_id=run_id, expected={HEADER_TABLE: {}, LINE_TABLE: {}})
    limit = 10**15  # bigint ids, kept readable
    ids = {"item": id_start(run_id, ITEM, entities * _MOST_LINES + 1, limit),
           "item_refund": id_start(run_id, ITEM_REFUND, entities * _MOST_REFUNDS * _MOST_REFUND_LINES + 1, limit)}
    prices = {code: Decimal(rng.randint(1280, 16800) if sku[3] == "kg" else rng.randint(350, 8900)).scaleb(-2)
              for code, sku in sorted(_SKU.items())}
    changes: list[SourceChange] = []
    for n in range(entities):
        sale = _Sale(rng, f"PO{run_id}{n:05d}", _opened(rng, zone), ids, prices, zone)
        sale.hold(rng.choice(STORES))
        sale.live()
        header, lines = sale.expected()
        history.expected[HEADER_TABLE][sale.order_no] = header
        history.expected[LINE_TABLE].update((line["item_id"], line) for line in lines)
        sale.contribute(history.expected_ads)
        changes += sale.changes
    start = dt.datetime(2026, 11, 1)
    assemble(history, source_database(POS), _dimensions(start), changes, cycle(_malformed(start), malformed), rng,
             input_format, displacement, duplicate_rate)
    return history
