"""Kingdee document deletes (``pur_mrb``, ``sal_order``) through the real chain functions on real
MariaDB shards, a PostgreSQL warehouse and Redis.

Kingdee deletes a document's header, entries and finance entries in one transaction, one binlog
delete per row in any order, and the CDC may deliver only the deletes.  Whatever order they
arrive in, twice or before the inserts, the document's tasks all end DONE and its wide rows,
snapshot, ADS and ledger are exactly what the demo's model of it says (``demo.flows``: its FID and
the deleted status, nothing else).  An entry deleted from a kept document leaves its child row
and its ADS cell.  A task that waits forever shows as not DONE after a bounded drain."""

from __future__ import annotations

import datetime as dt
import json
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from sqlalchemy import select, update

from chain.task_state import order_tasks
from chain.wide_rows import read_wide_rows, to_json
from demo.flow_run import flow_problems
from demo.flows import Cells, FlowHistory, KingdeeDocument, pur_mrb, sal_order, source_database
from demo.render import SourceChange, render
from flows.declaration import Bookkeeping
from flows.declared import BY_NAME
from flows.registry import combine, routing
from intake.receiver import utcnow
from models.sharded import task_table
from models.warehouse import LEDGERS
from models.wide import SCHEMAS
from tests.integration.helpers import ingest, run_chains
from warehouse.aggregates import read_aggregates
from warehouse.contributions import Contribution

pytestmark = pytest.mark.integration

#: Rounds of the bounded drain: each makes the documents' waiting tasks due and runs the chains.
#: A document whose deletes are handled is DONE after one; one that waits forever never is.
DRAIN_ROUNDS = 4
#: Each flow's demo module: its saved documents, with the ids a document takes.
DEMOS: dict[str, tuple[Callable[..., KingdeeDocument], dict[str, int]]] = {
    "pur_mrb": (pur_mrb.saved_document, {"entry": 5_000_000, "lot": 6_000_000}),
    "sal_order": (sal_order.saved_document, {"entry": 5_000_000})}


