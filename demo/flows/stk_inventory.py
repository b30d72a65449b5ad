"""A demo history of the ``stk_inventory`` flow (Kingdee inventory balances) and what it must produce.

Each entity is one row of ``t_stk_inventory``: the balance of one material in one warehouse,
kept by the head office (``BD_KeeperOrg``), by a store on consignment (``BD_Customer``: the
store's customer id, looked up in ``store_by_customer``) or by a supplier (``BD_Supplier``),
owned by the head office; frozen goods and hotpot bases are kept by lot (with production and
expiry dates), one row per lot.  A row is inserted by the movement that first brings the
material there, then every movement Kingdee audits updates it in place: deliveries take stock
out (and the reservation they used), receipts bring more, sales orders reserve stock
(``FBASELOCKQTY``) and release it.  Most rows move a few times over the week, some are busy
(twenty to fifty movements a day); some are sold out and stay at zero, and (``clear_rate``) a
row at zero may be cleared: Kingdee deletes it.  The stock unit is the base unit, so ``FQTY`` is
``FBASEQTY`` and ``FLOCKQTY`` ``FBASELOCKQTY``; weighed goods by the kilogram, to the gram, and
never less than 100 g left in a row (a row under it is emptied).

The expected rows follow ``demo.flows``' semantics; for this flow: every insert or update
raises BALANCE (status 10), a delete CLEAR (90); a live row's wide row is its final source row,
``FCUSTID`` its keeper when that is a customer, ``biz_date`` the day of its last movement; a
cleared row's wide row is its key and status 90, every other column NULL (no source row is
left).  The stock balance ADS counts each live row once, with its final quantities (the ledger
takes back what an earlier version added), under its stock organisation, store ('None' for
stock no store keeps: a NULL text key), material and warehouse; a cleared row counts nothing,
and a cell left at zero is not there.

``clear_rate`` (default 0.3) is how many of the rows left empty Kingdee deletes: a delete may
reach tdc before the BALANCE of the row's previous state has run, or an update after the delete
it preceded; the row ends cleared either way.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from demo.flows import (
    KINGDEE_PLACES,
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
from demo.flows.master_data import (
    CUSTOMERS,
    KINGDEE_DIMENSIONS,
    MATERIALS,
    STOCKS,
    STORES,
    SUPPLIERS,
    WEIGHED_UNIT,
)
from demo.render import SourceChange
from flows.declared.stk_inventory import CLEARED, INVENTORY, KEPT_BY_CUSTOMER, LIVE, STK_INVENTORY, TABLE

KEPT_BY_ORG, KEPT_BY_SUPPLIER, OWNED_BY_ORG = "BD_KeeperOrg", "BD_Supplier", "BD_OwnerOrg"
BALANCE_ADS = "ads_jd_stock_balance"
ORG = 100_001
#: Kingdee's stock status "available".
AVAILABLE = 10_000
_PLACES = KINGDEE_PLACES
_GRAM, _LEAST_KG = Decimal("0.001"), Decimal("0.1")
_MATERIAL = {m[0]: m for m in MATERIALS}
_STOCK = {s[0]: s for s in STOCKS}
_CUSTOMER = {c[0]: c for c in CUSTOMERS}
_COLD_STORE = STOCKS[1][0]
_CENTRAL = [STOCKS[n][0] for n in (0, 2, 3, 4)]
_FROZEN = {m[0] for m in MATERIALS if m[2].startswith("Frozen")}
_BY_LOT = _FROZEN | {m[0] for m in MATERIALS if m[4] == 201}
#: Days a lot keeps: frozen goods a year, hotpot bases eighteen months.
_SHELF_DAYS = {m: 365 if m in _FROZEN else 540 for m in _BY_LOT}
_REGIONAL_STOCK = {"East": STOCKS[0][0], "North": STOCKS[2][0], "South": STOCKS[3][0], "West": STOCKS[4][0],
                   "Central": STOCKS[0][0]}
_REGION = {store[0]: store[3] for store in STORES}


#: The wide row's columns copied from the source row, and the others (bookkeeping aside).
_COPIED = ("FID", "FSTOCKORGID", "FKEEPERTYPEID", "FKEEPERID", "FOWNERTYPEID", "FOWNERID", "FMATERIALID", "FSTOCKID",
           "FSTOCKLOCID", "FSTOCKSTATUSID", "FLOT", "FPRODUCEDATE", "FEXPIRYDATE", "FBASEUNITID", "FBASEQTY",
           "FBASELOCKQTY", "FSTOCKUNITID", "FQTY", "FLOCKQTY", "FUPDATETIME")
_DERIVED = ("FCUSTID", "store_id", "store_name", "material_number", "material_name", "stock_number", "stock_name",
            "status", "biz_date")


def _qty(value: Decimal) -> Decimal:
    return scaled(value, _PLACES)


class _Balance(Life):
    """Plays out one inventory row's life in Kingdee, recording its source changes and final row."""

    def __init__(self, rng: random.Random, fid: str, opened: dt.datetime, ids: dict[str, int], zone: ZoneInfo):
        super().__init__(rng, opened, ids, zone)
        self.fid = fid
        self.row: dict[str, Any] = {}
        self.statuses = [LIVE]

    @property
    def cleared(self) -> bool:
        return CLEARED in self.statuses

    def _weighed(self) -> bool:
        return _MATERIAL[self.row["FMATERIALID"]][5] == WEIGHED_UNIT

    def _receipt(self) -> Decimal:
        if self._weighed():
            return _qty(Decimal(self.rng.randint(20_000, 400_000)).scaleb(-3))
        return _qty(Decimal(self.rng.randint(10, 300)))

    def _part(self, of: Decimal) -> Decimal:
        """Some of ``of`` (a fifth to all of it), in whole grams or cartons, at least one."""
        step = _GRAM if self._weighed() else Decimal(1)
        part = (of * self.rng.randint(20, 100) / 100).quantize(step)
        return _qty(min(of, max(step, part)))

    def open(self, keeper: tuple[str, int], material: int, stock: int) -> None:
        """The movement that first brings the material there: the row inserted."""
        unit = _MATERIAL[material][5]
        lot, produced, expires = 0, None, None
        if material in _BY_LOT:
            self.ids["lot"] += 1
            lot = self.ids["lot"]
            produced = dt.datetime.combine(self.now.date(), dt.time()) - dt.timedelta(days=self.rng.randint(3, 40))
            expires = produced + dt.timedelta(days=_SHELF_DAYS[material])
        zero = _qty(Decimal(0))
        self.row = {
            "FID": self.fid, "FSTOCKORGID": ORG, "FKEEPERTYPEID": keeper[0], "FKEEPERID": keeper[1],
            "FOWNERTYPEID": OWNED_BY_ORG, "FOWNERID": ORG, "FMATERIALID": material, "FSTOCKID": stock,
            "FSTOCKLOCID": 0, "FAUXPROPID": 0, "FSTOCKSTATUSID": AVAILABLE, "FLOT": lot, "FMTONO": "",
            "FPRODUCEDATE": produced, "FEXPIRYDATE": expires, "FBASEUNITID": unit, "FBASEQTY": zero,
            "FBASELOCKQTY": zero, "FSTOCKUNITID": unit, "FQTY": zero, "FLOCKQTY": zero, "FSECUNITID": 0,
            "FSECQTY": zero, "FUPDATETIME": self.now,
        }
        self._set(self._receipt(), zero)
        self.changes.append(SourceChange(INVENTORY, "insert", dict(self.row), self.now))

    def _set(self, quantity: Decimal, locked: Decimal) -> None:
        self.row.update(FBASEQTY=quantity, FQTY=quantity, FBASELOCKQTY=locked, FLOCKQTY=locked,
                        FUPDATETIME=self.now)

    def _moved(self, quantity: Decimal, locked: Decimal) -> None:
        before = dict(self.row)
        self._set(quantity, locked)
        self.changes.append(SourceChange(INVENTORY, "update", dict(self.row), self.now, before))

    def _out(self, quantity: Decimal) -> None:
        """A delivery of ``quantity``: it uses the reservation first; a weighed row under 100 g is emptied."""
        left = self.row["FBASEQTY"] - quantity
        if self._weighed() and left < _LEAST_KG:
            left = _qty(Decimal(0))
        self._moved(left, min(left, max(_qty(Decimal(0)), self.row["FBASELOCKQTY"] - quantity)))

    def move(self) -> None:
        """One movement Kingdee audits: a delivery, a receipt, a reservation or a release."""
        rng = self.rng
        quantity, locked = self.row["FBASEQTY"], self.row["FBASELOCKQTY"]
        kind = rng.random()
        if kind < 0.45 and quantity > 0:
            self._out(self._part(quantity))
        elif 0.45 <= kind < 0.6 and quantity > locked:
            self._moved(quantity, locked + self._part(quantity - locked))
        elif 0.6 <= kind < 0.7 and locked > 0:
            self._moved(quantity, _qty(Decimal(0)) if rng.random() < 0.5 else locked - self._part(locked))
        else:
            self._moved(quantity + self._receipt(), locked)

    def clear(self) -> None:
        """Kingdee clears the empty row: it is deleted."""
        self._tick(3600, 12 * 3600)
        self.changes.append(SourceChange(INVENTORY, "delete", dict(self.row), self.now))
        self.statuses.append(CLEARED)

    def live(self, clear_rate: float) -> None:
        """A few movements over the week, or a busy day of many; some sold out at the end, and
        an empty row maybe cleared."""
        rng = self.rng
        if rng.random() < 0.1:
            for _ in range(rng.randint(20, 50)):
                self._tick(60, 20 * 60)
                self.move()
        else:
            for _ in range(rng.choice([0, 1, 1, 2, 2, 3, 4, 5, 6, 8])):
                self._tick(600, 20 * 3600)
                self.move()
        if self.row["FBASEQTY"] > 0 and rng.random() < 0.15:
            self._tick(600, 8 * 3600)
            self._out(self.row["FBASEQTY"])
        if self.row["FBASEQTY"] == 0 and rng.random() < clear_rate:
            self.clear()

    # --- what it must produce ------------------------------------------------------------------

    def expected(self) -> dict[str, Any]:
        """The wide row: the final source row and what is looked up by it, or the key of a cleared one."""
        row: dict[str, Any] = dict.fromkeys(_COPIED + _DERIVED)
        row.update(FID=self.fid, status=max(self.statuses))
        if self.cleared:
            return row
        r = self.row
        row.update({name: r[name] for name in _COPIED})
        customer = _CUSTOMER[r["FKEEPERID"]] if r["FKEEPERTYPEID"] == KEPT_BY_CUSTOMER else None
        material, stock = _MATERIAL[r["FMATERIALID"]], _STOCK[r["FSTOCKID"]]
        row.update(FCUSTID=customer[0] if customer else None, store_id=customer[3] if customer else None,
                   store_name=customer[4] if customer else None, material_number=material[1],
                   material_name=material[2], stock_number=stock[1], stock_name=stock[2],
                   biz_date=business_day(r["FUPDATETIME"], self.zone))
        return row

    def contribute(self, cells: Cells) -> None:
        """Add the row's final quantities to the balance cells, unless it was cleared; a store
        that keeps no stock is the text 'None'."""
        if self.cleared:
            return
        r = self.row
        store = _CUSTOMER[r["FKEEPERID"]][3] if r["FKEEPERTYPEID"] == KEPT_BY_CUSTOMER else None
        add_cell(cells, BALANCE_ADS, (r["FSTOCKORGID"], str(store), r["FMATERIALID"], r["FSTOCKID"]),
                 base_qty=r["FBASEQTY"], base_lock_qty=r["FBASELOCKQTY"],
                 base_available_qty=r["FBASEQTY"] - r["FBASELOCKQTY"], qty=r["FQTY"], lock_qty=r["FLOCKQTY"])


