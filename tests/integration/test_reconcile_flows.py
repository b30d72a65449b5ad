"""``tdc reconcile``'s wide layer for every flow tdc runs, on real MariaDB shard databases and a
PostgreSQL warehouse: till sales (``pos``) and Kingdee sales orders (``sal_order``) beside online
orders are proved by bucket sums alone when clean; a damaged root row, child row or deleted
document of each is named in its own flow's tables, and ``--fix`` rewrites them through the chain,
each flow's ledger following its own rebuilt rows."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, select, update

from demo.flow_run import flow_problems
from demo.flows import pos, sal_order
from demo.history import generate_history
from flows.declared import BY_NAME
from flows.registry import combine, routing
from flows.rules import all_hold
from models.warehouse import LEDGERS
from models.wide import SCHEMAS
from reconcile.run import reconcile
from reconcile.wide import read_wide_orders
from tests.integration.helpers import ingest, run_chains

pytestmark = pytest.mark.integration

FLOWS = ("gqsh", "pos", "sal_order")
THREE = combine(tuple(routing(BY_NAME[name]) for name in FLOWS))
POS, SAL = SCHEMAS["pos"], SCHEMAS["sal_order"]


def _process(storage, client, lines: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    touched: set = set()
    for fmt in dict.fromkeys(f for f, _ in lines):
        touched |= set(ingest(storage, client, THREE, fmt, [line for f, line in lines if f == fmt]).touched)
    run_chains(storage, client, touched)


def _settled(flow: str, rows: dict[Any, dict[str, Any]]) -> list[Any]:
    """Keys of the expected root rows the flow's aggregates count (its declared ``when``)."""
    when = BY_NAME[flow].aggregates[0].when
    return sorted(key for key, row in rows.items() if all_hold(when, row))


@pytest.fixture
def three_flows(fresh_storage, redis_client):  # type: ignore[no-untyped-def]
    storage = fresh_storage("postgresql", TDC_SOURCE_DATABASES="gqsh,gqsh_pos,jd_erp", TDC_FLOWS=",".join(FLOWS))
    sales, documents = pos.generate(40, seed=61), sal_order.generate(30, seed=62, input_format="debezium")
    orders = generate_history(20, seed=63, malformed=0)
    _process(storage, redis_client, sales.lines + documents.lines + orders.lines)
    assert flow_problems(sales, {}, storage) == [] and flow_problems(documents, {}, storage) == []
    days = [row["biz_date"] for history in (sales, documents)
            for row in history.expected[SCHEMAS[history.flow].root.name].values() if row["biz_date"] is not None]
    days += [row["biz_date"] for row in orders.expected_orders.values() if row.get("biz_date") is not None]
    return storage, sales, documents, min(days), max(days)


def test_every_flows_clean_days_are_proved_by_sums_alone(three_flows, redis_client) -> None:
    # Given three flows' processed histories
    storage, sales, documents, first, last = three_flows
    # When their days are reconciled
    outcome = reconcile(storage, redis_client, first, last, layers=["wide", "ads"])
    # Then nothing differs, no row was read, and the settled entities of the two new flows are
    # among those summed (each flow's settled entities: its aggregates' condition)
    assert (outcome.found, outcome.status) == (0, "clean"), outcome.diffs[:5]
    assert outcome.counts["wide"]["rows_read"] == 0
    till = _settled("pos", sales.expected[POS.root.name])
    kingdee = _settled("sal_order", documents.expected[SAL.root.name])
    assert till and kingdee
    assert outcome.counts["wide"]["orders"] >= len(till) + len(kingdee)


