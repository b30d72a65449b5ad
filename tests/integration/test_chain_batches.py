"""Set-based chain steps: one transaction per database for a batch, an order's due operations in
one chain in state-machine order, a bad order parked without failing its neighbours, and real
processes draining the same orders at once."""

import datetime as dt
import json
import multiprocessing
import os

import pytest
from sqlalchemy import select

from chain.steps import aggregate_orders, check_tasks, finish_tasks, merge_orders
from chain.task_state import load_task
from chain.wide_rows import read_orders
from demo.check import ORDER_ADS, aggregate_differences, expected_aggregates, matching_orders
from demo.history import generate_history
from demo.tables import ONLINE as DEFAULT_SCHEMA
from dimensions.lookup import RedisDimensions
from flows.registry import ACCEPTED as ORDER_FLOW
from models.sharded import TaskStatus
from reliability.leases import OrderLeases
from tests.conftest import env_of, new_order_id
from tests.factories import OrderHeaderFactory, OrderItemFactory, PaymentWriteFactory, business, canal
from tests.integration.helpers import ingest, leased_keys, run_chains
from warehouse.aggregates import read_aggregates

OrderSnapshot = DEFAULT_SCHEMA.snapshots

pytestmark = pytest.mark.integration


def _task(storage, order_id: str, operation: str):  # type: ignore[no-untyped-def]
    with storage.engine_for_order(order_id).connect() as connection:
        return load_task(connection, storage.shard_of(order_id), order_id, operation)


def _paid_order_lines(order_id: str, store_id: str = "S001") -> tuple[list[str], list[str]]:
    """Change lines of an order paid and delivered, and its payment write."""
    header = OrderHeaderFactory(order_id=order_id, store_id=store_id, status=30,
                                paid_at=dt.datetime(2026, 11, 2, 9, 40))
    lines = [canal("gqsh_order", header), canal("gqsh_order_item", OrderItemFactory(order_id=order_id))]
    return lines, [business(PaymentWriteFactory(order_id=order_id))]


def _one_chain(storage, client, keys, dims=None):  # type: ignore[no-untyped-def]
    """One pass of check -> merge -> aggregate -> finish over ``keys``: what it finished and what it
    hands on."""
    leases, settings = OrderLeases(client, storage.settings), storage.settings
    ready, again = check_tasks(storage, leases, settings, leased_keys(leases, keys))
    merged = merge_orders(storage, leases, settings, dims or RedisDimensions(client), ready)
    done = aggregate_orders(storage, leases, settings, merged)
    return done, again + finish_tasks(storage, leases, done)


def test_an_orders_due_operations_run_in_one_chain_in_state_machine_order(storage, redis_client) -> None:
    # Given an order whose SUBMIT, PAY and DELIVER data have all arrived before any chain ran
    order_id = new_order_id("OC")
    changes, payment = _paid_order_lines(order_id)
    touched = ingest(storage, redis_client, ORDER_FLOW, "canal", changes).touched
    touched |= ingest(storage, redis_client, ORDER_FLOW, "business", payment).touched
    assert {op for _, op in touched} == {"SUBMIT", "PAY", "DELIVER"}
    # When one chain runs for its keys, given in any order
    done, again = _one_chain(storage, redis_client, sorted(touched, key=lambda k: k[1], reverse=True))
    # Then all three finished in that one chain, and nothing was left to wake
    assert [k["operation_type"] for k in done] == ["SUBMIT", "PAY", "DELIVER"]
    assert again == []
    assert {_task(storage, order_id, op).status for op in ("SUBMIT", "PAY", "DELIVER")} == {TaskStatus.DONE}
    # And each operation's snapshot is the row as that operation left it, one version each
    with storage.engine_for_order(order_id).connect() as connection:
        snapshots = {s.operation_type: json.loads(s.order_row) for s in connection.execute(
            select(OrderSnapshot).where(OrderSnapshot.c.order_id == order_id))}
    assert [(snapshots[op]["status"], snapshots[op]["version"], snapshots[op]["last_operation"])
            for op in ("SUBMIT", "PAY", "DELIVER")] == [(10, 1, "SUBMIT"), (20, 2, "PAY"), (30, 3, "DELIVER")]
    assert snapshots["SUBMIT"]["pay_txn_id"] is None and snapshots["PAY"]["pay_txn_id"] is not None
    row, _ = read_orders(storage, [order_id])
    assert (row[order_id]["status"], row[order_id]["version"]) == (30, 3)


