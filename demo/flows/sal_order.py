"""A demo history of the ``sal_order`` flow (Kingdee sales orders) and what it must produce.

The head office sells to its stores, which are Kingdee customers.  An order is saved (A,
created) with its entries and their finance rows in one transaction, sometimes edited while
still created (an entry's quantity changed, or an entry taken out and the others renumbered),
is mostly submitted (B) and audited (C, with FAPPROVEDATE); some are voided (FCANCELSTATUS B)
before they are audited, some deleted (``demo.flows.KingdeeDocument``: header, entries and
finance entries, in no particular order), a few wait.  Quantities and amounts are Kingdee's
``decimal(23,10)``: a price without tax is the price with tax over 1 + the rate, to ten places.
Kingdee keeps whole seconds (``datetime``).

The expected rows follow ``demo.flows``' semantics; for this flow: the status is the highest
of SAVE 10, AUDIT 20, CANCEL 50 and DELETE 90; ``biz_date`` is the day of FDATE; a deleted order
keeps only its FID and status.  An order counts in the ADS, per entry, once audited and while
neither voided nor deleted.
"""

from __future__ import annotations

import datetime as dt
import random
import uuid
from decimal import Decimal
from typing import Any
from zoneinfo import ZoneInfo

from demo.flows import (
    KINGDEE_CREATED,
    KINGDEE_MATERIAL,
    KINGDEE_NORMAL,
    KINGDEE_PLACES,
    UTC,
    Cells,
    FlowHistory,
    KingdeeDocument,
    add_cell,
    assemble,
    business_day,
    cycle,
    id_start,
    kingdee_priced,
    scaled,
    source_database,
)
from demo.flows.master_data import CUSTOMERS, MATERIALS, STOCKS, STORES, WEIGHED_UNIT
from demo.render import SourceChange
from flows.declared.sal_order import (
    AUDITED_STATUS,
    DELETED_STATUS,
    ENTRY,
    ENTRY_F,
    ENTRY_TABLE,
    HEADER_TABLE,
    ORDER,
    SAL_ORDER,
    SAVED_STATUS,
    VOIDED_STATUS,
)

SALES = "ads_jd_order_sales"
#: Kingdee's standard sales order bill type (XSDD01_SYS).
BILL_TYPE = "eacb50844fc84a10b03d7b841f3a6278"
_PLACES, _RATE_PLACES = KINGDEE_PLACES, 6
_MOST_ENTRIES = 6
_CUSTOMER = {c[0]: c for c in CUSTOMERS}
#: Frozen goods leave from the cold store, the rest from the central warehouse of the store's
#: region; frozen farm produce pays the reduced VAT rate (9%), the rest 13%.
_COLD_STORE = STOCKS[1][0]
_FROZEN = {m[0] for m in MATERIALS if m[2].startswith("Frozen")}
_REGIONAL_STOCK = {"East": STOCKS[0][0], "North": STOCKS[2][0], "South": STOCKS[3][0], "West": STOCKS[4][0],
                   "Central": STOCKS[0][0]}
_REGION = {store[0]: store[3] for store in STORES}
_NOTES = [None, None, "", "Deliver before 10:00", "Call the store manager on arrival", "Promotion stock"]


def _amount(value: Decimal) -> Decimal:
    return scaled(value, _PLACES)