@dataclass
class Documents:
    """One flow's documents in one fresh storage: their changes rendered in commit order as they
    are made, ingested in whatever order a test delivers them."""

    flow: str
    storage: Any
    client: Any
    input_format: str
    rng: random.Random = field(default_factory=lambda: random.Random(7))
    made: list[KingdeeDocument] = field(default_factory=list)
    sequence: int = 1000
    #: Each document's changes already rendered.
    rendered: dict[int, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.declaration = BY_NAME[self.flow]
        self.routes = combine((routing(self.declaration),))
        self.source = source_database(self.declaration)
        self.ids = dict(DEMOS[self.flow][1])
        self.before = self.ads()

    def new(self, entries: int = 1) -> KingdeeDocument:
        """A saved document with at least ``entries`` entries."""
        make = DEMOS[self.flow][0]
        while True:
            document = make(self.rng, 3_000_000 + len(self.made) + 100 * self.rng.randrange(1000), self.ids)
            if len(document.entries) >= entries and document.fid not in {d.fid for d in self.made}:
                self.made.append(document)
                return document

    def changes(self, document: KingdeeDocument) -> list[tuple[SourceChange, str]]:
        """The document's changes made since it was last asked, each with its line, rendered in
        commit order."""
        fresh = document.changes[self.rendered.get(document.fid, 0):]
        self.rendered[document.fid] = len(document.changes)
        rendered = []
        for change in fresh:
            self.sequence += 1
            rendered.append((change, render(self.input_format, change, self.sequence, self.source)))
        return rendered

    def lines(self, document: KingdeeDocument) -> list[str]:
        return [line for _, line in self.changes(document)]

    def deliver(self, *batches: list[str]) -> None:
        """Ingest each batch and run the chains it touches."""
        for batch in batches:
            touched = ingest(self.storage, self.client, self.routes, self.input_format, batch).touched
            run_chains(self.storage, self.client, touched)

    def entity(self, document: KingdeeDocument) -> str:
        return self.declaration.entity_prefix + str(document.fid)

    def drain(self, among: list[KingdeeDocument] | None = None) -> dict[str, list[str]]:
        """The bounded drain: make every waiting task of the documents (``among`` them) due and
        run the chains, DRAIN_ROUNDS times or until all are DONE; the tasks that are not, per entity."""
        for _ in range(DRAIN_ROUNDS):
            waiting = self.not_done(among)
            if not waiting:
                return {}
            for entity in waiting:
                shard = self.storage.shard_of(entity)
                with self.storage.order_transaction(entity) as connection:
                    table = task_table(shard)
                    connection.execute(update(table).where((table.c.order_id == entity) & (table.c.status == "WAITING"))
                                       .values(next_run_at=utcnow() - dt.timedelta(seconds=1)))
            run_chains(self.storage, self.client, [])
        return self.not_done(among)

    def not_done(self, among: list[KingdeeDocument] | None = None) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for document in self.made if among is None else among:
            entity = self.entity(document)
            with self.storage.read_engine_for_order(entity).connect() as connection:
                tasks = order_tasks(connection, self.storage.shard_of(entity), entity)
            left = [f"{t.operation_type} {t.status} ({t.last_error})" for t in tasks if t.status != "DONE"]
            if left or not tasks:
                found[entity] = left or ["no task"]
        return found

    def ads(self) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
        names = {aggregate.name for aggregate in self.declaration.aggregates}
        with self.storage.dws_engine.connect() as connection:
            return {cell: measures for cell, measures in read_aggregates(connection).items() if cell[0] in names}

    def history(self) -> FlowHistory:
        """What the documents must have produced, from the demo's model of each."""
        root, child = self.declaration.wide[0].name, self.declaration.wide[1].name
        history = FlowHistory(flow=self.flow, run_id="deletes", expected={root: {}, child: {}})
        for document in self.made:
            header, rows = document.expected()
            history.expected[root][document.fid] = header
            history.expected[child].update((row["FENTRYID"], row) for row in rows)
            document.contribute(history.expected_ads)
        return history

    def problems(self) -> list[str]:
        """Tasks not DONE after the bounded drain, then every difference from the model: wide
        rows and ADS cells, each document's ledger entry and its last operation's snapshot."""
        waiting = self.drain()
        if waiting:
            return [f"{entity}: never done: {', '.join(tasks)}" for entity, tasks in waiting.items()]
        found = flow_problems(self.history(), self.before, self.storage)
        ledger, snapshots = LEDGERS[self.flow], SCHEMAS[self.flow].snapshots
        assert snapshots is not None
        bookkeeping = {c.name for c in self.declaration.wide[0].columns if isinstance(c.origin, Bookkeeping)}
        for document in self.made:
            entity = self.entity(document)
            cells: Cells = {}
            document.contribute(cells)
            with self.storage.read_engine_for_order(entity).connect() as connection:
                row, items = read_wide_rows(connection, entity)
                assert row is not None
                snapshot = connection.execute(select(snapshots).where(
                    (snapshots.c.order_id == entity) & (snapshots.c.operation_type == row["last_operation"]))).one()
            with self.storage.dws_engine.connect() as connection:
                entry = connection.execute(select(ledger).where(ledger.c.order_id == entity)).one()
            kept = Contribution.from_json(entry.contribution).cells if entry.contribution else {}
            if (entry.wide_version, kept) != (row["version"], cells):
                found.append(f"{entity}: ledger {entry.wide_version} {kept}, wide row {row['version']} {cells}")
            stored = {k: v for k, v in json.loads(to_json(row)).items() if k not in bookkeeping}
            taken = {k: v for k, v in json.loads(snapshot.order_row).items() if k not in bookkeeping}
            lines = json.loads(to_json(sorted(items.values(), key=lambda item: item["FENTRYID"])))
            if (taken, json.loads(snapshot.item_rows)) != (stored, lines):
                found.append(f"{entity}: the {row['last_operation']} snapshot is not the wide rows")
        return found


@pytest.mark.parametrize("input_format", ["canal", "debezium"])
@pytest.mark.parametrize("flow", DEMOS)
def test_a_deleted_document_is_done_and_exact_whatever_order_its_deletes_arrive_in(
        fresh_storage, redis_client, flow: str, input_format: str) -> None:
    # Given a fresh warehouse and five saved documents, each to be deleted a way of its own
    storage = fresh_storage("postgresql", TDC_SOURCE_DATABASES="jd_erp")
    documents = Documents(flow, storage, redis_client, input_format)
    header = documents.declaration.sources[0].name
    ways = ["header first", "entries first", "deletes only", "delivered twice", "before the inserts"]
    made = {way: documents.new(entries=2) for way in ways}
    saved = {way: documents.lines(document) for way, document in made.items()}
    # and all but two of them seen saved (one submitted and withdrawn) before Kingdee deletes them
    seen = [way for way in ways if way not in ("deletes only", "before the inserts")]
    documents.deliver(*(saved[way] for way in seen))
    made["entries first"].submit()
    made["entries first"].withdraw()
    documents.deliver(documents.lines(made["entries first"]))
    assert documents.drain([made[way] for way in seen]) == {}
    for document in made.values():
        document.delete()
    # When each document's deletes arrive, one line at a time, in its own order
    for way, document in made.items():
        gone = documents.changes(document)
        if way in ("header first", "entries first"):
            gone.sort(key=lambda pair: (pair[0].table == header) == (way == "entries first"))
        lines = [line for _, line in gone]
        if way == "delivered twice":
            lines += list(reversed(lines))
        if way == "before the inserts":
            lines += saved[way]
        documents.deliver(*([line] for line in lines))
    # Then every document's tasks are DONE and its rows, snapshot, ADS and ledger exact: its FID
    # and the deleted status, no entry rows, nothing counted
    assert documents.problems() == []
    roots = documents.history().expected[documents.declaration.wide[0].name]
    assert {row["status"] for row in roots.values()} == {90}


@pytest.mark.parametrize("flow", DEMOS)
def test_an_entry_deleted_from_a_kept_document_leaves_its_row_and_its_ads_cell(
        fresh_storage, redis_client, flow: str) -> None:
    # Given two audited documents of three entries each, counted in the ADS
    storage = fresh_storage("postgresql", TDC_SOURCE_DATABASES="jd_erp")
    documents = Documents(flow, storage, redis_client, "canal")
    first, second = documents.new(entries=3), documents.new(entries=3)
    for document in (first, second):
        document.submit()
        document.audit()
    documents.deliver(documents.lines(first) + documents.lines(second))
    assert documents.problems() == []
    counted = documents.ads()
    # When an entry is taken out of each (its delete, its finance entry's, the later ones
    # renumbered), the finance entry's delete arriving first for the second document
    before = {entry["FENTRYID"] for document in (first, second) for entry, _ in document.entries}
    for document in (first, second):
        assert document.remove_entry()
    taken_out = documents.lines(first)
    finance_first = documents.lines(second)
    finance_first[:2] = reversed(finance_first[:2])
    documents.deliver(*([line] for line in taken_out + finance_first))
    # Then both are DONE and exact: the entries' child rows gone, their ADS cells taken back
    assert documents.problems() == []
    assert documents.ads() != counted
    entries = documents.history().expected[documents.declaration.wide[1].name]
    assert len(entries) == len(before) - 2 and set(entries) < before


@pytest.mark.parametrize("flow", DEMOS)
def test_an_audited_document_taken_back_then_voided_or_deleted_is_no_data_error(
        fresh_storage, redis_client, flow: str) -> None:
    # Given four audited documents, counted in the ADS
    storage = fresh_storage("postgresql", TDC_SOURCE_DATABASES="jd_erp")
    documents = Documents(flow, storage, redis_client, "canal")
    deleted, voided, backlog, kept = (documents.new(entries=2) for _ in range(4))
    for document in (deleted, voided, kept):
        document.submit()
        document.audit()
    documents.deliver(*(documents.lines(document) for document in (deleted, voided, kept)))
    assert documents.drain([deleted, voided, kept]) == {}
    counted = documents.ads()
    assert counted != documents.before
    # When Kingdee takes three back (re-audit, D) and deletes one, voids another, takes the third
    # back only; and a fourth is audited, taken back and deleted before tdc hears of any of it
    for document in (deleted, voided, kept):
        document.reaudit()
    deleted.delete()
    voided.void()
    backlog.submit()
    backlog.audit()
    backlog.reaudit()
    backlog.delete()
    documents.deliver(*([line] for document in (deleted, voided, kept) for line in documents.lines(document)),
                      documents.lines(backlog))
    # Then every task is DONE (none failed as a data error) and each is exact: deleted (90) or
    # voided (50), the one only taken back still audited (20) but no longer counted
    assert documents.problems() == []
    roots = documents.history().expected[documents.declaration.wide[0].name]
    assert [roots[d.fid]["status"] for d in (deleted, voided, backlog, kept)] == [90, 50, 90, 20]
    assert documents.ads() == documents.before  # (nothing counts any more: the model says so too)
