"""``tdc reconcile`` on real MariaDB shard databases and a PostgreSQL or MariaDB warehouse: a clean
day is proved by bucket sums alone; damaged wide rows, lines and ADS cells are each named, and
``--fix`` brings everything back exact through the normal paths, with its actions recorded."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
from collections import Counter
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path

import pytest
from sqlalchemy import delete, event, select, update

from demo.check import differences, expected_aggregates, matching_orders
from demo.history import generate_history
from demo.tables import ITEM_TABLE as DwdOrderItem
from demo.tables import ORDER_TABLE as DwdOrder
from models.digests import bucket_of
from models.reconcile import ReconcileAction, ReconcileDiff, ReconcileRun
from models.sharded import meta_table
from models.warehouse import ADS_TABLES, LEDGERS
from reconcile.run import ReconcileError, parse_layers, reconcile
from reconcile.wide import BUCKETS, read_wide_orders
from tests.conftest import env_of
from tests.integration.helpers import process_history, run_chains, run_tdc
from warehouse.aggregates import read_aggregates

AdsOrderSales, AdsOrderItemSales = ADS_TABLES["ads_order_sales"], ADS_TABLES["ads_order_item_sales"]
AdsOrderLedger = LEDGERS["gqsh"]

pytestmark = pytest.mark.integration


def _settled_days(history) -> Counter[dt.date]:  # type: ignore[no-untyped-def]
    return Counter(o["paid_at"].date() for o in history.expected_orders.values()
                   if o["paid_at"] is not None and o["status"] != 50)


def _exact(storage, history) -> None:  # type: ignore[no-untyped-def]
    stored = read_wide_orders(storage, history.order_ids)
    orders = {o: row for o, (row, _) in stored.items() if row is not None}
    items = {i: item for _, (_, lines) in stored.items() for i, item in lines.items()}
    assert matching_orders(history.expected_orders, history.expected_items, orders, items) == len(orders)
    assert len(orders) == len(history.order_ids)
    with storage.dws_engine.connect() as connection:
        ads = read_aggregates(connection)
    keyed = {f"{t} {k}": v for (t, k), v in ads.items()}
    want = {f"{t} {k}": v for (t, k), v in expected_aggregates(history.expected_orders,
                                                                history.expected_items).items()}
    assert differences(want, keyed, "ads") == []


@pytest.fixture
def processed(fresh_storage, redis_client):  # type: ignore[no-untyped-def]
    def make(warehouse: str = "postgresql", orders: int = 40, seed: int = 11):  # type: ignore[no-untyped-def]
        storage = fresh_storage(warehouse)
        history = generate_history(orders, seed=seed, malformed=0)
        process_history(storage, redis_client, history)
        return storage, history
    return make


def test_a_clean_day_reads_only_bucket_sums(processed, redis_client) -> None:
    # Given a processed history
    storage, history = processed()
    day = _settled_days(history).most_common(1)[0][0]
    statements: list[str] = []

    def seen(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)
    engines = [storage.read_engine(d) for d in storage.distinct_databases()]
    for engine in engines:
        event.listen(engine, "before_cursor_execute", seen)
    try:
        # When its busiest day is reconciled
        outcome = reconcile(storage, redis_client, day, day)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", seen)
    # Then nothing differs, and no row was read: the wide rows and lines were only summed, and
    # neither the records nor the tasks were looked at
    assert (outcome.found, outcome.status) == (0, "clean")
    assert outcome.counts["wide"]["orders"] == _settled_days(history)[day]
    assert outcome.counts["wide"]["rows_read"] == 0
    assert statements and all("GROUP BY" in s for s in statements), [s for s in statements if "GROUP BY" not in s]
    assert not [s for s in statements if "meta_" in s or "task_" in s]


def test_rows_without_a_stored_digest_are_compared_row_by_row(processed, redis_client) -> None:
    # Given a processed day whose wide rows an older tdc wrote (no stored digest) in part
    storage, history = processed()
    day = _settled_days(history).most_common(1)[0][0]
    older = sorted(o for o, row in history.expected_orders.items()
                   if row["paid_at"] is not None and row["status"] != 50 and row["paid_at"].date() == day)[:3]
    for order_id in older:
        with storage.order_transaction(order_id) as connection:
            connection.execute(update(DwdOrder).where(DwdOrder.c.order_id == order_id).values(source_digest=None))
    # When the day is reconciled
    outcome = reconcile(storage, redis_client, day, day)
    # Then their buckets were read row by row and nothing differs
    assert outcome.found == 0
    assert outcome.counts["wide"]["buckets_differing"] == len({bucket_of(o, BUCKETS) for o in older})
    assert outcome.counts["wide"]["rows_read"] >= len(older)


def test_deep_finds_a_row_made_from_records_that_changed_without_a_new_run(processed, redis_client) -> None:
    # Given a processed order whose stored record changed later without its task going round
    # again (a write that bypassed intake)
    storage, history = processed()
    day = _settled_days(history).most_common(1)[0][0]
    order_id = sorted(o for o, row in history.expected_orders.items()
                      if row["paid_at"] is not None and row["status"] != 50 and row["paid_at"].date() == day)[0]
    shard = storage.shard_of(order_id)
    meta = meta_table(shard)
    with storage.order_transaction(order_id) as connection:
        # (the header is stored once per operation its status feeds)
        for record in connection.execute(select(meta).where(
                (meta.c.order_id == order_id) & (meta.c.source == "gqsh_order"))).all():
            content = json.loads(record.content)
            content["member_id"] = "M-CHANGED"
            connection.execute(update(meta).where(meta.c.id == record.id).values(content=json.dumps(content)))
    # When the day is reconciled, then reconciled deep, then deep with --fix
    fast = reconcile(storage, redis_client, day, day, layers=["wide"])
    deep = reconcile(storage, redis_client, day, day, layers=["wide"], deep=True)
    fixed = reconcile(storage, redis_client, day, day, layers=["wide"], deep=True, fix=True,
                      submit=lambda keys: run_chains(storage, redis_client, keys))
    # Then only the deep comparison finds it, and its fix rewrites the row from the records
    assert fast.found == 0
    assert [(d.order_id, d.column, d.expected, d.found) for d in deep.diffs] == [
        (order_id, "member_id", "M-CHANGED", history.expected_orders[order_id]["member_id"])]
    assert (fixed.status, fixed.remaining) == ("fixed", 0)
    assert read_wide_orders(storage, [order_id])[order_id][0]["member_id"] == "M-CHANGED"


def _damage(storage, history, day):  # type: ignore[no-untyped-def]
    """Delete one settled order's wide rows, another's lines, change a third's amount and a fourth's
    member, and tamper with two ADS cells of the day; what was damaged."""
    on_day = sorted(o for o, row in history.expected_orders.items()
                    if row["paid_at"] is not None and row["status"] != 50 and row["paid_at"].date() == day
                    and any(i["order_id"] == o for i in history.expected_items.values()))
    gone, lines_gone, amount, member = on_day[:4]
    with storage.order_transaction(gone) as connection:
        connection.execute(delete(DwdOrderItem).where(DwdOrderItem.c.order_id == gone))
        connection.execute(delete(DwdOrder).where(DwdOrder.c.order_id == gone))
    with storage.order_transaction(lines_gone) as connection:
        connection.execute(delete(DwdOrderItem).where(DwdOrderItem.c.order_id == lines_gone))
    with storage.order_transaction(amount) as connection:
        connection.execute(update(DwdOrder).where(DwdOrder.c.order_id == amount).values(
            pay_amount=DwdOrder.c.pay_amount + Decimal("0.01")))
    with storage.order_transaction(member) as connection:
        connection.execute(update(DwdOrder).where(DwdOrder.c.order_id == member).values(member_id="M-EDITED"))
    store = history.expected_orders[member]["store_id"]
    sku = next(i["sku_id"] for i in history.expected_items.values() if i["order_id"] == member)
    with storage.dws_engine.begin() as connection:
        connection.execute(update(AdsOrderSales).where(
            (AdsOrderSales.c.biz_date == day) & (AdsOrderSales.c.store_id == store)).values(
            pay_amount=AdsOrderSales.c.pay_amount + 100))
        connection.execute(update(AdsOrderItemSales).where(
            (AdsOrderItemSales.c.biz_date == day) & (AdsOrderItemSales.c.sku_id == sku)).values(
            quantity=AdsOrderItemSales.c.quantity + 7))
    return {"gone": gone, "lines_gone": lines_gone, "amount": amount, "member": member,
            "sales_cell": f"ads_order_sales {day} {store}", "item_cell": f"ads_order_item_sales {day} {sku}"}


@pytest.mark.parametrize("warehouse", ["postgresql", "mariadb"])
def test_damage_is_named_then_fixed_through_the_chain(processed, redis_client, tmp_path: Path,
                                                      warehouse: str) -> None:
    # Given a processed history whose busiest day is damaged in the wide rows and the ADS
    storage, history = processed(warehouse)
    day = _settled_days(history).most_common(1)[0][0]
    damaged = _damage(storage, history, day)
    # When the day is reconciled without --fix
    report = tmp_path / "first.json"
    first = reconcile(storage, redis_client, day, day, json_path=report, html_path=tmp_path / "first.html")
    # Then the JSON report names every damaged order, column and cell, and nothing else
    data = json.loads(report.read_text())
    named = {(d["order_id"], d["target"], d["column"]) for d in data["differences"] if d["layer"] == "wide"}
    assert (damaged["gone"], "dwd_order", "*") in named
    assert {(o, c) for o, t, c in named if t.startswith("dwd_order_item")} == {
        (damaged["lines_gone"], "*"), (damaged["gone"], "*")}
    assert (damaged["amount"], "dwd_order", "pay_amount") in named
    assert (damaged["member"], "dwd_order", "member_id") in named
    assert {o for o, _, _ in named} == {damaged["gone"], damaged["lines_gone"], damaged["amount"], damaged["member"]}
    cells = {(d["target"], d["column"]) for d in data["differences"] if d["layer"] == "ads"}
    assert (damaged["sales_cell"], "pay_amount") in cells
    assert (damaged["item_cell"], "quantity") in cells
    assert (data["status"], data["found"], data["fixed"]) == ("different", first.found, 0)
    assert first.found == len(data["differences"]) > 0
    # When it is reconciled with --fix (the chains run in this process)
    fixed = reconcile(storage, redis_client, day, day, fix=True, wait_seconds=30,
                      submit=lambda keys: run_chains(storage, redis_client, keys))
    # Then everything found is fixed, the wide rows and ADS are exact again, and each action is kept
    assert (fixed.status, fixed.remaining, fixed.fixed) == ("fixed", 0, fixed.found)
    _exact(storage, history)
    reruns = {a.order_id: a.result for a in fixed.actions if a.action == "rerun"}
    assert reruns == {damaged[k]: "done" for k in ("gone", "lines_gone", "amount", "member")}
    assert [a.biz_date for a in fixed.actions if a.action == "rebuild"] == [day]
    with storage.dws_engine.connect() as connection:
        kept = connection.execute(select(ReconcileAction.action, ReconcileAction.order_id).where(
            ReconcileAction.run_id == fixed.run_id)).all()
        diffs = connection.execute(select(ReconcileDiff.fixed).where(
            ReconcileDiff.run_id == fixed.run_id)).scalars().all()
        run = connection.execute(select(ReconcileRun).where(ReconcileRun.id == fixed.run_id)).one()
    assert len(kept) == len(fixed.actions) and len(diffs) == fixed.found and all(diffs)
    assert (run.status, run.found, run.fixed, run.remaining) == ("fixed", fixed.found, fixed.found, 0)
    assert Path(run.html_path).exists() and Path(run.json_path).exists()
    # (the ledger follows the rebuilt wide row, so the order's next change is counted, not skipped)
    with storage.dws_engine.connect() as connection:
        ledger = connection.execute(select(AdsOrderLedger.c.wide_version).where(
            AdsOrderLedger.c.order_id == damaged["gone"])).scalar_one()
    assert ledger == read_wide_orders(storage, [damaged["gone"]])[damaged["gone"]][0]["version"]
    # And a second run finds nothing
    again = reconcile(storage, redis_client, day, day)
    assert (again.status, again.found) == ("clean", 0)


class _Page(HTMLParser):
    """What a test needs of the HTML report: charts, tables and rows, and every referenced URL."""

    def __init__(self) -> None:
        super().__init__()
        self.charts: list[str] = []
        self.tables: list[str] = []
        self.cells: list[str] = []
        self.references: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "svg":
            self.charts.append(values.get("data-chart") or "")
        if tag == "table":
            self.tables.append(values.get("id") or "")
        self._in_cell = tag == "td"
        for name in ("src", "href", "xmlns", "xlink:href", "action"):
            if values.get(name):
                self.references.append(str(values[name]))

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells.append(data.strip())


def test_the_html_report_stands_alone(processed, redis_client, tmp_path: Path) -> None:
    # Given a damaged day reconciled twice (so the trend has two runs)
    storage, history = processed()
    day = _settled_days(history).most_common(1)[0][0]
    damaged = _damage(storage, history, day)
    reconcile(storage, redis_client, day, day)
    outcome = reconcile(storage, redis_client, day, day, html_path=tmp_path / "report.html")
    # When its HTML report is parsed
    html = (tmp_path / "report.html").read_text()
    page = _Page()
    page.feed(html)
    # Then it holds both charts, the difference table naming the damaged orders, and the trend
    assert page.charts == ["per-day", "trend"]
    assert {"counts", "differences", "trend"} <= set(page.tables)
    for order_id in (damaged["gone"], damaged["amount"], damaged["member"], damaged["lines_gone"]):
        assert order_id in page.cells
    assert "M-EDITED" in page.cells
    assert page.cells.count("remaining") >= outcome.found
    assert html.count("<circle") == 2 * 2  # two runs, two series
    # And it loads nothing from anywhere
    assert page.references == []
    assert "http" not in html and "//" not in html.replace("<!DOCTYPE html>", "")


def test_layers_are_checked_before_anything_runs() -> None:
    assert parse_layers(None, has_source=False) == ["wide", "ads"]
    assert parse_layers(None, has_source=True) == ["source", "wide", "ads"]
    assert parse_layers("ads,source", has_source=True) == ["source", "ads"]
    with pytest.raises(ReconcileError, match="TDC_CDC_SOURCE_URL"):
        parse_layers("source", has_source=False)
    with pytest.raises(ReconcileError, match="unknown layer 'wdie'"):
        parse_layers("wdie", has_source=True)
    with pytest.raises(ReconcileError, match="TDC_ES_URL"):
        parse_layers("index", has_source=True)
    assert parse_layers(None, has_source=False, has_index=True) == ["wide", "ads", "index"]


_FIX_IN_A_PROCESS = """
import sys, os, signal, datetime as dt
from models.storage import get_storage
from models.redis_store import get_redis
from reconcile.run import reconcile
day = dt.date.fromisoformat(sys.argv[1])
mode = sys.argv[2]
def submit(keys):
    if mode == "die":  # killed between sending orders round again and submitting their chains
        os.kill(os.getpid(), signal.SIGKILL)