def _guid(run_id: str, n: int) -> str:
    """The n-th row's FID: a GUID, as Kingdee makes them, placed by the run id."""
    return str(uuid.UUID(bytes=hashlib.sha256(f"{run_id}/{INVENTORY}/{n}".encode()).digest()[:16], version=4))


def _place(rng: random.Random, used: set[tuple[Any, ...]]) -> tuple[tuple[str, int], int, int]:
    """Who keeps what where, a combination no other row has (rows kept by lot always differ):
    the head office in its own warehouses, a store on consignment in its region's warehouse, or
    a supplier (vendor-managed) with a material it supplies; frozen goods in the cold store."""
    while True:
        kind = rng.random()
        if kind < 0.65:
            keeper, material = (KEPT_BY_ORG, ORG), rng.choice(MATERIALS)[0]
            stock = rng.choice(_CENTRAL)
        elif kind < 0.9:
            customer = rng.choice(CUSTOMERS)
            keeper, material = (KEPT_BY_CUSTOMER, customer[0]), rng.choice(MATERIALS)[0]
            stock = _REGIONAL_STOCK[_REGION[customer[3]]]
        else:
            supplier = rng.choice(SUPPLIERS)
            keeper, material = (KEPT_BY_SUPPLIER, supplier[0]), rng.choice(supplier[3])
            stock = rng.choice(_CENTRAL)
        if material in _FROZEN:
            stock = _COLD_STORE
        combination = (keeper, material, stock)
        if material in _BY_LOT or combination not in used:
            used.add(combination)
            return keeper, material, stock


