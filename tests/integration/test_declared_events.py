"""A flow's declared events end to end, on real MariaDB shards, a PostgreSQL warehouse and a real
Redis stream or NATS JetStream: the Kingdee sales orders' ``SalesOrderAudited`` (per audited
document), ``SalesOrderEntryAudited`` (per entry) and ``FirstCustomerOrder`` (a customer's first
audited document, kept in the warehouse) from the merge's changelog rows through the relay;
a correction is an update, a re-audit a delete, a new audit a create of the same fact."""

from __future__ import annotations

import dataclasses
import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import select

from demo.flows import sal_order, source_database
from demo.render import SourceChange, render_canal
from flows.declared import BY_NAME
from flows.declared.sal_order import SAL_ORDER
from flows.registry import combine, routing
from models.changelog import CHANGELOG
from models.firsts import FIRST_TABLES
from models.storage import Storage
from streams.events import event_id
from streams.outbox import Sinks, relay_pass
from tests.integration.helpers import ingest, run_chains
from tests.integration.streams_helpers import SinkPair, make_sinks, nats_server  # noqa: F401 - fixture

pytestmark = pytest.mark.integration

#: What intake routes with the online orders and the Kingdee sales orders running.
FLOWS = combine(tuple(routing(BY_NAME[name]) for name in ("gqsh", "sal_order")))
DOC = "SalesOrderAudited"
ENTRY = "SalesOrderEntryAudited"
FIRST = "FirstCustomerOrder"


class Documents:
    """A relayed sales order history, and source corrections of it (Canal lines, chains, relay)."""

    def __init__(self, storage: Storage, redis_client: Any, sinks: SinkPair, history: Any) -> None:
        self.storage, self.redis, self.sinks, self.history = storage, redis_client, sinks, history
        self.source, self.position = source_database(SAL_ORDER), 10**6
        self.rows = {(c.table, _key(c)): c.row for c in history.changes if c.kind != "delete"}
        self.apply(history.lines)

    def apply(self, lines: list[tuple[str, str]]) -> None:
        touched: set = set()
        for fmt in dict.fromkeys(f for f, _ in lines):
            touched |= set(ingest(self.storage, self.redis, FLOWS, fmt, [x for f, x in lines if f == fmt]).touched)
        run_chains(self.storage, self.redis, touched)
        sinks = Sinks.configured(self.storage.settings)
        try:
            relay_pass(self.storage, sinks)
        finally:
            sinks.close()

    def update(self, table: str, key: int, **values: Any) -> None:
        before = self.rows[(table, key)]
        after = self.rows[(table, key)] = {**before, **values}
        self.position += 1
        at = dt.datetime(2026, 12, 1) + dt.timedelta(minutes=self.position - 10**6)
        self.apply([("canal", render_canal(SourceChange(table, "update", after, at, before), self.position,
                                           self.source))])

    def latest(self) -> dict[str, dict[str, Any]]:
        """Each event id's newest event, as a consumer keeping the highest version holds it."""
        kept: dict[str, dict[str, Any]] = {}
        for _, event in self.sinks.events():
            if event["event_id"] not in kept or event["version"] > kept[event["event_id"]]["version"]:
                kept[event["event_id"]] = event
        return kept


def _key(change: SourceChange) -> int:
    return change.row["FENTRYID"] if "FENTRYID" in change.row else change.row.get("FID", 0)


@pytest.fixture(params=["redis", "nats"])
def documents(request, fresh_storage, redis_client):  # type: ignore[no-untyped-def]
    """A relayed sales order history, with sinks of the parameter's broker."""
    if request.param == "nats":
        request.getfixturevalue("nats_server")
    pair = make_sinks(request.param)
    base = fresh_storage("postgresql", TDC_SOURCE_DATABASES="gqsh,jd_erp")
    storage = Storage(dataclasses.replace(base.settings, changelog_url=pair.changelog_url,
                                          events_url=pair.events_url))
    try:
        yield Documents(storage, redis_client, pair, sal_order.generate(16, seed=52))
    finally:
        pair.close()
        storage.dispose()


def _audited(history: Any) -> dict[int, dict[str, Any]]:
    return {fid: row for fid, row in history.expected["dwd_t_sal_order"].items()
            if row["FDOCUMENTSTATUS"] == "C" and row["FCANCELSTATUS"] != "B"}


