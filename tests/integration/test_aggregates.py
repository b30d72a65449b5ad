"""ADS aggregates on real PostgreSQL and MariaDB warehouses: the incremental, retract-correct
path equals a recomputation from the wide rows and the generator's own sums, through
displaced, duplicated and corrected input, refunds, cancellations, replays and re-runs."""

import datetime as dt
import json

import pytest
from sqlalchemy import update

from chain.steps import aggregate_orders
from chain.task_state import load_task
from demo.check import differences, expected_aggregates
from demo.history import generate_history
from flows.registry import ACCEPTED as ORDER_FLOW
from models.sharded import TaskStatus, task_table
from models.warehouse import LEDGERS
from reliability.leases import OrderLeases
from tests.integration.helpers import ingest, leased_keys, process_history, run_chains
from warehouse.aggregates import apply_orders, days_to_rebuild, read_aggregates, rebuild_day, wide_state
from warehouse.contributions import aggregate

AdsOrderLedger = LEDGERS["gqsh"]

pytestmark = pytest.mark.integration

WAREHOUSES = ["postgresql", "mariadb"]


def _keyed(cells):  # type: ignore[no-untyped-def]
    """Cells as rows keyed by "table key", for differences()."""
    return {f"{table} {key}": values for (table, key), values in cells.items()}


def _ads(storage):  # type: ignore[no-untyped-def]
    with storage.dws_engine.connect() as connection:
        return read_aggregates(connection)


def _recomputed(storage, order_ids):  # type: ignore[no-untyped-def]
    return aggregate(contribution for _, contribution in wide_state(storage, order_ids).values())


@pytest.mark.parametrize("warehouse", WAREHOUSES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_incremental_aggregates_equal_a_recomputation(fresh_storage, redis_client, warehouse: str,
                                                      seed: int) -> None:
    # Given a shuffled, duplicated history with corrections, refunds and cancellations
    storage = fresh_storage(warehouse)
    history = generate_history(40, seed=seed, displacement=80, duplicate_rate=0.1)
    # When it is processed in small batches, then replayed, and every order's step re-run
    for start in range(0, len(history.lines), 60):
        batch = history.lines[start : start + 60]
        for fmt in ("business", "canal"):
            part = ingest(storage, redis_client, ORDER_FLOW, fmt, [line for f, line in batch if f == fmt])
            run_chains(storage, redis_client, part.touched)
    run_chains(storage, redis_client, [])
    for fmt in ("canal", "business"):
        replay = ingest(storage, redis_client, ORDER_FLOW, fmt, [line for f, line in history.lines if f == fmt])
        assert replay.touched == set()
    rerun = apply_orders(storage, history.order_ids)
    # Then the aggregates equal the generator's sums and a recomputation from the wide rows
    expected = _keyed(expected_aggregates(history.expected_orders, history.expected_items))
    assert {table for table, _ in (key.split(" ", 1) for key in expected)} == {
        "ads_order_sales", "ads_order_item_sales", "ads_order_sales_sum"}
    assert differences(expected, _keyed(_ads(storage)), "ads") == []
    assert _ads(storage) == _recomputed(storage, history.order_ids)
    assert (rerun.applied, rerun.current) == (0, len(history.order_ids))
    # And rebuilding every day from the wide rows gives the same tables
    before = _ads(storage)
    days = days_to_rebuild(storage)
    for day in days:
        rebuild_day(storage, day)
    assert _ads(storage) == before
    assert len(days) >= 5


@pytest.mark.parametrize("warehouse", WAREHOUSES)
def test_a_corrected_payment_moves_the_order_to_its_new_day(fresh_storage, redis_client, warehouse: str) -> None:
    # Given a paid order counted on 1 November
    storage = fresh_storage(warehouse)
    history = generate_history(30, seed=5)
    process_history(storage, redis_client, history)
    paid = next(o for o in history.expected_orders.values() if o["paid_at"] and o["status"] != 50)
    payment = next(json.loads(line) for f, line in history.lines
                   if f == "business" and json.loads(line).get("order_id") == paid["order_id"])
    old_day = paid["paid_at"].date()
    new_paid_at = paid["paid_at"] + dt.timedelta(days=3)
    # When the payment system corrects the payment time (same transaction, later report)
    payment["payload"]["paid_at"] = new_paid_at.isoformat(timespec="milliseconds")
    payment["occurred_at"] = (paid["paid_at"] + dt.timedelta(seconds=1)).isoformat(timespec="milliseconds")
    run_chains(storage, redis_client,
               ingest(storage, redis_client, ORDER_FLOW, "business", [json.dumps(payment)]).touched)
    # Then it is taken back from the old day and counted on the new one, once
    history.expected_orders[paid["order_id"]]["paid_at"] = new_paid_at
    expected = expected_aggregates(history.expected_orders, history.expected_items)
    ads = _ads(storage)
    assert differences(_keyed(expected), _keyed(ads), "ads") == []
    assert ads == _recomputed(storage, history.order_ids)
    assert expected[("ads_order_sales_sum", (new_paid_at.date(),))]["order_count"] >= 1
    assert old_day != new_paid_at.date()


def test_an_order_that_cannot_be_counted_is_parked_alone(fresh_storage, redis_client) -> None:
    # Given three counted orders, one of which has a damaged ledger entry and a newer wide row
    storage = fresh_storage("postgresql")
    history = generate_history(3, seed=9, malformed=0)
    process_history(storage, redis_client, history)
    ids = history.order_ids
    bad = ids[0]
    with storage.dws_engine.begin() as connection:
        connection.execute(update(AdsOrderLedger).where(AdsOrderLedger.c.order_id == bad).values(
            contribution="{damaged", wide_version=0))
    for order_id in ids:  # their chains are running, as when the aggregate step is reached
        tasks = task_table(storage.shard_of(order_id))
        with storage.order_transaction(order_id) as connection:
            connection.execute(update(tasks).where((tasks.c.order_id == order_id)
                                                   & (tasks.c.operation_type == "SUBMIT")).values(status="RUNNING"))
    # When the aggregate step runs for the batch
    leases = OrderLeases(redis_client, storage.settings)
    keys = leased_keys(leases, [(o, "SUBMIT") for o in ids])
    done = aggregate_orders(storage, leases, storage.settings, keys)
    # Then the others went on and the bad one waits with the reason
    assert [k["order_id"] for k in done] == ids[1:]
    with storage.engine_for_order(bad).connect() as connection:
        task = load_task(connection, storage.shard_of(bad), bad, "SUBMIT")
    assert task is not None and task.status == TaskStatus.WAITING
    assert "JSONDecodeError" in task.last_error