def _opened(rng: random.Random) -> dt.datetime:
    """When a row is first moved: warehouse hours over a week from 1 November 2026, whole seconds."""
    day = dt.datetime(2026, 11, 1) + dt.timedelta(days=rng.randrange(7))
    return day + dt.timedelta(seconds=rng.randint(6 * 3600, 21 * 3600))


def _dimensions(at: dt.datetime) -> list[SourceChange]:
    tables = [dimension.table for dimension in STK_INVENTORY.dimensions]
    return [SourceChange(table, "insert", dict(zip(KINGDEE_DIMENSIONS[table][0], row, strict=True)), at)
            for table in tables for row in KINGDEE_DIMENSIONS[table][1]]


def _malformed(at: dt.datetime) -> list[SourceChange | str]:
    """Lines the engine must quarantine: not JSON, a quantity that is no number, a row without its id."""
    return [
        "{not json",
        SourceChange(INVENTORY, "insert", {"FID": "00000000-0000-4000-8000-000000000007", "FSTOCKORGID": ORG,
                                           "FMATERIALID": MATERIALS[0][0], "FBASEQTY": "12,5"}, at),
        SourceChange(INVENTORY, "insert", {"FSTOCKORGID": ORG, "FMATERIALID": MATERIALS[0][0],
                                           "FBASEQTY": _qty(Decimal(1))}, at),
    ]