def test_damage_in_each_flow_is_named_in_its_own_tables_and_fixed(three_flows, redis_client) -> None:
    # Given three flows' processed histories, and damage to a till sale's root row, a Kingdee
    # order's entry (past the cents: Kingdee keeps ten places), and a Kingdee order deleted whole
    storage, sales, documents, first, last = three_flows
    till = _settled("pos", sales.expected[POS.root.name])[0]
    kingdee = _settled("sal_order", documents.expected[SAL.root.name])
    entry_of, gone = kingdee[0], kingdee[1]
    entry = min(key for key, row in documents.expected[SAL.child.name].items() if row["FID"] == entry_of)
    with storage.order_transaction(f"pos:{till}") as connection:
        connection.execute(update(POS.root).where(POS.root.c.order_no == till).values(
            pay_amount=POS.root.c.pay_amount + Decimal("0.01")))
    with storage.order_transaction(f"sal_order:{entry_of}") as connection:
        connection.execute(update(SAL.child).where(SAL.child.c.FENTRYID == entry).values(
            FQTY=SAL.child.c.FQTY + Decimal("0.0001")))
    with storage.order_transaction(f"sal_order:{gone}") as connection:
        connection.execute(delete(SAL.child).where(SAL.child.c.FID == gone))
        connection.execute(delete(SAL.root).where(SAL.root.c.FID == gone))
    # When the days are reconciled
    found = reconcile(storage, redis_client, first, last, layers=["wide"])
    # Then each is named in its flow's own table and column
    named = {(d.order_id, d.target, d.column) for d in found.diffs}
    assert (f"pos:{till}", POS.root.name, "pay_amount") in named
    assert (f"sal_order:{entry_of}", f"{SAL.child.name} {entry}", "FQTY") in named
    assert (f"sal_order:{gone}", SAL.root.name, "*") in named
    assert {d.order_id for d in found.diffs} == {f"pos:{till}", f"sal_order:{entry_of}", f"sal_order:{gone}"}
    # When they are reconciled with --fix (the chains run in this process)
    fixed = reconcile(storage, redis_client, first, last, layers=["wide", "ads"], fix=True, wait_seconds=30,
                      submit=lambda keys: run_chains(storage, redis_client, keys))
    # Then everything is fixed through the chain, each flow exact again
    assert (fixed.status, fixed.remaining) == ("fixed", 0), fixed.new_diffs[:5]
    assert {a.order_id: a.result for a in fixed.actions if a.action == "rerun"} == {
        f"pos:{till}": "done", f"sal_order:{entry_of}": "done", f"sal_order:{gone}": "done"}
    assert flow_problems(sales, {}, storage) == [] and flow_problems(documents, {}, storage) == []
    # And the deleted document's ledger entry in its own flow's ledger follows its rebuilt row
    ledger = LEDGERS["sal_order"]
    with storage.dws_engine.connect() as connection:
        version = connection.execute(select(ledger.c.wide_version).where(
            ledger.c.order_id == f"sal_order:{gone}")).scalar_one()
    assert version == read_wide_orders(storage, [f"sal_order:{gone}"])[f"sal_order:{gone}"][0]["version"]
    # And a second run finds nothing
    assert reconcile(storage, redis_client, first, last, layers=["wide", "ads"]).found == 0


def test_deep_merges_every_flows_entities_from_their_records(three_flows, redis_client) -> None:
    # Given three flows' processed histories
    storage, sales, documents, first, last = three_flows
    # When they are reconciled deep (every entity merged again from its records)
    outcome = reconcile(storage, redis_client, first, last, layers=["wide"], deep=True)
    # Then the merges agree with the stored rows of every flow
    assert (outcome.found, outcome.status) == (0, "clean"), outcome.diffs[:5]
    assert outcome.counts["wide"]["buckets"] > 0


def test_a_day_outside_every_flows_range_is_empty(three_flows, redis_client) -> None:
    storage, _, _, first, _ = three_flows
    day = first - dt.timedelta(days=30)
    outcome = reconcile(storage, redis_client, day, day, layers=["wide"])
    assert (outcome.found, outcome.counts["wide"]["orders"]) == (0, 0)