reconcile(get_storage(), get_redis(), day, day, fix=True, submit=submit, wait_seconds=1)
"""


def _fixer(storage, day: dt.date, mode: str) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-c", _FIX_IN_A_PROCESS, day.isoformat(), mode],
                            env={**os.environ, **env_of(storage)}, text=True, stderr=subprocess.PIPE)


def test_a_fix_killed_before_submitting_leaves_work_the_rescan_finishes(processed, redis_client) -> None:
    # Given a damaged day
    storage, history = processed()
    day = _settled_days(history).most_common(1)[0][0]
    _damage(storage, history, day)
    # When a fixing process is killed after it sent the orders round again, before any chain was submitted
    fixer = _fixer(storage, day, "die")
    assert fixer.wait(timeout=120) == -signal.SIGKILL
    # Then its tasks are due, and the rescan alone brings the wide rows back
    run_chains(storage, redis_client, [])
    after = reconcile(storage, redis_client, day, day, layers=["wide"])
    assert after.found == 0
    # And a fix of what is left (the tampered ADS cells) makes the day exact
    assert reconcile(storage, redis_client, day, day, fix=True, submit=lambda keys: None).status == "fixed"
    _exact(storage, history)


def test_two_fixes_at_once_end_exact(processed, redis_client) -> None:
    # Given a damaged day
    storage, history = processed()
    day = _settled_days(history).most_common(1)[0][0]
    _damage(storage, history, day)
    # When two processes fix it at the same time (their chains left to the rescan)
    fixers = [_fixer(storage, day, "leave") for _ in range(2)]
    for fixer in fixers:
        _, errors = fixer.communicate(timeout=120)
        assert fixer.returncode == 0, errors
    run_chains(storage, redis_client, [])
    # Then the day is exact, and reconciling it again (with a rebuild of what chains left) finds nothing
    final = reconcile(storage, redis_client, day, day, fix=True, submit=lambda keys: None)
    assert final.remaining == 0
    _exact(storage, history)
    assert reconcile(storage, redis_client, day, day).found == 0


def test_the_command_exits_by_what_it_found(processed, tmp_path: Path) -> None:
    # Given a processed history
    storage, history = processed(orders=20)
    env = env_of(storage)
    day = _settled_days(history).most_common(1)[0][0].isoformat()
    # When a clean day is reconciled, then a damaged one, then with a layer that does not exist
    clean = run_tdc(env, "reconcile", "--date", day, "--json", str(tmp_path / "clean.json"))
    with storage.dws_engine.begin() as connection:
        connection.execute(update(AdsOrderSales).where(AdsOrderSales.c.biz_date == dt.date.fromisoformat(day)).values(
            order_count=AdsOrderSales.c.order_count + 1))
    different = run_tdc(env, "reconcile", "--date", day, "--to", day, "--layers", "ads")
    wrong = run_tdc(env, "reconcile", "--date", day, "--layers", "wdie")
    bad_day = run_tdc(env, "reconcile", "--date", "2026-13-01")
    # Then it exits 0, 1, 2 and 2, and says where the reports are
    assert clean.returncode == 0, clean.stderr
    assert json.loads((tmp_path / "clean.json").read_text())["status"] == "clean"
    assert different.returncode == 1, different.stderr
    assert "order_count" in different.stdout and "report: " in different.stdout
    assert Path(different.stdout.split("report: ")[1].split()[0]).exists()
    assert (wrong.returncode, bad_day.returncode) == (2, 2)
    assert "unknown layer" in wrong.stderr and "not a date" in bad_day.stderr


@pytest.mark.parametrize("backend", ["sqlite", "mariadb", "postgresql"])
def test_digests_are_the_same_in_every_database_and_in_python(backend: str, tmp_path: Path, request) -> None:  # type: ignore[no-untyped-def]
    # Given a table with a column of every kind, on a real database of each backend
    from sqlalchemy import Column, Date, Integer, MetaData, Numeric, String, Table, insert

    from models.digests import digest_kind, row_digest, sql_row_digest
    from models.storage import make_engine
    from models.types import Money, Timestamp
    from tests.conftest import fresh_mariadb_databases, fresh_postgres_database

    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'digest.db'}"
    elif backend == "mariadb":
        request.getfixturevalue("mariadb")
        url = fresh_mariadb_databases("tdc_it_digest", 1)[0]
    else:
        request.getfixturevalue("postgres")
        url = fresh_postgres_database(f"tdc_it_digest_{os.getpid()}")
    engine = make_engine(url)
    table = Table("digested", MetaData(), Column("id", Integer, primary_key=True), Column("name", String(64)),
                  Column("count", Integer), Column("amount", Money), Column("at", Timestamp), Column("day", Date),
                  # Kingdee's quantities: every one of the ten places counts
                  Column("qty", Numeric(23, 10)))
    table.metadata.create_all(engine)
    rows = [
        dict(id=1, name="S001", count=3, amount=Decimal("12.50"), at=dt.datetime(2026, 11, 7, 9, 30, 1, 123000),
             day=dt.date(2026, 11, 7), qty=Decimal("1.2345678901")),
        dict(id=2, name="店铺 | 北京", count=-4, amount=Decimal("-0.10"), at=dt.datetime(2026, 1, 1, 0, 0, 0),
             day=dt.date(2025, 12, 31), qty=Decimal("-0.0000000001")),
        dict(id=3, name=None, count=None, amount=None, at=None, day=None, qty=None),
        dict(id=4, name="", count=0, amount=Decimal("1234567.89"), at=dt.datetime(2026, 2, 28, 23, 59, 59, 999000),
             day=dt.date(2026, 2, 28), qty=Decimal("98765.4321")),
        # (a large amount a float keeps only to about the cents: SQLite reads it back as
        # 1234567.8899999999, so there it is digested to the cent)
        dict(id=6, name="S002", count=1, amount=Decimal("1.00"), at=None, day=None, qty=Decimal("1234567.89")),
    ]
    if backend != "sqlite":
        # (differs from row 1 only past the cents: a digest rounding to cents would not see it)
        rows.append(dict(id=5, name="S001", count=3, amount=Decimal("12.50"),
                         at=dt.datetime(2026, 11, 7, 9, 30, 1, 123000), day=dt.date(2026, 11, 7),
                         qty=Decimal("1.2345678902")))
    with engine.begin() as connection:
        connection.execute(insert(table), rows)
    columns = [(c.name, digest_kind(c, engine.dialect.name)) for c in table.columns]
    # (every place where the database keeps decimals exactly; SQLite keeps a float: the cents)
    assert dict(columns)["qty"] == ("money" if backend == "sqlite" else "decimal:10")
    assert dict(columns)["amount"] == "money"
    # When the database digests each row
    with engine.connect() as connection:
        stored = dict(connection.execute(select(table.c.id, sql_row_digest(
            engine.dialect.name, [(table.c[n], k) for n, k in columns]))).all())
    engine.dispose()
    # Then each digest is Python's, and no two rows share one
    assert {r["id"]: row_digest(columns, r) for r in rows} == {k: int(v) for k, v in stored.items()}
    assert len(set(stored.values())) == len(rows)


_DAILY = """
import json, sys, worker
from tasks.scheduled import daily_reconcile
print(json.dumps(daily_reconcile.run(day=sys.argv[1])))
"""


def test_the_daily_run_fixes_once_per_day(processed, redis_client) -> None:
    # Given a day whose ADS was tampered with
    storage, history = processed(orders=20)
    day = _settled_days(history).most_common(1)[0][0]
    redis_client.delete(f"tdc:once:reconcile:{day}")
    with storage.dws_engine.begin() as connection:
        connection.execute(update(AdsOrderSales).where(AdsOrderSales.c.biz_date == day).values(
            refund_amount=AdsOrderSales.c.refund_amount + 3))
    # When beat's daily task runs for it, and runs again (a second beat, a redelivered message)
    runs = [subprocess.run([sys.executable, "-c", _DAILY, day.isoformat()], env={**os.environ, **env_of(storage)},
                           capture_output=True, text=True, timeout=120) for _ in range(2)]
    # Then the first run fixed the day and the second did nothing
    assert [r.returncode for r in runs] == [0, 0], runs[0].stderr + runs[1].stderr
    first, second = (json.loads(r.stdout.strip().splitlines()[-1]) for r in runs)
    assert (first["status"], first["remaining"]) == ("fixed", 0) and first["found"] > 0
    assert second is None
    _exact(storage, history)


def test_the_previous_business_day_is_the_business_zones() -> None:
    from zoneinfo import ZoneInfo

    from tasks.scheduled import previous_business_day

    # 20:30 UTC on 26 November is already 27 November in Shanghai
    now = dt.datetime(2026, 11, 26, 20, 30)
    assert previous_business_day(now, ZoneInfo("Asia/Shanghai")) == dt.date(2026, 11, 26)
    assert previous_business_day(now, ZoneInfo("UTC")) == dt.date(2026, 11, 25)


def test_the_order_center_is_compared_with_what_tdc_accepted_and_taken_in_again(
        fresh_storage, redis_client, source_database) -> None:
    # Given a history made in a real source database and loaded by a snapshot, with its payments
    from dataclasses import replace

    from sqlalchemy import create_engine

    from cdc.snapshot import take_snapshot
    from cdc.source import load_checkpoint, source_of
    from demo.source import play_changes, source_metadata
    from flows.registry import ACCEPTED as ORDER_FLOW
    from models.storage import Storage
    from tests.integration.helpers import ingest

    storage = Storage(replace(fresh_storage().settings, cdc_source_url=source_database))
    history = generate_history(30, seed=21, displacement=0, duplicate_rate=0, malformed=0)
    engine = create_engine(source_database)
    tables = source_metadata(ORDER_FLOW)
    with engine.begin() as connection:
        play_changes(connection, tables, history.changes)
    touched: set = set()
    take_snapshot(storage, redis_client, ORDER_FLOW, source_of(source_database), "test-load",
                  lambda keys: touched.update(keys) or 0)
    payments = [line for fmt, line in history.lines if fmt == "business"]
    run_chains(storage, redis_client, touched | ingest(storage, redis_client, ORDER_FLOW, "business", payments).touched)
    _exact(storage, history)
    day = _settled_days(history).most_common(1)[0][0]
    assert reconcile(storage, redis_client, day, day).found == 0
    # When the order center changes three orders of the day and tdc never hears of it
    on_day = sorted(o for o, row in history.expected_orders.items()
                    if row["paid_at"] is not None and row["status"] != 50 and row["paid_at"].date() == day)
    member, quantity, deleted = on_day[:3]
    line = next(i for i in history.expected_items.values() if i["order_id"] == quantity)
    gone = next(i for i in history.expected_items.values() if i["order_id"] == deleted)
    header, items = tables.tables["gqsh_order"], tables.tables["gqsh_order_item"]
    with engine.begin() as connection:
        connection.execute(update(header).where(header.c.order_id == member).values(member_id="M-SRC"))
        connection.execute(update(items).where(items.c.item_id == line["item_id"]).values(
            quantity=items.c.quantity + 1))
        connection.execute(delete(items).where(items.c.item_id == gone["item_id"]))
    engine.dispose()
    found = reconcile(storage, redis_client, day, day)
    # Then the source layer names each changed row and column, and nothing else
    named = {(d.order_id, d.target, d.column) for d in found.diffs if d.layer == "source"}
    assert (member, f"gqsh_order {member}", "member_id") in named
    assert (quantity, f"gqsh_order_item {line['item_id']}", "quantity") in named
    assert (deleted, f"gqsh_order_item {gone['item_id']}", "*") in named
    assert {o for o, _, _ in named} == {member, quantity, deleted}
    assert {d.layer for d in found.diffs} == {"source"}  # tdc's own layers agree with each other
    # When it is reconciled with --fix
    fixed = reconcile(storage, redis_client, day, day, fix=True, wait_seconds=30,
                      submit=lambda keys: run_chains(storage, redis_client, keys))
    # Then the changed rows were taken in again and the wide rows follow the source; the row
    # deleted at the source is reported, not invented away, and tail positions are untouched
    assert {(a.order_id, a.action, a.result) for a in fixed.actions} == {
        (member, "reingest", "done"), (quantity, "reingest", "done"), (deleted, "none", "skipped")}
    assert [(d.order_id, d.column) for d in fixed.diffs if not d.fixed] == [(deleted, "*")]
    assert fixed.remaining == 1 and fixed.status == "different"
    stored = read_wide_orders(storage, [member, quantity])
    assert stored[member][0]["member_id"] == "M-SRC"
    assert stored[quantity][1][line["item_id"]]["quantity"] == line["quantity"] + 1
    assert load_checkpoint(storage, "reconcile") is None
    assert reconcile(storage, redis_client, day, day, layers=["wide", "ads"]).found == 0


def test_the_index_layer_names_missing_and_stale_documents_and_sends_them_again(
        fresh_storage, redis_client, elasticsearch_url, order_index) -> None:
    # Given a processed history whose chains sent every document to the index
    from dataclasses import replace

    from models.storage import Storage
    from search.outbox import due_orders, send

    storage = Storage(replace(fresh_storage().settings, es_url=elasticsearch_url, es_alias=order_index.alias))
    order_index.init()
    history = generate_history(30, seed=51, malformed=0)
    process_history(storage, redis_client, history)
    send(storage, order_index, due_orders(storage, limit=1000))
    order_index.refresh()
    day = _settled_days(history).most_common(1)[0][0]
    assert reconcile(storage, redis_client, day, day, layers=["index"]).found == 0
    # When one settled order's document is deleted and another's wide row moves on without its
    # document (a lost outbox entry)
    on_day = sorted(o for o, row in history.expected_orders.items()
                    if row["paid_at"] is not None and row["status"] != 50 and row["paid_at"].date() == day)
    deleted, behind = on_day[:2]
    order_index.client.delete(index=order_index.alias, id=deleted, refresh=True)
    with storage.order_transaction(behind) as connection:
        connection.execute(update(DwdOrder).where(DwdOrder.c.order_id == behind).values(version=DwdOrder.c.version + 1))
    version = read_wide_orders(storage, [behind])[behind][0]["version"]
    found = reconcile(storage, redis_client, day, day, layers=["index"])
    fixed = reconcile(storage, redis_client, day, day, layers=["index"], fix=True, submit=lambda keys: None)
    # Then both are named, the fix sends both again, and the index is whole
    assert {(d.order_id, d.column, d.expected, d.found) for d in found.diffs} == {
        (deleted, "*", str(read_wide_orders(storage, [deleted])[deleted][0]["version"]), None),
        (behind, "version", str(version), str(version - 1))}
    assert (fixed.status, fixed.remaining) == ("fixed", 0)
    assert {(a.order_id, a.action, a.result) for a in fixed.actions} == {(deleted, "resend", "done"),
                                                                         (behind, "resend", "done")}
    assert order_index.versions([deleted, behind])[behind] == version
