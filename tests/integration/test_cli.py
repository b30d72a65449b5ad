"""``tdc order show``, ``quarantine list``, ``ads rebuild`` and ``dims load`` as a user runs them, on the
real MariaDB shards and PostgreSQL warehouse."""

import datetime as dt
import json
import uuid

import pytest
from sqlalchemy import insert, text

from demo.history import generate_history
from dimensions.lookup import dimension_key
from flows.registry import ACCEPTED as ORDER_FLOW
from models.warehouse import OFFLINE_DIMENSIONS
from tests.conftest import env_of
from tests.factories import T0, OrderHeaderFactory, OrderItemFactory, PaymentWriteFactory, business, canal
from tests.integration.helpers import ingest, process_history, run_chains, run_tdc, tdc_output
from warehouse.aggregates import read_aggregates

pytestmark = pytest.mark.integration




def test_order_show_tells_an_order_that_waited_for_its_predecessor(service_env, storage, redis_client) -> None:
    # Given a payment and the paid header that arrive before the order line SUBMIT needs
    order_id = f"W{uuid.uuid4().hex[:12]}"
    header = OrderHeaderFactory(order_id=order_id)
    paid = {**header, "status": 20, "paid_at": T0 + dt.timedelta(minutes=3)}
    early = ingest(storage, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order", header, sequence=1),
        canal("gqsh_order", paid, kind="update", before=header, at=paid["paid_at"], sequence=3)])
    early.touched |= ingest(storage, redis_client, ORDER_FLOW, "business",
                            [business(PaymentWriteFactory(order_id=order_id))]).touched
    run_chains(storage, redis_client, early.touched)
    # When the line arrives
    late = ingest(storage, redis_client, ORDER_FLOW, "canal",
                  [canal("gqsh_order_item", OrderItemFactory(order_id=order_id), sequence=2)])
    run_chains(storage, redis_client, late.touched)
    # Then `tdc order show` shows both tasks done and what each waited for
    shown = tdc_output(service_env, "order", "show", order_id)
    assert "SUBMIT    DONE" in shown and "PAY       DONE" in shown
    assert "attempt 1: 0 of 1 gqsh_order_item rows have arrived" in shown
    assert "attempt 1: waiting for SUBMIT" in shown
    as_json = json.loads(tdc_output(service_env, "order", "show", order_id, "--json"))
    assert as_json["dwd_order"]["status"] == 20
    assert {m["source"] for m in as_json["metadata"]} == {"gqsh_order", "gqsh_order_item", "payment"}


def test_quarantine_list_shows_each_bad_line_with_its_reason(service_env, storage, redis_client) -> None:
    marker = uuid.uuid4().hex[:8]
    bad_time = OrderHeaderFactory(order_id=f"Q{marker}", created_at="soon")
    report = ingest(storage, redis_client, ORDER_FLOW, "canal", [f'{{"broken {marker}"', canal("gqsh_order", bad_time)])
    assert report.quarantined == 2
    listing = tdc_output(service_env, "quarantine", "list", "--limit", "500")
    assert f"Q{marker}" in listing and "gqsh_order column 'created_at': 'soon' is not a time" in listing
    assert "invalid JSON" in listing and marker in listing


def test_order_show_tells_a_refunded_order(service_env, storage, redis_client) -> None:
    # Given a processed history with refunds
    history = generate_history(40, seed=8)
    process_history(storage, redis_client, history)
    order_id, expected = next((k, v) for k, v in history.expected_orders.items() if v["refund_count"] > 0)
    # When a user asks about one refunded order
    shown = tdc_output(service_env, "order", "show", order_id)
    # Then the refund task, its after-sales input and the refunded amounts are all there
    assert "REFUND    DONE" in shown
    assert "gqsh_order_after_sales " in shown and "gqsh_order_after_sales_dtl" in shown
    assert f"refund_amount    {expected['refund_amount']}" in shown
    assert f"refund_count     {expected['refund_count']}" in shown


def test_ads_rebuild_restores_a_lost_day_exactly(fresh_storage, redis_client) -> None:
    # Given aggregates built incrementally, then one day's rows lost from the warehouse
    storage = fresh_storage("postgresql")
    history = generate_history(40, seed=12)
    process_history(storage, redis_client, history)
    with storage.dws_engine.connect() as connection:
        before = read_aggregates(connection)
    day = max({key[0] for _, key in before}, key=lambda d: sum(1 for _, k in before if k[0] == d))
    with storage.dws_engine.begin() as connection:
        for table in ("ads_order_sales", "ads_order_item_sales", "ads_order_sales_sum"):
            connection.execute(text(f"DELETE FROM {table} WHERE biz_date = :day"), {"day": day})
    # When a user rebuilds that day, then every day
    one = tdc_output(env_of(storage), "ads", "rebuild", "--date", day.isoformat())
    every = tdc_output(env_of(storage), "ads", "rebuild")
    # Then the tables are exactly what the incremental path had produced
    with storage.dws_engine.connect() as connection:
        assert read_aggregates(connection) == before
    assert "rebuilt 1 days" in one
    assert f"rebuilt {len({key[0] for _, key in before})} days" in every
    refused = run_tdc(env_of(storage), "ads", "rebuild", "--date", "yesterday")
    assert refused.returncode == 2 and "not a date" in refused.stderr


def test_dims_load_reports_what_it_loaded_and_refuses_an_unknown_dimension(fresh_storage, redis_client) -> None:
    storage = fresh_storage("postgresql")
    table = OFFLINE_DIMENSIONS["sku"][1]
    tag = uuid.uuid4().hex[:8]
    with storage.dws_engine.begin() as connection:
        connection.execute(insert(table), [{"sku_id": f"K{tag}{n}", "sku_name": f"sku {n}", "category": "tea",
                                            "unit": "box", "updated_at": dt.datetime(2026, 11, 20)}
                                           for n in range(3)])
    out = tdc_output(env_of(storage), "dims", "load")
    assert "sku: 3 rows in dim_product_sku, 3 newer than Redis and loaded" in out
    assert "store: 0 rows in dim_store_shop" in out
    assert redis_client.hget(dimension_key("sku", f"K{tag}1"), "sku_name") == "sku 1"
    refused = run_tdc(env_of(storage), "dims", "load", "--dimension", "colour")
    assert refused.returncode == 2 and "no offline dimension 'colour'" in refused.stderr


def test_ingest_with_redis_down_keeps_its_input_for_the_rescan(service_env, storage, tmp_path) -> None:
    from intake.receiver import utcnow
    from reliability.rescan import due_tasks

    # Given a payment, and a Redis nobody answers at
    order_id = f"R{uuid.uuid4().hex[:12]}"
    path = tmp_path / "pay.jsonl"
    path.write_text(business(PaymentWriteFactory(order_id=order_id)) + "\n")
    # When it is ingested
    result = run_tdc({**service_env, "TDC_REDIS_URL": "redis://127.0.0.1:1/0"}, "ingest", "--format", "business",
                     str(path))
    # Then the input is committed and acknowledged, nothing was submitted, and the task is due for the rescan
    assert result.returncode == 0, result.stderr
    assert "1 accepted" in result.stdout and "0 tasks submitted" in result.stdout
    assert (order_id, "PAY") in due_tasks(storage, 0, 1, utcnow(), 1000)


def test_bench_intake_gives_every_line_a_verdict_and_prints_its_rate(service_env) -> None:
    result = run_tdc(service_env, "bench", "intake", "--orders", "30")
    assert result.returncode == 0, result.stderr
    assert "SQL statements per line" in result.stdout
    assert result.stdout.strip().splitlines()[-1].startswith("intake: ")