def generate(entities: int, seed: int | None = None, input_format: str = "canal", displacement: int = 40,
             duplicate_rate: float = 0.03, malformed: int = 6, zone: ZoneInfo = UTC,
             run_id: str | None = None, clear_rate: float = 0.3) -> FlowHistory:
    """A history of ``entities`` Kingdee inventory rows as ``input_format`` ('canal' or
    'debezium') lines, with the wide rows and ADS cells it must produce.  ``run_id`` (default: a
    fresh one) makes the FIDs and places the lot ids; the same seed and run id give the same
    lines.  ``clear_rate``: how many of the rows left empty Kingdee deletes."""
    rng = random.Random(seed)
    run_id = run_id or uuid.uuid4().hex[:8]
    history = FlowHistory(flow=STK_INVENTORY.name, run_id=run_id, expected={TABLE: {}})
    ids = {"lot": id_start(run_id, "FLOT", entities + 1)}
    used: set[tuple[Any, ...]] = set()
    changes: list[SourceChange] = []
    cells: Cells = {}
    for n in range(entities):
        balance = _Balance(rng, _guid(run_id, n), _opened(rng), ids, zone)
        balance.open(*_place(rng, used))
        balance.live(clear_rate)
        history.expected[TABLE][balance.fid] = balance.expected()
        balance.contribute(cells)
        changes += balance.changes
    # A cell whose rows all stand at zero holds nothing: the ADS has no row for it.
    history.expected_ads = {cell: measures for cell, measures in cells.items() if any(measures.values())}
    start = dt.datetime(2026, 11, 1)
    assemble(history, source_database(STK_INVENTORY), _dimensions(start), changes,
             cycle(_malformed(start), malformed), rng, input_format, displacement, duplicate_rate)
    return history