def test_a_successor_waits_when_its_predecessor_is_not_ready_in_the_same_chain(storage, redis_client) -> None:
    # Given an order whose header says delivered but whose item row has not arrived
    order_id = new_order_id("OW")
    changes, payment = _paid_order_lines(order_id)
    touched = ingest(storage, redis_client, ORDER_FLOW, "canal", changes[:1]).touched
    touched |= ingest(storage, redis_client, ORDER_FLOW, "business", payment).touched
    # When a chain runs for its keys
    done, _ = _one_chain(storage, redis_client, touched)
    # Then nothing ran: SUBMIT waits for its item, the others wait for their predecessors
    assert done == []
    reasons = {op: _task(storage, order_id, op).last_error for op in ("SUBMIT", "PAY", "DELIVER")}
    assert reasons == {"SUBMIT": "0 of 1 gqsh_order_item rows have arrived", "PAY": "waiting for SUBMIT",
                       "DELIVER": "waiting for PAY"}


class FailingFor:
    """Dimensions that fail for one store, as a broken look-up would."""

    def __init__(self, store_id: str):
        self.store_id = store_id

    def get(self, dimension, key):  # type: ignore[no-untyped-def]
        if dimension == "store" and key == self.store_id:
            raise ValueError(f"store {key} cannot be read")
        return {}


def test_a_bad_order_in_a_merge_batch_is_parked_and_its_neighbours_commit(storage, redis_client) -> None:
    # Given a batch of orders, one of which cannot be merged
    ids = [new_order_id("OB") for _ in range(6)]
    touched: set = set()
    for n, order_id in enumerate(ids):
        changes, payment = _paid_order_lines(order_id, store_id="BROKEN" if n == 2 else "S001")
        touched |= ingest(storage, redis_client, ORDER_FLOW, "canal", changes).touched
        touched |= ingest(storage, redis_client, ORDER_FLOW, "business", payment).touched
    # When one chain runs for the whole batch
    done, _ = _one_chain(storage, redis_client, touched, FailingFor("BROKEN"))
    # Then every other order finished, and the bad one's tasks wait with the reason
    bad = ids[2]
    assert {k["order_id"] for k in done} == set(ids) - {bad}
    for order_id in set(ids) - {bad}:
        assert _task(storage, order_id, "DELIVER").status == TaskStatus.DONE
    for operation in ("SUBMIT", "PAY", "DELIVER"):
        task = _task(storage, bad, operation)
        assert task.status == TaskStatus.WAITING
        assert "store BROKEN cannot be read" in task.last_error
    rows, _ = read_orders(storage, ids)
    assert bad not in rows and len(rows) == 5


def _drain(env: dict[str, str], keys: list[tuple[str, str]]) -> None:
    os.environ.update(env)
    from models.redis_store import get_redis
    from models.storage import get_storage

    run_chains(get_storage(), get_redis(), keys, rounds=200)


@pytest.mark.parametrize("driver", ["pymysql", "mysqldb"])
def test_processes_draining_the_same_orders_at_once_leave_exact_outputs(fresh_storage, redis_client, driver) -> None:
    # Given a history ingested with no chain run yet (shard databases through either driver)
    storage = fresh_storage(driver=driver)
    history = generate_history(40, seed=11)
    touched: set = set()
    for fmt in dict.fromkeys(f for f, _ in history.lines):
        touched |= ingest(storage, redis_client, ORDER_FLOW, fmt, [line for f, line in history.lines
                                                                   if f == fmt]).touched
    # When three processes run chains for all of its tasks at the same time, in different orders
    keys = sorted(touched)
    context = multiprocessing.get_context("spawn")
    env = env_of(storage) | {"TDC_RETRY_BASE_SECONDS": "0.2"}
    drains = [context.Process(target=_drain, args=(env, order)) for order in (keys, keys[::-1], keys[1::2] + keys)]
    for process in drains:
        process.start()
    for process in drains:
        process.join(300)
    assert [process.exitcode for process in drains] == [0, 0, 0]
    run_chains(storage, redis_client, [], rounds=200)  # what a held order postponed, as the rescan does
    # Then every wide row and order line is what the history says
    orders, items = read_orders(storage, history.order_ids)
    assert matching_orders(history.expected_orders, history.expected_items, orders, items) == len(
        history.expected_orders)
    # And the ADS tables hold every paid order once
    with storage.dws_engine.connect() as connection:
        after = read_aggregates(connection, tables=ORDER_ADS)
    assert aggregate_differences(expected_aggregates(history.expected_orders, history.expected_items), {}, after) == []