def test_a_kingdee_source_database_is_compared_with_what_tdc_accepted_and_taken_in_again(
        fresh_storage, redis_client, binlog_server) -> None:
    # Given Kingdee sales orders made in a real source database (on a server with a binlog) and
    # loaded by a snapshot, in a deployment running the online orders and Kingdee sales
    import uuid

    from sqlalchemy import create_engine

    from cdc.snapshot import take_snapshot
    from cdc.source import source_of
    from demo.source import play_changes, source_metadata

    database = f"jd_erp_src_{uuid.uuid4().hex[:8]}"
    with binlog_server.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{database}` CHARACTER SET utf8mb4")
    url = f"{binlog_server.url}/{database}"
    storage = fresh_storage("postgresql", TDC_FLOWS="gqsh,sal_order", TDC_CDC_SOURCE_URL=url,
                            TDC_SOURCE_DATABASES="gqsh,jd_erp_src_*")
    flow = routing(BY_NAME["sal_order"])
    documents = sal_order.generate(25, seed=71, displacement=0, duplicate_rate=0, malformed=0)
    # A snapshot finds no trace of an order Kingdee deleted before it was taken
    deleted = {fid for fid, row in documents.expected[SAL.root.name].items() if row["status"] == 90}
    documents.expected[SAL.root.name] = {
        fid: row for fid, row in documents.expected[SAL.root.name].items() if fid not in deleted}
    engine = create_engine(url)
    tables = source_metadata(flow)
    tables.create_all(engine)
    with engine.begin() as connection:
        play_changes(connection, tables, documents.changes)
    touched: set = set()
    take_snapshot(storage, redis_client, flow, source_of(url), "test-load", lambda keys: touched.update(keys) or 0)
    run_chains(storage, redis_client, touched)
    assert flow_problems(documents, {}, storage) == []
    days = sorted(row["biz_date"] for row in documents.expected[SAL.root.name].values() if row["biz_date"])
    first, last = days[0], days[-1]
    assert reconcile(storage, redis_client, first, last).found == 0
    # When Kingdee changes an audited order's bill number and another's entry quantity in its
    # tenth decimal place, and tdc never hears of it
    billed, measured = _settled("sal_order", documents.expected[SAL.root.name])[:2]
    entry = min(key for key, row in documents.expected[SAL.child.name].items() if row["FID"] == measured)
    header, entries = tables.tables["t_sal_order"], tables.tables["t_sal_orderentry"]
    with engine.begin() as connection:
        connection.execute(update(header).where(header.c.FID == billed).values(FBILLNO="XSDD-CHANGED"))
        connection.execute(update(entries).where(entries.c.FENTRYID == entry).values(
            FQTY=entries.c.FQTY + Decimal("0.0000000001")))
    engine.dispose()
    found = reconcile(storage, redis_client, first, last)
    # Then the source layer names each changed row and column in Kingdee's tables, and nothing else
    named = {(d.order_id, d.target.split()[0], d.column) for d in found.diffs if d.layer == "source"}
    assert named == {(f"sal_order:{billed}", "t_sal_order", "FBILLNO"),
                     (f"sal_order:{measured}", "t_sal_orderentry", "FQTY")}, found.diffs
    assert {d.layer for d in found.diffs} == {"source"}
    # When it is reconciled with --fix
    fixed = reconcile(storage, redis_client, first, last, fix=True, wait_seconds=30,
                      submit=lambda keys: run_chains(storage, redis_client, keys))
    # Then both orders were taken in again and their wide rows follow the source
    assert (fixed.status, fixed.remaining) == ("fixed", 0), fixed.new_diffs
    assert {(a.order_id, a.action, a.result) for a in fixed.actions} == {
        (f"sal_order:{billed}", "reingest", "done"), (f"sal_order:{measured}", "reingest", "done")}
    stored = read_wide_orders(storage, [f"sal_order:{billed}", f"sal_order:{measured}"])
    assert stored[f"sal_order:{billed}"][0]["FBILLNO"] == "XSDD-CHANGED"
    assert stored[f"sal_order:{measured}"][1][entry]["FQTY"] == (
        documents.expected[SAL.child.name][entry]["FQTY"] + Decimal("0.0000000001"))