class _SalesOrder(KingdeeDocument):
    """Plays out one sales order's life in Kingdee, recording its source changes and final rows."""

    HEADER, ENTRY, FINANCE = ORDER, ENTRY, ENTRY_F
    SAVED, AUDITED, VOIDED, DELETED = SAVED_STATUS, AUDITED_STATUS, VOIDED_STATUS, DELETED_STATUS

    def _quantity(self, material: int) -> Decimal:
        if KINGDEE_MATERIAL[material][5] == WEIGHED_UNIT:
            return _amount(Decimal(self.rng.randint(5_000, 80_000)).scaleb(-3))
        return _amount(Decimal(self.rng.randint(1, 40)))

    def save(self, customer: tuple[int, str, str, str, str], stock: int) -> None:
        """The order saved (A): header, entries and finance entries in one transaction."""
        rng, saved = self.rng, self.now
        document_day = dt.datetime.combine(saved.date(), dt.time())
        self.header = {
            "FID": self.fid, "FBILLNO": f"XSDD{self.fid % 1_000_000:06d}", "FBILLTYPEID": BILL_TYPE,
            "FDATE": document_day, "FCUSTID": customer[0], "FSALEORGID": 100_001,
            "FSALEDEPTID": 100_200 + rng.randint(1, 4), "FSALERID": 100_300 + rng.randint(1, 12),
            "FDOCUMENTSTATUS": KINGDEE_CREATED, "FCANCELSTATUS": KINGDEE_NORMAL, "FCLOSESTATUS": "A",
            "FCREATEDATE": saved, "FMODIFYDATE": saved, "FAPPROVEDATE": None, "FNOTE": rng.choice(_NOTES),
        }
        materials = rng.sample(sorted(KINGDEE_MATERIAL), rng.randint(1, _MOST_ENTRIES))
        for seq, material in enumerate(materials, start=1):
            self.ids["entry"] += 1
            entry: dict[str, Any] = {
                "FENTRYID": self.ids["entry"], "FID": self.fid, "FSEQ": seq, "FMATERIALID": material,
                "FUNITID": KINGDEE_MATERIAL[material][5], "FQTY": self._quantity(material),
                "FSTOCKID": _COLD_STORE if material in _FROZEN else stock,
                "FDELIVERYDATE": document_day + dt.timedelta(days=rng.randint(1, 3)), "FNOTE": None}
            finance: dict[str, Any] = {"FENTRYID": entry["FENTRYID"], "FID": self.fid, "FPRICE": None,
                       "FTAXPRICE": _amount(self.prices[material]),
                       "FTAXRATE": scaled(Decimal(9 if material in _FROZEN else 13), _RATE_PLACES), "FAMOUNT": None,
                       "FTAXAMOUNT": None, "FALLAMOUNT": None, "FDISCOUNT": _amount(Decimal(0))}
            kingdee_priced(finance, entry["FQTY"])
            self.entries.append((entry, finance))
        self.changes.append(SourceChange(ORDER, "insert", dict(self.header), saved))
        for entry, finance in self.entries:
            self.changes.append(SourceChange(ENTRY, "insert", dict(entry), saved))
            self.changes.append(SourceChange(ENTRY_F, "insert", dict(finance), saved))

    def _requantify(self) -> None:
        entry, finance = self.rng.choice(self.entries)
        quantity = entry["FQTY"]
        while quantity == entry["FQTY"]:
            quantity = self._quantity(entry["FMATERIALID"])
        self._update(ENTRY, entry, FQTY=quantity)
        updated = dict(finance)
        kingdee_priced(updated, entry["FQTY"])
        self._update(ENTRY_F, finance, **updated)

    def edit(self) -> None:
        """While still created: one entry's quantity changed (its amounts with it), or one entry
        taken out (the store no longer wants it)."""
        self._tick(60, 4 * 3600)
        if not (self.rng.random() < 0.3 and self.remove_entry()):
            self._requantify()
        self._update(ORDER, self.header, FMODIFYDATE=self.now)

    def live(self) -> None:
        """Created, maybe edited, then mostly submitted and audited; some voided first; a few wait."""
        rng = self.rng
        if rng.random() < 0.2:
            self.edit()
        self.fate()

    # --- what it must produce ------------------------------------------------------------------

    def expected(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The header's wide row and its entries'."""
        customer = _CUSTOMER[self.header["FCUSTID"]]
        return self.expected_document(
            ("FID", "FBILLNO", "FBILLTYPEID", "FDATE", "FCUSTID", "FSALEORGID", "FSALERID", "FDOCUMENTSTATUS",
             "FCANCELSTATUS", "FAPPROVEDATE"), "FQTY", {"store_id": customer[3], "store_name": customer[4]},
            ("FENTRYID", "FID", "FSEQ", "FMATERIALID", "FUNITID", "FQTY", "FSTOCKID"), ("FCUSTID", "store_id"))

    def contribute(self, cells: Cells) -> None:
        """Add the order's entries to the ADS cells, from its source rows: audited and not
        voided, on its document date."""
        if not self.contributes():
            return
        day = business_day(self.header["FDATE"], self.zone)
        store = _CUSTOMER[self.header["FCUSTID"]][3]
        for entry, finance in self.entries:
            add_cell(cells, SALES, (day, store, entry["FMATERIALID"], entry["FSTOCKID"]), qty=entry["FQTY"],
                     amount=finance["FAMOUNT"], tax_amount=finance["FTAXAMOUNT"], all_amount=finance["FALLAMOUNT"])


def _prices(rng: random.Random) -> dict[int, Decimal]:
    """A run's price with tax of each material."""
    return {m[0]: Decimal(rng.randint(1_800, 9_800) if m[5] == WEIGHED_UNIT else rng.randint(4_500, 68_000))
            .scaleb(-2) for m in MATERIALS}


def saved_document(rng: random.Random, fid: int, ids: dict[str, int], prices: dict[int, Decimal] | None = None,
                   zone: ZoneInfo = UTC) -> KingdeeDocument:
    """Order ``fid`` saved, its entry ids taken from ``ids`` ("entry"): what a test plays one
    order's life from (``prices``: drawn from ``rng`` when not given)."""
    order = _SalesOrder(rng, fid, _saved(rng), ids, _prices(rng) if prices is None else prices, zone)
    customer = rng.choice(CUSTOMERS)
    order.save(customer, _REGIONAL_STOCK[_REGION[customer[3]]])
    return order


def _saved(rng: random.Random) -> dt.datetime:
    """When an order is saved: office hours over a week from 1 November 2026, whole seconds."""
    day = dt.datetime(2026, 11, 1) + dt.timedelta(days=rng.randrange(7))
    return day + dt.timedelta(seconds=rng.randint(8 * 3600 + 30 * 60, 18 * 3600))


def _dimensions(at: dt.datetime) -> list[SourceChange]:
    tables: list[tuple[str, tuple[str, ...], list[tuple[Any, ...]]]] = [
        ("dim_jd_erp_material", ("FMATERIALID", "FNUMBER", "FNAME", "FSPECIFICATION", "FMATERIALGROUP",
                                 "FBASEUNITID"), list(MATERIALS)),
        ("dim_jd_erp_stock", ("FSTOCKID", "FNUMBER", "FNAME", "FSTOCKPROPERTY", "FUSEORGID"), list(STOCKS)),
        ("dim_store_shop_fcustid", ("FCUSTID", "FNUMBER", "FNAME", "store_id", "store_name"), list(CUSTOMERS)),
    ]
    return [SourceChange(table, "insert", dict(zip(names, row, strict=True)), at)
            for table, names, rows in tables for row in rows]


def _malformed(at: dt.datetime) -> list[SourceChange | str]:
    """Lines the engine must quarantine: not JSON, an amount that is no number, an entry without its id."""
    return [
        "{not json",
        SourceChange(ENTRY_F, "insert", {"FENTRYID": 11, "FID": 7, "FTAXPRICE": "35,00", "FTAXRATE": "13"}, at),
        SourceChange(ENTRY, "insert", {"FID": 7, "FSEQ": 1, "FMATERIALID": MATERIALS[0][0],
                                       "FQTY": _amount(Decimal(1))}, at),
    ]


def generate(entities: int, seed: int | None = None, input_format: str = "canal", displacement: int = 40,
             duplicate_rate: float = 0.03, malformed: int = 6, zone: ZoneInfo = UTC,
             run_id: str | None = None) -> FlowHistory:
    """A history of ``entities`` Kingdee sales orders as ``input_format`` ('canal' or 'debezium')
    lines, with the wide rows and ADS cells it must produce.  ``run_id`` (default: a fresh one)
    places the FIDs and FENTRYIDs; the same seed and run id give the same lines."""
    rng = random.Random(seed)
    run_id = run_id or uuid.uuid4().hex[:8]
    history = FlowHistory(flow=SAL_ORDER.name, run_id=run_id, expected={HEADER_TABLE: {}, ENTRY_TABLE: {}})
    first_fid = id_start(run_id, ORDER, entities + 1)
    ids = {"entry": id_start(run_id, ENTRY, entities * _MOST_ENTRIES + 1)}
    prices = _prices(rng)
    changes: list[SourceChange] = []
    for n in range(entities):
        order = saved_document(rng, first_fid + n, ids, prices, zone)
        order.live()
        header, rows = order.expected()
        history.expected[HEADER_TABLE][order.fid] = header
        history.expected[ENTRY_TABLE].update((row["FENTRYID"], row) for row in rows)
        order.contribute(history.expected_ads)
        changes += order.changes
    start = dt.datetime(2026, 11, 1)
    assemble(history, source_database(SAL_ORDER), _dimensions(start), changes, cycle(_malformed(start), malformed),
             rng, input_format, displacement, duplicate_rate)
    return history