def test_a_status_change_runs_only_the_operation_it_records(storage, redis_client) -> None:
    # Given a paid order whose chains have all finished
    order_id = new_order_id("OS")
    header = OrderHeaderFactory(order_id=order_id, status=20, paid_at=dt.datetime(2026, 11, 2, 9, 40))
    touched = ingest(storage, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order", header, sequence=1), canal("gqsh_order_item", OrderItemFactory(order_id=order_id),
                                                       sequence=2)]).touched
    touched |= ingest(storage, redis_client, ORDER_FLOW, "business", [business(PaymentWriteFactory(
        order_id=order_id))]).touched
    run_chains(storage, redis_client, touched)
    done_versions = {op: _task(storage, order_id, op).done_version for op in ("SUBMIT", "PAY")}
    # When the source delivers it (the header row under SUBMIT and PAY changes only its status)
    delivered = {**header, "status": 30}
    report = ingest(storage, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order", delivered, kind="update", before=header, sequence=3)])
    # Then only DELIVER is run; SUBMIT and PAY keep the newer header without running again
    assert report.touched == {(order_id, "DELIVER")}
    assert report.accepted == 1
    assert {op: (_task(storage, order_id, op).status, _task(storage, order_id, op).done_version)
            for op in ("SUBMIT", "PAY")} == {op: (TaskStatus.DONE, v) for op, v in done_versions.items()}
    run_chains(storage, redis_client, report.touched)
    row, _ = read_orders(storage, [order_id])
    assert row[order_id]["status"] == 30
    # And a change SUBMIT reads (the member) runs SUBMIT alone, and reaches the wide row
    moved = {**delivered, "member_id": "M00777"}
    report = ingest(storage, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order", moved, kind="update", before=delivered, sequence=4)])
    assert report.touched == {(order_id, "SUBMIT")}
    run_chains(storage, redis_client, report.touched)
    row, _ = read_orders(storage, [order_id])
    assert (row[order_id]["member_id"], row[order_id]["status"]) == ("M00777", 30)


def test_a_successor_waits_when_newer_data_stops_its_predecessor_from_finishing(storage, redis_client) -> None:
    # Given an order whose SUBMIT and PAY passed their check and merged in one chain
    order_id = new_order_id("OP")
    header = OrderHeaderFactory(order_id=order_id, status=20, paid_at=dt.datetime(2026, 11, 2, 9, 40))
    item = OrderItemFactory(order_id=order_id)
    touched = ingest(storage, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order", header, sequence=1), canal("gqsh_order_item", item, sequence=2)]).touched
    touched |= ingest(storage, redis_client, ORDER_FLOW, "business", [business(PaymentWriteFactory(
        order_id=order_id))]).touched
    leases, settings = OrderLeases(redis_client, storage.settings), storage.settings
    ready, _ = check_tasks(storage, leases, settings, leased_keys(leases, touched))
    merged = merge_orders(storage, leases, settings, RedisDimensions(redis_client), ready)
    done = aggregate_orders(storage, leases, settings, merged)
    assert [k["operation_type"] for k in done] == ["SUBMIT", "PAY"]
    # When a corrected item arrives before the chain finishes (SUBMIT gets a newer version)
    ingest(storage, redis_client, ORDER_FLOW, "canal", [canal(
        "gqsh_order_item", {**item, "quantity": 2}, kind="update", before=item, sequence=3)])
    again = finish_tasks(storage, leases, done)
    # Then PAY is not DONE ahead of its predecessor: it waits for SUBMIT, which runs again
    assert (_task(storage, order_id, "SUBMIT").status, _task(storage, order_id, "PAY").status) == (
        TaskStatus.PENDING, TaskStatus.WAITING)
    assert _task(storage, order_id, "PAY").last_error == "waiting for SUBMIT"
    assert (order_id, "SUBMIT") in again
    # And once SUBMIT has finished, PAY is woken and both end DONE with the new quantity
    run_chains(storage, redis_client, again)
    assert {_task(storage, order_id, op).status for op in ("SUBMIT", "PAY")} == {TaskStatus.DONE}
    _, items = read_orders(storage, [order_id])
    assert items[item["item_id"]]["quantity"] == 2
