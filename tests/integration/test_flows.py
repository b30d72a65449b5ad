"""The till sales (``pos``) and Kingdee sales orders (``sal_order``) flows through the in-process
chain on real MariaDB shards and a PostgreSQL warehouse, beside the online orders: exact wide
rows and ADS from their own generators' models, retract-correct ADS under the day rebuild."""

import dataclasses
import json

import pytest
from sqlalchemy import and_, delete, func, select, update

from chain.lineage import order_lineage
from chain.wide_rows import read_wide_rows
from demo.flow_run import flow_problems
from demo.flows import pos, sal_order
from demo.history import generate_history
from flows.declared import BY_NAME
from flows.registry import combine, routing
from models.changelog import image
from models.storage import Storage
from models.warehouse import ADS_TABLES, LEDGERS
from reconcile.ads import compare_ads
from streams.events import order_events
from streams.outbox import change_message, pending_changes
from tests.integration.helpers import ingest, run_chains
from warehouse.aggregates import days_to_rebuild, rebuild_day

pytestmark = pytest.mark.integration

#: The three flows' source databases.
SOURCES = "gqsh,gqsh_pos,jd_erp"
#: What intake routes when TDC_FLOWS names all three.
THREE = combine(tuple(routing(BY_NAME[name]) for name in ("gqsh", "pos", "sal_order")))


def _process(storage, client, lines: list[tuple[str, str]]) -> None:  # type: ignore[no-untyped-def]
    touched: set = set()
    for fmt in dict.fromkeys(f for f, _ in lines):
        touched |= set(ingest(storage, client, THREE, fmt, [line for f, line in lines if f == fmt]).touched)
    run_chains(storage, client, touched)


