"""Demo histories of the declared flows beside the online orders (``pos``, the Kingdee flows).

Each flow's module plays out realistic lives of its entities, renders the source changes as
Canal or Debezium lines (``demo.render``) that arrive out of order, some twice, with a few
malformed ones, and computes what the engine must produce from its own model of each entity:
the wide rows (every declared column but the write's bookkeeping) and the ADS cells.  Nothing
here calls engine code, so a comparison with what the engine wrote tests the engine.

The semantics the expected rows follow, which the engine is to implement:

- every operation a row raises runs, in state-machine order; the wide row is what the final
  live source rows give, its status the highest status of the operations that ran;
- a sum over no rows is 0 (at the column's scale); a business day is the day, in the business
  zone, of a time stored as naive UTC;
- an entity whose header (a source declared ``deletes_entity``) was deleted keeps its root row
  with its key and status, every column copied from its gone rows NULL.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from demo import render
from demo.flows.master_data import MATERIALS, STOCKS
from demo.render import SourceChange, SourceDatabase, SourceTable

if TYPE_CHECKING:
    from flows.declaration import FlowDeclaration

UTC = ZoneInfo("UTC")
#: Where a run's ids start at the lowest: below are the malformed lines' ids.
_LOWEST_ID = 10**6

#: (ADS table, key values) -> measure -> value.
Cells = dict[tuple[str, tuple[Any, ...]], dict[str, Any]]


@dataclass
class FlowHistory:
    """A generated history of one flow and what it must produce."""

    flow: str
    run_id: str
    #: (input format, JSON line), in arrival order; the dimension rows come first.
    lines: list[tuple[str, str]] = field(default_factory=list)
    #: The source changes the lines render, in commit order (the dimension rows first).
    changes: list[SourceChange] = field(default_factory=list)
    #: Wide table -> key value -> the row: every declared column but the engine's bookkeeping
    #: (``flows.declaration.Bookkeeping``: last_operation, version, updated_at, source_digest).
    expected: dict[str, dict[Any, dict[str, Any]]] = field(default_factory=dict)
    #: (ADS table, key values) -> measure -> value, over the entities that contribute.
    expected_ads: Cells = field(default_factory=dict)
    malformed: int = 0
    duplicated: int = 0


def source_database(declaration: FlowDeclaration) -> SourceDatabase:
    """The flow's first source database as the readers see it: its source tables and its
    dimensions' tables, each with its declared key and column types."""
    tables = {source.name: SourceTable.declared(source.key, source.columns) for source in declaration.sources}
    tables.update((dimension.table, SourceTable.declared((dimension.key,), dimension.columns))
                  for dimension in declaration.dimensions)
    return SourceDatabase(declaration.databases[0], tables)


def id_start(run_id: str, name: str, span: int, limit: int = 2**31 - 1) -> int:
    """The first of ``span`` ids a run takes for ``name``: placed by the run id within
    [10**6, limit), so runs sharing a warehouse almost never meet (``int`` keys have room for
    little more)."""
    digest = int.from_bytes(hashlib.sha256(f"{run_id}/{name}".encode()).digest()[:8], "big")
    room = limit - span - _LOWEST_ID
    if room <= 0:
        raise ValueError(f"{span} ids of {name!r} do not fit below {limit}")
    return _LOWEST_ID + digest % room


def scaled(value: Decimal, places: int) -> Decimal:
    """``value`` at ``places`` decimal places (half up, as MySQL rounds on insert)."""
    return value.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


#: Kingdee keeps amounts and prices to ten places.
KINGDEE_PLACES = 10
#: Kingdee's FDOCUMENTSTATUS of a created, submitted (under review) and audited document, and
#: FCANCELSTATUS of a normal and a voided one.
KINGDEE_CREATED, KINGDEE_UNDER_REVIEW, KINGDEE_AUDITED, KINGDEE_REAUDITED = "A", "B", "C", "D"
KINGDEE_NORMAL, KINGDEE_VOIDED = "A", "B"
#: A finance entry's amounts, which the header sums.
KINGDEE_AMOUNTS = ("FAMOUNT", "FTAXAMOUNT", "FALLAMOUNT")
#: The materials and warehouses by id, as the entries' look-ups find them.
KINGDEE_MATERIAL = {m[0]: m for m in MATERIALS}
KINGDEE_STOCK = {s[0]: s for s in STOCKS}


def kingdee_priced(finance: dict[str, Any], quantity: Decimal) -> None:
    """A Kingdee finance entry's amounts from its price with tax and its tax rate, each to ten
    places, as Kingdee computes them."""
    rate = 1 + finance["FTAXRATE"] / 100
    finance["FPRICE"] = scaled(finance["FTAXPRICE"] / rate, KINGDEE_PLACES)
    finance["FALLAMOUNT"] = scaled(finance["FTAXPRICE"] * quantity, KINGDEE_PLACES)
    finance["FAMOUNT"] = scaled(finance["FALLAMOUNT"] / rate, KINGDEE_PLACES)
    finance["FTAXAMOUNT"] = finance["FALLAMOUNT"] - finance["FAMOUNT"]


