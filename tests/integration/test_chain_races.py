"""Races in the chain found in review, each pinned by a test: a PAY and a CANCEL of one order
never pass side by side, a retried step counts no healthy task's attempt twice, and a backlog
of held rows never hides an orphaned task from the rescan."""

import datetime as dt
import uuid

import pytest
from sqlalchemy import event, update
from sqlalchemy.exc import OperationalError

from chain.lineage import order_lineage
from chain.steps import aggregate_orders, check_tasks, finish_tasks, merge_orders
from chain.task_state import load_task
from chain.wide_rows import read_orders
from dimensions.lookup import RedisDimensions
from flows.registry import ACCEPTED as ORDER_FLOW
from intake.receiver import bump_task, utcnow
from models.sharded import TaskStatus, task_table
from reliability.leases import OrderLeases
from reliability.rescan import due_tasks, postpone
from tests.conftest import new_order_id
from tests.factories import T0, OrderHeaderFactory, OrderItemFactory, PaymentWriteFactory, business, canal
from tests.integration.helpers import ingest, leased_keys, run_chains

pytestmark = pytest.mark.integration


def _task(storage, order_id: str, operation: str):  # type: ignore[no-untyped-def]
    with storage.engine_for_order(order_id).connect() as connection:
        return load_task(connection, storage.shard_of(order_id), order_id, operation)