def test_pos_and_kingdee_histories_interleaved_with_online_orders_come_out_exact(fresh_storage, redis_client) -> None:
    # Given a fresh warehouse and three flows' histories, interleaved line by line
    storage = fresh_storage("postgresql", TDC_SOURCE_DATABASES=SOURCES)
    sales, documents = pos.generate(60, seed=41), sal_order.generate(40, seed=42, input_format="debezium")
    orders = generate_history(40, seed=43)
    mixed = [line for trio in zip(sales.lines, documents.lines, orders.lines, strict=False) for line in trio]
    mixed += sales.lines[len(mixed) // 3:] + documents.lines[len(mixed) // 3:] + orders.lines[len(mixed) // 3:]
    # When they are ingested together and the chains run
    _process(storage, redis_client, mixed)
    # Then each flow's wide rows and ADS cells are exactly what its model says
    assert flow_problems(sales, {}, storage) == []
    assert flow_problems(documents, {}, storage) == []
    # And an entity's lineage shows its own flow's wide tables, snapshots and tasks
    key = next(iter(sales.expected["dwd_gqsh_pos_order_t_order_info"]))
    lineage = order_lineage(storage, f"pos:{key}")
    assert (lineage["flow"], lineage["root_table"], lineage["child_table"]) == (
        "pos", "dwd_gqsh_pos_order_t_order_info", "dwd_gqsh_pos_order_t_order_item")
    assert lineage["dwd_order"]["order_no"] == key and lineage["dwd_order_item"]
    assert {s["operation_type"] for s in lineage["snapshots"]} >= {"SUBMIT"}
    assert {t["operation_type"] for t in lineage["tasks"]} <= {"SUBMIT", "PAY", "REFUND", "VOID"}
    # And no flow wrote into another's ledger
    with storage.dws_engine.connect() as connection:
        prefixes = {name: set(connection.execute(select(func.substr(table.c.order_id, 1, 4)).distinct()).scalars())
                    for name, table in LEDGERS.items() if name in ("pos", "sal_order")}
    assert prefixes == {"pos": {"pos:"}, "sal_order": {"sal_"}}


def test_a_days_rebuild_of_pos_aggregates_gives_the_same_cells(fresh_storage, redis_client) -> None:
    # Given a processed pos history
    storage = fresh_storage("mariadb", TDC_SOURCE_DATABASES=SOURCES)
    sales = pos.generate(50, seed=44)
    _process(storage, redis_client, sales.lines)
    assert flow_problems(sales, {}, storage) == []
    # When a day's cells are lost and every day is rebuilt
    day = min(key[0] for table, key in sales.expected_ads)
    with storage.dws_engine.begin() as connection:
        connection.execute(delete(ADS_TABLES["ads_pos_order_sales"]).where(
            ADS_TABLES["ads_pos_order_sales"].c.biz_date == day))
    assert flow_problems(sales, {}, storage) != []
    for each in days_to_rebuild(storage):
        rebuild_day(storage, each)
    # Then the aggregates are exact again, and applying the orders again changes nothing
    assert flow_problems(sales, {}, storage) == []
    run_chains(storage, redis_client, [])
    assert flow_problems(sales, {}, storage) == []


def test_the_changelog_carries_a_till_sales_changes_with_its_own_tables_images(fresh_storage, redis_client) -> None:
    # Given a deployment with a changelog sink, and a processed pos history
    base = fresh_storage("postgresql", TDC_SOURCE_DATABASES=SOURCES)
    storage = Storage(dataclasses.replace(base.settings, changelog_url="redis://127.0.0.1:6379/9?stream=x"))
    sales = pos.generate(20, seed=45)
    _process(storage, redis_client, sales.lines)
    # Then each till sale's last change is in the outbox, named for its flow, its after-image the
    # sale's wide rows as they are now, and it makes no event (pos declares none)
    changes = [c for database in storage.distinct_databases()
               for c in pending_changes(storage, database, "changelog", 10_000)]
    last = {change.order_id: change for change in sorted(changes, key=lambda c: (c.order_id, c.version))}
    assert set(last) == {f"pos:{key}" for key in sales.expected["dwd_gqsh_pos_order_t_order_info"]}
    for order_id, change in last.items():
        with storage.read_engine_for_order(order_id).connect() as connection:
            row, lines = read_wide_rows(connection, order_id)
        assert change.after == image(row, lines.values(), "pos"), order_id
        assert json.loads(change_message(change).body)["flow"] == "pos"
        # (its kind, the AMQP routing key, names the till sale's table: a consumer binds to one flow)
        assert change_message(change).topic == "dwd_gqsh_pos_order_t_order_info"
        assert order_events(change) == []
    storage.dispose()


def test_reconciliation_recomputes_every_flows_ads_from_its_wide_rows(fresh_storage, redis_client) -> None:
    # Given processed till sales and Kingdee orders
    storage = fresh_storage("postgresql", TDC_SOURCE_DATABASES=SOURCES)
    sales, documents = pos.generate(40, seed=46), sal_order.generate(30, seed=47)
    _process(storage, redis_client, sales.lines + documents.lines)
    days = sorted({key[0] for _, key in [*sales.expected_ads, *documents.expected_ads]})
    # Then the ADS layer finds nothing to say about them
    assert compare_ads(storage, days[0], days[-1]).diffs == []
    # When a till cell and a Kingdee cell are damaged
    key = next(key for table, key in sales.expected_ads if table == "ads_pos_order_sales")
    kingdee_key = next(key for table, key in documents.expected_ads if table == "ads_jd_order_sales")
    with storage.dws_engine.begin() as connection:
        for name, columns, cell, change in (
                ("ads_pos_order_sales", ("biz_date", "store_code"), key, {"pay_amount": 1}),
                ("ads_jd_order_sales", ("biz_date", "store_id", "FMATERIALID", "FSTOCKID"), kingdee_key, {"qty": 2})):
            table = ADS_TABLES[name]
            connection.execute(update(table).where(and_(*(table.c[c] == v for c, v in zip(columns, cell, strict=True))))
                               .values({m: table.c[m] + by for m, by in change.items()}))
    # Then the layer names both cells and measures
    found = {(d.target.split(" ")[0], d.column) for d in compare_ads(storage, days[0], days[-1]).diffs}
    assert found == {("ads_pos_order_sales", "pay_amount"), ("ads_jd_order_sales", "qty")}