class Life:
    """One entity's life as a generator plays it out: its random source, its clock, the run's id
    counters, its time zone, and the source changes it records."""

    def __init__(self, rng: random.Random, now: dt.datetime, ids: dict[str, int], zone: ZoneInfo):
        self.rng = rng
        self.now = now
        self.ids = ids
        self.zone = zone
        self.changes: list[SourceChange] = []

    def _tick(self, low: int, high: int) -> dt.datetime:
        """Move the clock on by ``low`` to ``high`` whole seconds."""
        self.now += dt.timedelta(seconds=self.rng.randint(low, high))
        return self.now

    def _update(self, table: str, row: dict[str, Any], **values: Any) -> None:
        """Record an update of ``row`` (changed in place) at the current time."""
        before = dict(row)
        row.update(values)
        self.changes.append(SourceChange(table, "update", dict(row), self.now, before))


def business_day(moment: dt.datetime | None, zone: ZoneInfo) -> dt.date | None:
    """The day, in ``zone``, of a time stored as naive UTC."""
    return None if moment is None else moment.replace(tzinfo=UTC).astimezone(zone).date()


def add_cell(cells: Cells, table: str, key: tuple[Any, ...], **measures: Any) -> None:
    """Add ``measures`` to the ADS cell (table, key)."""
    row = cells.setdefault((table, key), {})
    for name, value in measures.items():
        row[name] = row[name] + value if name in row else value


def assemble(history: FlowHistory, source: SourceDatabase, dimensions: list[SourceChange],
             changes: Iterable[SourceChange], malformed: list[SourceChange | str], rng: random.Random,
             input_format: str, displacement: int, duplicate_rate: float) -> None:
    """Fill ``history``'s lines and changes: the dimension rows in order first, then the
    entities' changes in commit order, displaced and duplicated (``demo.render.disorder``),
    with ``malformed`` (a change, or raw text) put in at random places."""
    ordered = sorted(changes, key=lambda change: change.at)
    history.changes = dimensions + ordered
    history.lines = [(input_format, render.render(input_format, change, n, source))
                     for n, change in enumerate(dimensions)]
    first = max(1000, len(dimensions))
    committed = [(input_format, render.render(input_format, change, sequence, source))
                 for sequence, change in enumerate(ordered, start=first)]
    arrivals, history.duplicated = render.disorder(committed, rng, displacement, duplicate_rate)
    for n, bad in enumerate(malformed):
        text = bad if isinstance(bad, str) else render.render(input_format, bad, first + len(ordered) + n, source)
        arrivals.insert(rng.randrange(len(arrivals) + 1), (input_format, text))
    history.malformed = len(malformed)
    history.lines += arrivals


def cycle(kinds: list[Any], count: int) -> list[Any]:
    """``count`` of ``kinds``, round and round (the malformed lines of a history)."""
    return [kinds[n % len(kinds)] for n in range(count)]