def test_audited_documents_their_entries_and_each_customers_first_are_published(documents) -> None:
    history = documents.history
    audited = _audited(history)
    assert audited and len(audited) < len(history.expected["dwd_t_sal_order"])
    events = documents.sinks.events()
    latest = documents.latest()
    # Then each audited document has one SalesOrderAudited, its data its wide row's, its version
    # the version of a changelog row the merge wrote
    docs = {e["event_id"]: e for e in latest.values() if e["type"] == DOC}
    assert set(docs) == {event_id(DOC, str(fid)) for fid in audited}
    outbox: set[tuple[str, int]] = set()
    for database in documents.storage.distinct_databases():
        with documents.storage.read_engine(database).connect() as connection:
            outbox |= {(row.order_id, row.version) for row in connection.execute(
                select(CHANGELOG.c.order_id, CHANGELOG.c.version)).all()}
    for fid, row in audited.items():
        event = docs[event_id(DOC, str(fid))]
        assert event["order_id"] == f"sal_order:{fid}" and (event["order_id"], event["version"]) in outbox
        assert (event["data"]["FBILLNO"], Decimal(event["data"]["FAMOUNT"])) == (row["FBILLNO"], row["FAMOUNT"])
    # And one SalesOrderEntryAudited per entry of an audited document, none for the others
    entries = {fid_entry for fid_entry, row in history.expected["dwd_t_sal_order_entry"].items()
               if row["FID"] in audited}
    assert {e["event_id"] for e in latest.values() if e["type"] == ENTRY} == {
        event_id(ENTRY, str(history.expected["dwd_t_sal_order_entry"][n]["FID"]), str(n)) for n in entries}
    # And one FirstCustomerOrder per customer with an audited document: its earliest audited one
    firsts: dict[int, tuple[dt.datetime, str]] = {}
    for fid, row in audited.items():
        candidate = (row["FAPPROVEDATE"], f"sal_order:{fid}")
        firsts[row["FCUSTID"]] = min(firsts.get(row["FCUSTID"], candidate), candidate)
    found = {e["data"]["FCUSTID"]: e for e in latest.values() if e["type"] == FIRST}
    assert {c: (e["data"]["first_audited_at"], e["order_id"]) for c, e in found.items()} == {
        c: (at.isoformat(timespec="milliseconds"), entity) for c, (at, entity) in firsts.items()}
    # And no event of the online orders' types
    assert {e["type"] for _, e in events} == {DOC, ENTRY, FIRST}


def test_a_correction_updates_a_re_audit_deletes_and_a_new_audit_creates_the_same_facts(documents) -> None:
    history = documents.history
    fid, header = min(_audited(history).items(), key=lambda item: (item[1]["FAPPROVEDATE"], item[0]))
    customer = header["FCUSTID"]
    entry = min(n for n, row in history.expected["dwd_t_sal_order_entry"].items() if row["FID"] == fid)
    doc_id, entry_id = event_id(DOC, str(fid)), event_id(ENTRY, str(fid), str(entry))
    first_id = event_id(FIRST, str(customer))
    created = documents.latest()
    assert (created[doc_id]["op"], created[entry_id]["op"]) == ("create", "create")
    assert created[first_id]["order_id"] == f"sal_order:{fid}"

    # When an entry's amount is corrected at the source
    amount = documents.rows[("t_sal_orderentry_f", entry)]["FAMOUNT"] + Decimal("1.5")
    documents.update("t_sal_orderentry_f", entry, FAMOUNT=amount)
    # Then the document and the entry are updates of the same facts, with a newer version
    updated = documents.latest()
    assert (updated[doc_id]["op"], updated[entry_id]["op"]) == ("update", "update")
    assert updated[doc_id]["version"] > created[doc_id]["version"]
    assert Decimal(updated[entry_id]["data"]["FAMOUNT"]) == amount
    assert updated[first_id] == created[first_id]  # nothing it carries changed

    # When the document is taken back to re-audit (D)
    documents.update("t_sal_order", fid, FDOCUMENTSTATUS="D")
    # Then its facts are deleted, and the customer's first is another document or none
    gone = documents.latest()
    assert (gone[doc_id]["op"], gone[entry_id]["op"]) == ("delete", "delete")
    others = [(row["FAPPROVEDATE"], f"sal_order:{n}") for n, row in _audited(history).items()
              if row["FCUSTID"] == customer and n != fid]
    if others:
        assert (gone[first_id]["op"], gone[first_id]["order_id"]) == ("update", min(others)[1])
    else:
        assert gone[first_id]["op"] == "delete"
    assert gone[first_id]["version"] == created[first_id]["version"] + 1
    with documents.storage.dws_engine.connect() as connection:
        kept = FIRST_TABLES[FIRST].entities
        assert connection.execute(select(kept.c.FCUSTID).where(kept.c.order_id == f"sal_order:{fid}")).scalar() is None

    # When it is audited again, later
    documents.update("t_sal_order", fid, FDOCUMENTSTATUS="C",
                     FAPPROVEDATE=header["FAPPROVEDATE"] + dt.timedelta(days=40))
    # Then the same facts are created again, with newer versions
    again = documents.latest()
    assert (again[doc_id]["op"], again[entry_id]["op"]) == ("create", "create")
    assert again[doc_id]["version"] > gone[doc_id]["version"]
    assert again[doc_id]["data"]["FAPPROVEDATE"] == (header["FAPPROVEDATE"] + dt.timedelta(days=40)).isoformat(
        timespec="milliseconds")
