"""A demo history of the ``pur_mrb`` flow (Kingdee purchase returns) and what it must produce.

The head office sends goods back to the supplier they came from, out of the warehouse they were
received into (frozen goods out of the cold store, with their lot).  A return is saved (A,
created) with its entries and their finance rows in one transaction; while still created it is
sometimes edited (an entry's quantity changed, an entry added, or one taken out and the others
renumbered, its finance row with it); it is mostly submitted (B) and audited (C, with
FAPPROVEDATE); some are voided (FCANCELSTATUS B) before they are audited, some deleted
(``demo.flows.KingdeeDocument``: header, entries and finance entries, in no particular order), a
few wait.  The supplier either replaces the goods (FMRMODE A: FREPLENISHQTY is the quantity
returned) or has them deducted from what it is owed (B: FKEAPAMTQTY).  Quantities and amounts are
Kingdee's ``decimal(23,10)``: a price without tax is the price with tax over 1 + the rate, to ten
places.  Kingdee keeps whole seconds (``datetime``).

The expected rows follow ``demo.flows``' semantics; for this flow: the status is the highest
of SAVE 10, AUDIT 20, CANCEL 50 and DELETE 90; ``biz_date`` is the day of FDATE; a deleted return
keeps only its FID and status.  A return counts in the ADS, per entry, once audited and while
neither voided nor deleted, on its document date.
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
from demo.flows.master_data import KINGDEE_DIMENSIONS, MATERIALS, STOCKS, SUPPLIERS, WEIGHED_UNIT
from demo.render import SourceChange
from flows.declared.pur_mrb import (
    AUDITED_STATUS,
    DELETED_STATUS,
    ENTRY,
    ENTRY_F,
    ENTRY_TABLE,
    HEADER_TABLE,
    MRB,
    PUR_MRB,
    SAVED_STATUS,
    VOIDED_STATUS,
)

#: FMRMODE: the supplier replaces the goods, or deducts them from what it is owed.
REPLENISH, DEDUCT = "A", "B"
INSTOCK = "ads_jd_instock"
#: The bill type of a standard purchase return (an id, as Kingdee keeps them), and the return type.
BILL_TYPE = "0023240234df807511e3089ad9a5d6da"
RETURN_TYPE = "B"
ORG = 100_001
#: Kingdee's stock status "available".
AVAILABLE = 10_000
_PLACES, _RATE_PLACES = KINGDEE_PLACES, 6
#: The most entries a return has: as many materials as a supplier supplies.
_MOST_ENTRIES = max(len(s[3]) for s in SUPPLIERS)
_SUPPLIER = {s[0]: s for s in SUPPLIERS}
#: Frozen goods come back out of the cold store and pay the reduced VAT rate (9%), the rest 13%
#: out of a central warehouse; frozen goods and hotpot bases are kept by lot.
_COLD_STORE = STOCKS[1][0]
_CENTRAL = [STOCKS[n][0] for n in (0, 2, 3, 4)]
_FROZEN = {m[0] for m in MATERIALS if m[2].startswith("Frozen")}
_BY_LOT = _FROZEN | {m[0] for m in MATERIALS if m[4] == 201}
_REASONS = ["Damaged in transit", "Past best-before on arrival", "Failed incoming inspection", "Over-delivered",
            "Wrong specification", None]
_NOTES = [None, None, "", "Photos sent to the supplier", "Carton crushed"]


def _amount(value: Decimal) -> Decimal:
    return scaled(value, _PLACES)


class _Return(KingdeeDocument):
    """Plays out one purchase return's life in Kingdee, recording its source changes and final rows."""

    HEADER, ENTRY, FINANCE = MRB, ENTRY, ENTRY_F
    SAVED, AUDITED, VOIDED, DELETED = SAVED_STATUS, AUDITED_STATUS, VOIDED_STATUS, DELETED_STATUS
    stock = 0

    def _quantity(self, material: int) -> Decimal:
        if KINGDEE_MATERIAL[material][5] == WEIGHED_UNIT:
            return _amount(Decimal(self.rng.randint(1_000, 60_000)).scaleb(-3))
        return _amount(Decimal(self.rng.randint(1, 20)))

    def _quantities(self, quantity: Decimal) -> dict[str, Decimal]:
        """An entry's quantities: returned, replaced or deducted (by the return's mode), in the base unit."""
        zero = _amount(Decimal(0))
        replenish = self.header["FMRMODE"] == REPLENISH
        return {"FRMREALQTY": quantity, "FREPLENISHQTY": quantity if replenish else zero,
                "FKEAPAMTQTY": zero if replenish else quantity, "FBASEUNITQTY": quantity}

    def _entry(self, seq: int, material: int) -> tuple[dict[str, Any], dict[str, Any]]:
        self.ids["entry"] += 1
        unit = KINGDEE_MATERIAL[material][5]
        lot = 0
        lot_text = ""
        if material in _BY_LOT:
            self.ids["lot"] += 1
            lot = self.ids["lot"]
            produced = self.now - dt.timedelta(days=self.rng.randint(5, 60))
            lot_text = f"{produced:%y%m%d}{self.rng.randint(1, 9):02d}"
        entry: dict[str, Any] = {
            "FENTRYID": self.ids["entry"], "FID": self.fid, "FSEQ": seq, "FMATERIALID": material, "FUNITID": unit,
            **self._quantities(self._quantity(material)), "FBASEUNITID": unit,
            "FSTOCKID": _COLD_STORE if material in _FROZEN else self.stock, "FSTOCKLOCID": 0,
            "FSTOCKSTATUSID": AVAILABLE, "FLOT": lot, "FLOT_TEXT": lot_text, "FNOTE": self.rng.choice(_NOTES)}
        finance: dict[str, Any] = {
            "FENTRYID": entry["FENTRYID"], "FID": self.fid, "FPRICEUNITID": unit, "FPRICE": None,
            "FTAXPRICE": _amount(self.prices[material]),
            "FTAXRATE": scaled(Decimal(9 if material in _FROZEN else 13), _RATE_PLACES),
            "FAMOUNT": None, "FTAXAMOUNT": None, "FALLAMOUNT": None}
        kingdee_priced(finance, entry["FRMREALQTY"])
        return entry, finance

    def save(self, supplier: tuple[int, str, str, tuple[int, ...]], stock: int) -> None:
        """The return saved (A): header, entries and finance entries in one transaction."""
        rng, saved = self.rng, self.now
        self.stock = stock
        self.header = {
            "FID": self.fid, "FBILLNO": f"CGTL{self.fid % 1_000_000:06d}", "FBILLTYPEID": BILL_TYPE,
            "FDATE": dt.datetime.combine(saved.date(), dt.time()), "FMRTYPE": RETURN_TYPE,
            "FMRMODE": REPLENISH if rng.random() < 0.6 else DEDUCT, "FSTOCKORGID": ORG, "FREQUIREORGID": ORG,
            "FPURCHASEORGID": ORG, "FSUPPLIERID": supplier[0], "FMRDEPTID": 100_200 + rng.randint(5, 6),
            "FSTOCKERID": 100_400 + rng.randint(1, 6), "FPURCHASERID": 100_500 + rng.randint(1, 5),
            "FDOCUMENTSTATUS": KINGDEE_CREATED, "FCANCELSTATUS": KINGDEE_NORMAL, "FCREATEDATE": saved,
            "FMODIFYDATE": saved, "FAPPROVEDATE": None, "FDESCRIPTION": rng.choice(_REASONS),
        }
        materials = rng.sample(supplier[3], rng.randint(1, len(supplier[3])))
        self.entries = [self._entry(seq, material) for seq, material in enumerate(materials, start=1)]
        self.changes.append(SourceChange(MRB, "insert", dict(self.header), saved))
        for entry, finance in self.entries:
            self.changes.append(SourceChange(ENTRY, "insert", dict(entry), saved))
            self.changes.append(SourceChange(ENTRY_F, "insert", dict(finance), saved))

    def _requantify(self) -> None:
        entry, finance = self.rng.choice(self.entries)
        quantity = entry["FRMREALQTY"]
        while quantity == entry["FRMREALQTY"]:
            quantity = self._quantity(entry["FMATERIALID"])
        self._update(ENTRY, entry, **self._quantities(quantity))
        updated = dict(finance)
        kingdee_priced(updated, quantity)
        self._update(ENTRY_F, finance, **updated)

    def _add(self) -> bool:
        left = [m for m in _SUPPLIER[self.header["FSUPPLIERID"]][3]
                if m not in {entry["FMATERIALID"] for entry, _ in self.entries}]
        if not left:
            return False
        entry, finance = self._entry(len(self.entries) + 1, self.rng.choice(left))
        self.entries.append((entry, finance))
        self.changes.append(SourceChange(ENTRY, "insert", dict(entry), self.now))
        self.changes.append(SourceChange(ENTRY_F, "insert", dict(finance), self.now))
        return True

    def edit(self) -> None:
        """While still created: an entry's quantity changed (its amounts with it), an entry
        added, or one taken out."""
        self._tick(60, 4 * 3600)
        kind = self.rng.random()
        if not ((kind < 0.2 and self._add()) or (0.2 <= kind < 0.4 and self.remove_entry())):
            self._requantify()
        self._update(MRB, self.header, FMODIFYDATE=self.now)

    def live(self) -> None:
        """Created, maybe edited (once or twice), then mostly submitted and audited; some voided
        first; a few wait."""
        rng = self.rng
        if rng.random() < 0.3:
            self.edit()
            if rng.random() < 0.3:
                self.edit()
        self.fate()

    # --- what it must produce ------------------------------------------------------------------

    def expected(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The header's wide row and its entries'."""
        return self.expected_document(
            ("FID", "FBILLNO", "FBILLTYPEID", "FDATE", "FMRTYPE", "FMRMODE", "FSTOCKORGID", "FPURCHASEORGID",
             "FSUPPLIERID", "FMRDEPTID", "FPURCHASERID", "FDOCUMENTSTATUS", "FCANCELSTATUS", "FAPPROVEDATE"),
            "FRMREALQTY", {},
            ("FENTRYID", "FID", "FSEQ", "FMATERIALID", "FUNITID", "FRMREALQTY", "FREPLENISHQTY", "FKEAPAMTQTY",
             "FBASEUNITID", "FBASEUNITQTY", "FSTOCKID", "FSTOCKLOCID", "FSTOCKSTATUSID", "FLOT", "FLOT_TEXT"),
            ("FSTOCKORGID", "FSUPPLIERID"))

    def contribute(self, cells: Cells) -> None:
        """Add the return's entries to the ADS cells, from its source rows: audited and not
        voided, on its document date."""
        if not self.contributes():
            return
        h = self.header
        day = business_day(h["FDATE"], self.zone)
        for entry, finance in self.entries:
            add_cell(cells, INSTOCK, (day, h["FSTOCKORGID"], h["FSUPPLIERID"], entry["FMATERIALID"], entry["FSTOCKID"]),
                     return_qty=entry["FRMREALQTY"], replenish_qty=entry["FREPLENISHQTY"],
                     deduct_qty=entry["FKEAPAMTQTY"], return_amount=finance["FAMOUNT"],
                     return_tax_amount=finance["FTAXAMOUNT"], return_all_amount=finance["FALLAMOUNT"])


def _prices(rng: random.Random) -> dict[int, Decimal]:
    """A run's price with tax of each material."""
    return {m[0]: Decimal(rng.randint(1_400, 7_200) if m[5] == WEIGHED_UNIT else rng.randint(3_000, 48_000))
            .scaleb(-2) for m in MATERIALS}


def saved_document(rng: random.Random, fid: int, ids: dict[str, int], prices: dict[int, Decimal] | None = None,
                   zone: ZoneInfo = UTC) -> KingdeeDocument:
    """Return ``fid`` saved, its entry and lot ids taken from ``ids`` ("entry", "lot"): what a test
    plays one return's life from (``prices``: drawn from ``rng`` when not given)."""
    document = _Return(rng, fid, _saved(rng), ids, _prices(rng) if prices is None else prices, zone)
    document.save(rng.choice(SUPPLIERS), rng.choice(_CENTRAL))
    return document


def _saved(rng: random.Random) -> dt.datetime:
    """When a return is saved: office hours over a week from 1 November 2026, whole seconds."""
    day = dt.datetime(2026, 11, 1) + dt.timedelta(days=rng.randrange(7))
    return day + dt.timedelta(seconds=rng.randint(8 * 3600 + 30 * 60, 18 * 3600))


def _dimensions(at: dt.datetime) -> list[SourceChange]:
    tables = [dimension.table for dimension in PUR_MRB.dimensions]
    return [SourceChange(table, "insert", dict(zip(KINGDEE_DIMENSIONS[table][0], row, strict=True)), at)
            for table in tables for row in KINGDEE_DIMENSIONS[table][1]]


def _malformed(at: dt.datetime) -> list[SourceChange | str]:
    """Lines the engine must quarantine: not JSON, a price that is no number, an entry without its id."""
    return [
        "{not json",
        SourceChange(ENTRY_F, "insert", {"FENTRYID": 11, "FID": 7, "FTAXPRICE": "35,00", "FTAXRATE": "13"}, at),
        SourceChange(ENTRY, "insert", {"FID": 7, "FSEQ": 1, "FMATERIALID": MATERIALS[0][0],
                                       "FRMREALQTY": _amount(Decimal(1))}, at),
    ]


def generate(entities: int, seed: int | None = None, input_format: str = "canal", displacement: int = 40,
             duplicate_rate: float = 0.03, malformed: int = 6, zone: ZoneInfo = UTC,
             run_id: str | None = None) -> FlowHistory:
    """A history of ``entities`` Kingdee purchase returns as ``input_format`` ('canal' or
    'debezium') lines, with the wide rows and ADS cells it must produce.  ``run_id`` (default: a
    fresh one) places the FIDs, FENTRYIDs and lot ids; the same seed and run id give the same lines."""
    rng = random.Random(seed)
    run_id = run_id or uuid.uuid4().hex[:8]
    history = FlowHistory(flow=PUR_MRB.name, run_id=run_id, expected={HEADER_TABLE: {}, ENTRY_TABLE: {}})
    first_fid = id_start(run_id, MRB, entities + 1)
    ids = {"entry": id_start(run_id, ENTRY, entities * _MOST_ENTRIES + 1),
           "lot": id_start(run_id, "FLOT", entities * _MOST_ENTRIES + 1)}
    prices = _prices(rng)
    changes: list[SourceChange] = []
    for n in range(entities):
        document = saved_document(rng, first_fid + n, ids, prices, zone)
        document.live()
        header, rows = document.expected()
        history.expected[HEADER_TABLE][document.fid] = header
        history.expected[ENTRY_TABLE].update((row["FENTRYID"], row) for row in rows)
        document.contribute(history.expected_ads)
        changes += document.changes
    start = dt.datetime(2026, 11, 1)
    assemble(history, source_database(PUR_MRB), _dimensions(start), changes, cycle(_malformed(start), malformed),
             rng, input_format, displacement, duplicate_rate)
    return history