class KingdeeDocument(Life):
    """One Kingdee document's life as the document flows (``sal_order``, ``pur_mrb``) play it
    out: a header, its entries and their finance entries (``entries``, in FSEQ order), saved
    created (A); its fate (``fate``) and what it must produce (``expected_document``,
    ``contributes``).  A flow's document names its tables and the statuses its operations give.

    Kingdee deletes only a document that is not audited: its header, entries and finance entries
    in one transaction, one binlog delete per row in no particular order.  A deleted document's
    wide row is its FID and the deleted status, every other column NULL (no row is left to copy
    or look up by), its counts and sums over no entries; it has no entry rows and counts nowhere."""

    #: The header, entry and finance entry tables.
    HEADER: str
    ENTRY: str
    FINANCE: str
    #: The status the wide row reaches: saved, audited, voided, deleted.
    SAVED: int
    AUDITED: int
    VOIDED: int
    DELETED: int

    def __init__(self, rng: random.Random, fid: int, saved: dt.datetime, ids: dict[str, int],
                 prices: dict[int, Decimal], zone: ZoneInfo):
        super().__init__(rng, saved, ids, zone)
        self.fid = fid
        self.prices = prices
        self.header: dict[str, Any] = {}
        #: Each live entry's row and its finance row, in FSEQ order.
        self.entries: list[tuple[dict[str, Any], dict[str, Any]]] = []
        self.statuses = [self.SAVED]
        self.deleted = False

    def remove_entry(self) -> bool:
        """An entry taken out: it and its finance row deleted, the entries after it renumbered."""
        if len(self.entries) < 2:
            return False
        gone = self.rng.randrange(len(self.entries))
        entry, finance = self.entries.pop(gone)
        self.changes.append(SourceChange(self.ENTRY, "delete", dict(entry), self.now))
        self.changes.append(SourceChange(self.FINANCE, "delete", dict(finance), self.now))
        for seq, (later, _) in enumerate(self.entries[gone:], start=gone + 1):
            self._update(self.ENTRY, later, FSEQ=seq)
        return True

    def submit(self) -> None:
        self._tick(60, 2 * 3600)
        self._update(self.HEADER, self.header, FDOCUMENTSTATUS=KINGDEE_UNDER_REVIEW, FMODIFYDATE=self.now)

    def audit(self) -> None:
        self._tick(300, 8 * 3600)
        self._update(self.HEADER, self.header, FDOCUMENTSTATUS=KINGDEE_AUDITED, FAPPROVEDATE=self.now,
                     FMODIFYDATE=self.now)
        self.statuses.append(self.AUDITED)

    def void(self) -> None:
        self._tick(300, 24 * 3600)
        self._update(self.HEADER, self.header, FCANCELSTATUS=KINGDEE_VOIDED, FMODIFYDATE=self.now)
        self.statuses.append(self.VOIDED)

    def reaudit(self) -> None:
        """An audited document taken back (反审核, re-audit): D, editable again, and no longer
        counted; its status stays the highest it reached until it is voided or deleted."""
        self._tick(300, 24 * 3600)
        self._update(self.HEADER, self.header, FDOCUMENTSTATUS=KINGDEE_REAUDITED, FMODIFYDATE=self.now)

    def withdraw(self) -> None:
        """A submitted document taken back from review (撤销): created again."""
        self._tick(300, 4 * 3600)
        self._update(self.HEADER, self.header, FDOCUMENTSTATUS=KINGDEE_CREATED, FMODIFYDATE=self.now)

    def delete(self) -> None:
        """The document deleted: its header, entries and finance entries in one transaction, in
        no particular order."""
        self._tick(300, 24 * 3600)
        gone = [SourceChange(self.HEADER, "delete", dict(self.header), self.now)]
        gone += [SourceChange(table, "delete", dict(row), self.now)
                 for entry, finance in self.entries for table, row in ((self.ENTRY, entry), (self.FINANCE, finance))]
        self.rng.shuffle(gone)
        self.changes += gone
        self.statuses.append(self.DELETED)
        self.deleted = True

    def live(self) -> None:
        """Its life once saved: the flow's edits while created, then its ``fate``."""
        raise NotImplementedError

    def fate(self) -> None:
        """After its edits: mostly submitted and audited; some voided first (half of them
        submitted); some deleted (half of them submitted and withdrawn first); a few wait
        submitted, the rest created."""
        rng = self.rng
        fate = rng.random()
        if fate < 0.1:
            if rng.random() < 0.5:
                self.submit()
            self.void()
        elif fate < 0.78:
            self.submit()
            self.audit()
        elif fate < 0.86:
            self.submit()
        elif fate < 0.95:
            if rng.random() < 0.5:
                self.submit()
                self.withdraw()
            self.delete()

    # --- what it must produce ------------------------------------------------------------------

    def expected(self) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The header's wide row and its entries' (``expected_document`` with the flow's columns)."""
        raise NotImplementedError

    def contribute(self, cells: Cells) -> None:
        """Add the document's entries to the ADS cells while it ``contributes``."""
        raise NotImplementedError

    def expected_document(self, copied: tuple[str, ...], quantity: str, looked: dict[str, Any],
                          entry_copied: tuple[str, ...], inherited: tuple[str, ...]
                          ) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """The header's wide row and its entries'.  The header: its ``copied`` columns and what it
        ``looked`` up, its entry count and the sums of its entries' ``quantity`` and amounts, the
        highest status it reached and the business day of FDATE.  Each entry: its
        ``entry_copied`` columns, its finance entry's prices and amounts, the header's
        ``inherited`` columns and business day, its material and stock, the header's status."""
        h = self.header
        zero = scaled(Decimal(0), KINGDEE_PLACES)
        if self.deleted:
            # Nothing is left of it but its FID and status.
            h, looked = dict.fromkeys(h) | {"FID": self.fid}, dict.fromkeys(looked)
        entries = [] if self.deleted else self.entries
        header = {name: h[name] for name in copied} | looked
        header.update(
            entry_count=len(entries),
            **{quantity: sum((entry[quantity] for entry, _ in entries), zero)},
            **{name: sum((finance[name] for _, finance in entries), zero) for name in KINGDEE_AMOUNTS},
            status=max(self.statuses), biz_date=business_day(h["FDATE"], self.zone))
        rows = []
        for entry, finance in entries:
            material, stock = KINGDEE_MATERIAL[entry["FMATERIALID"]], KINGDEE_STOCK[entry["FSTOCKID"]]
            row = {name: entry[name] for name in entry_copied}
            row.update({name: finance[name] for name in ("FPRICE", "FTAXPRICE", "FTAXRATE", *KINGDEE_AMOUNTS)})
            row.update({name: header[name] for name in (*inherited, "biz_date", "status")})
            row.update(material_number=material[1], material_name=material[2], stock_number=stock[1],
                       stock_name=stock[2])
            rows.append(row)
        return header, rows

    def contributes(self) -> bool:
        """Whether the document counts in the ADS: audited, neither voided nor deleted."""
        return (self.header["FDOCUMENTSTATUS"] == KINGDEE_AUDITED and self.header["FCANCELSTATUS"] != KINGDEE_VOIDED
                and not self.deleted)