def test_a_cancel_cannot_pass_while_the_orders_pay_is_running(storage, redis_client) -> None:
    # Given a submitted order whose PAY chain has passed its check and is running
    order_id = f"PC{uuid.uuid4().hex[:12]}"
    header = OrderHeaderFactory(order_id=order_id)
    paid = {**header, "status": 20, "paid_at": T0 + dt.timedelta(minutes=5)}
    run_chains(storage, redis_client, ingest(storage, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order", header, sequence=1), canal("gqsh_order_item", OrderItemFactory(order_id=order_id),
                                                       sequence=2)]).touched)
    run_chains(storage, redis_client, ingest(storage, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order", paid, kind="update", before=header, at=paid["paid_at"], sequence=3)]).touched)
    touched = ingest(storage, redis_client, ORDER_FLOW, "business",
                     [business(PaymentWriteFactory(order_id=order_id))]).touched
    leases, settings = OrderLeases(redis_client, storage.settings), storage.settings
    ready, _ = check_tasks(storage, leases, settings, leased_keys(leases, touched))
    assert [k["operation_type"] for k in ready] == ["PAY"]
    # When the source says it was cancelled while that chain runs
    cancelled = ingest(storage, redis_client, ORDER_FLOW, "canal", [canal(
        "gqsh_order", {**paid, "status": 50}, kind="update", before=paid, at=paid["paid_at"] + dt.timedelta(minutes=1),
        sequence=4)]).touched
    # Then the CANCEL cannot start (the order is held), and runs only once PAY has finished
    assert leased_keys(leases, cancelled) == []
    merged = merge_orders(storage, leases, settings, RedisDimensions(redis_client), ready)
    again = finish_tasks(storage, leases, aggregate_orders(storage, leases, settings, merged))
    assert (order_id, "CANCEL") in again
    run_chains(storage, redis_client, again)
    # And then it is the data error it is: the paid order stays paid
    after, _ = read_orders(storage, [order_id])
    assert after[order_id]["status"] == 20
    cancel = next(t for t in order_lineage(storage, order_id)["tasks"] if t["operation_type"] == "CANCEL")
    assert (cancel["status"], cancel["last_error"]) == ("FAILED", "data error: CANCEL after PAY is not allowed")


def test_a_retried_check_step_counts_each_waiting_task_once(storage, redis_client) -> None:
    # Given a batch with a PAY that must wait for its SUBMIT, and an order whose database
    # connection is lost in the middle of the step
    waiting, unlucky = f"W{uuid.uuid4().hex[:12]}", f"U{uuid.uuid4().hex[:12]}"
    ingest(storage, redis_client, ORDER_FLOW, "business", [business(PaymentWriteFactory(order_id=waiting))])
    ingest(storage, redis_client, ORDER_FLOW, "canal", [canal("gqsh_order", OrderHeaderFactory(order_id=unlucky))])
    leases, settings = OrderLeases(redis_client, storage.settings), storage.settings
    keys = sorted(leased_keys(leases, [(waiting, "PAY"), (unlucky, "SUBMIT")]), key=lambda k: k["order_id"] != waiting)
    engines = {storage.engine_for_order(o) for o in (waiting, unlucky)}
    lost = {"left": 1}

    def lose_connection(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if lost["left"] and unlucky in str(parameters):
            lost["left"] -= 1
            raise OperationalError(statement, parameters, ConnectionError("Lost connection to server"))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", lose_connection)
    try:
        # When the step fails with that transient error and Celery runs it again
        with pytest.raises(OperationalError):
            check_tasks(storage, leases, settings, keys)
        check_tasks(storage, leases, settings, keys)
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", lose_connection)
        leases.release({k["order_id"]: k["token"] for k in keys})
    # Then the waiting PAY counted one attempt, not one per run of the step
    pay = _task(storage, waiting, "PAY")
    assert (pay.status, pay.attempts) == (TaskStatus.WAITING, 1)


def _ids_in_one_shard(storage, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    shard = storage.shard_of(first := new_order_id("Q"))
    ids = [first]
    while len(ids) < count:
        candidate = new_order_id("Q")
        if storage.shard_of(candidate) == shard:
            ids.append(candidate)
    return ids


def test_a_backlog_of_held_tasks_never_hides_an_orphan_from_the_rescan(fresh_storage, redis_client) -> None:
    # Given one task table with five due tasks whose chains are alive (their orders are held),
    # due longest, and one orphaned task due more recently
    storage = fresh_storage()
    *held, orphan = _ids_in_one_shard(storage, 6)
    now = utcnow()
    for age, order_id in enumerate([*held, orphan]):
        shard = storage.shard_of(order_id)
        with storage.order_transaction(order_id) as connection:
            bump_task(connection, shard, order_id, "SUBMIT", now - dt.timedelta(minutes=10 - age))
    leases = OrderLeases(redis_client, storage.settings)
    assert set(leases.acquire(held)) == set(held)
    jobs, job = storage.settings.rescan_shards, storage.shard_of(orphan) % storage.settings.rescan_shards
    # When the rescan, taking five per table, passes twice, postponing what it finds held
    seen: list[str] = []
    for _ in range(2):
        due = due_tasks(storage, job, jobs, utcnow(), 5)
        seen += [o for o, _ in due]
        postpone(storage, [(o, op) for o, op in due if o in held], utcnow(), storage.settings.lease_seconds)
    # Then the first pass found the held ones (longest due first) and the second the orphan
    assert seen[:5] == held and orphan in seen[5:]
    shard = storage.shard_of(held[0])
    with storage.engine_for_shard(shard).connect() as connection:
        table = task_table(shard)
        later = connection.execute(table.select().where(table.c.order_id == held[0])).one().next_run_at
    assert later > utcnow()
    with storage.engine_for_shard(shard).begin() as connection:  # (leave nothing due behind)
        connection.execute(update(table).where(table.c.order_id.in_([*held, orphan])).values(status="DONE"))


def _bump_before(storage, order_id: str, operation: str, marker: str):  # type: ignore[no-untyped-def]
    """Have new data bump (order_id, operation) once, from another connection, just before the
    step's first statement containing ``marker`` runs: between the step's read and its
    compare-and-set.  Returns the list the bumped versions are appended to, and the remover."""
    engine = storage.engine_for_order(order_id)
    shard = storage.shard_of(order_id)
    bumped: list[int] = []

    def before(conn, cursor, sql, parameters, context, executemany) -> None:  # type: ignore[no-untyped-def]
        if bumped or marker not in sql or order_id not in (parameters or ()):
            return
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
            bump_task(other, shard, order_id, operation, utcnow())
            bumped.append(load_task(other, shard, order_id, operation).version)

    event.listen(engine, "before_cursor_execute", before)
    return bumped, lambda: event.remove(engine, "before_cursor_execute", before)


@pytest.mark.parametrize("step, marker", [("check", "SET status = 'RUNNING'"), ("finish", "SET status = 'DONE'")])
def test_a_task_bumped_between_a_steps_read_and_its_write_runs_the_step_again(
        storage, redis_client, step: str, marker: str) -> None:
    # Given an order whose SUBMIT and PAY are due in one chain
    header = OrderHeaderFactory(status=20, paid_at=T0 + dt.timedelta(minutes=2))
    order_id = header["order_id"]
    touched = ingest(storage, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order", header), canal("gqsh_order_item", OrderItemFactory(order_id=order_id))]).touched
    touched |= ingest(storage, redis_client, ORDER_FLOW, "business",
                      [business(PaymentWriteFactory(order_id=order_id))]).touched
    # When new data bumps SUBMIT after the step read it and before it writes (the step marks an
    # order's tasks in one compare-and-set, which then finds a newer version)
    bumped, remove = _bump_before(storage, order_id, "SUBMIT", marker)
    try:
        run_chains(storage, redis_client, touched)
    finally:
        remove()
    # Then the step ran again on what is there now: both tasks end DONE, SUBMIT at its newer
    # version, and the wide row is whole
    assert len(bumped) == 1, f"the {step} step never wrote SUBMIT"
    submit, pay = _task(storage, order_id, "SUBMIT"), _task(storage, order_id, "PAY")
    assert (submit.status, submit.done_version) == (TaskStatus.DONE, bumped[0])
    assert pay.status == TaskStatus.DONE
    orders, items = read_orders(storage, [order_id])
    assert orders[order_id]["status"] == 20 and orders[order_id]["pay_txn_id"]
    assert [item["order_id"] for item in items.values()] == [order_id]
