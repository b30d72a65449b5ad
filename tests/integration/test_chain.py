"""The chain's plain functions on real MariaDB shards and Redis: a generated history (displaced,
duplicated, with malformed lines) produces exactly the expected wide rows; the optimistic lock
holds between two real sessions."""

import datetime as dt
import json
import threading
import uuid

import pytest
from sqlalchemy import select

from chain.lineage import order_lineage
from chain.steps import merge_orders
from chain.wide_rows import (
    Merge,
    OptimisticLockConflict,
    _write_orders,
    merge_order_rows,
    read_orders,
    read_wide_rows,
)
from demo.check import differences
from demo.history import generate_history
from demo.tables import ONLINE as DEFAULT_SCHEMA
from demo.tables import ORDER_TABLE as DwdOrder
from flows.registry import ACCEPTED as ORDER_FLOW
from inputs.positions import Position, encode
from intake.receiver import IntakeReport
from models.sharded import meta_table
from reliability.leases import OrderLeases
from strategies.facts import OrderFacts
from tests.factories import T0, OrderHeaderFactory, OrderItemFactory, PaymentWriteFactory, business, canal
from tests.integration.helpers import claimed_keys, ingest, process_history, run_chains

OrderSnapshot = DEFAULT_SCHEMA.snapshots

pytestmark = pytest.mark.integration


class NoDimensions:
    def get(self, dimension, key):  # type: ignore[no-untyped-def]
        return {}


@pytest.mark.parametrize("input_format", ["canal", "debezium"])
def test_generated_history_produces_the_expected_wide_rows(storage, redis_client, input_format: str) -> None:
    history = generate_history(60, seed=7, input_format=input_format)
    report = IntakeReport()
    for start in range(0, len(history.lines), 150):
        batch = history.lines[start : start + 150]
        for fmt in ("business", input_format):
            part = ingest(storage, redis_client, ORDER_FLOW, fmt, [line for f, line in batch if f == fmt])
            report.add(part)
            run_chains(storage, redis_client, part.touched)
    run_chains(storage, redis_client, [])
    assert report.quarantined == history.malformed
    orders, items = read_orders(storage, history.order_ids)
    assert differences(history.expected_orders, orders, "dwd_order") == []
    assert differences(history.expected_items, items, "dwd_order_item") == []


def test_replaying_everything_changes_nothing(storage, redis_client) -> None:
    history = generate_history(15, seed=11)
    lines = {fmt: [line for f, line in history.lines if f == fmt] for fmt in ("canal", "business")}
    for fmt, batch in lines.items():
        run_chains(storage, redis_client, ingest(storage, redis_client, ORDER_FLOW, fmt, batch).touched)
    run_chains(storage, redis_client, [])
    before, _ = read_orders(storage, history.order_ids)
    replay = IntakeReport()
    for fmt, batch in lines.items():
        replay.add(ingest(storage, redis_client, ORDER_FLOW, fmt, batch))
    assert replay.touched == set()
    assert replay.quarantined == history.malformed
    after, _ = read_orders(storage, history.order_ids)
    assert {k: v["version"] for k, v in after.items()} == {k: v["version"] for k, v in before.items()}


def test_snapshot_per_operation_is_overwritten_by_a_rerun(storage, redis_client) -> None:
    history = generate_history(5, seed=3)
    process_history(storage, redis_client, history)
    order_id = history.order_ids[0]
    with storage.engine_for_order(order_id).connect() as connection:
        snapshots = connection.execute(select(OrderSnapshot).where(
            OrderSnapshot.c.order_id == order_id)).fetchall()
    assert {s.operation_type for s in snapshots} >= {"SUBMIT"}
    assert len(snapshots) == len({s.operation_type for s in snapshots})
    submit = next(s for s in snapshots if s.operation_type == "SUBMIT")
    assert json.loads(submit.order_row)["order_id"] == order_id


def test_optimistic_lock_refuses_a_write_based_on_a_stale_version(storage) -> None:
    # Given an order row at version 1
    order_id = f"OPT{uuid.uuid4().hex[:12]}"
    facts = OrderFacts(order_id, {"gqsh_order": {order_id: {
        "order_id": order_id, "store_id": "S001", "member_id": "M1", "channel": "app", "status": 10,
        "item_count": 0, "total_amount": "10.00", "discount_amount": "0.00", "pay_amount": "10.00",
        "created_at": "2026-11-02T10:00:00.000", "paid_at": None, "updated_at": None}}})
    engine = storage.engine_for_order(order_id)
    with engine.begin() as connection:
        merge_order_rows(connection, facts, "SUBMIT", 1, NoDimensions(), dt.datetime(2026, 11, 2),
                         changelog=storage.settings.changelog_outbox)
    # When two real sessions both read version 1 and then both write
    first, second = engine.connect(), engine.connect()
    first.begin()
    second.begin()
    seen_first, _ = read_wide_rows(first, order_id)
    seen_second, _ = read_wide_rows(second, order_id)
    assert seen_first["version"] == seen_second["version"] == 1
    _write_orders(first, [Merge({**seen_first, "status": 30}, {}, seen_first, True)])
    first.commit()
    # Then the second write is refused instead of silently overwriting the first
    with pytest.raises(OptimisticLockConflict):
        _write_orders(second, [Merge({**seen_second, "status": 40}, {}, seen_second, True)])
    second.rollback()
    first.close()
    second.close()
    with engine.connect() as connection:
        row = connection.execute(select(DwdOrder).where(DwdOrder.c.order_id == order_id)).first()
    assert (row.version, row.status) == (2, 30)


def test_a_new_wide_row_written_meanwhile_refuses_the_whole_batch(storage) -> None:
    # Given two real sessions that both find no wide row for an order, the second in a batch with
    # another new order
    order_id = f"OPT{uuid.uuid4().hex[:12]}"
    neighbour = next(o for o in (f"OPT{uuid.uuid4().hex[:12]}" for _ in range(1000))
                     if storage.database_of(o) == storage.database_of(order_id))
    row = {"order_id": order_id, "store_id": "S001", "status": 10, "refund_amount": 0, "refund_count": 0, "version": 1}
    engine = storage.engine_for_order(order_id)
    first, second = engine.connect(), engine.connect()
    first.begin()
    second.begin()
    assert read_wide_rows(first, order_id)[0] is None and read_wide_rows(second, order_id)[0] is None
    # When the first inserts it and commits, and the second then inserts its batch
    _write_orders(first, [Merge(dict(row), {}, None, True)])
    first.commit()
    # Then the second batch is refused (its caller reads again), and nothing of it is kept
    with pytest.raises(OptimisticLockConflict):
        _write_orders(second, [Merge({**row, "order_id": neighbour}, {}, None, True),
                               Merge({**row, "status": 40}, {}, None, True)])
    second.rollback()
    first.close()
    second.close()
    assert read_orders(storage, [order_id, neighbour])[0].keys() == {order_id}
    assert read_orders(storage, [order_id])[0][order_id]["status"] == 10


def test_concurrent_merges_of_one_order_are_retried_and_none_is_lost(storage, redis_client) -> None:
    # Given paid orders whose DELIVER and REFUND contributions are merged at the same time
    history = generate_history(12, seed=5)
    process_history(storage, redis_client, history)
    orders, _ = read_orders(storage, history.order_ids)
    paid = [o for o in orders.values() if o["status"] >= 20 and o["status"] != 50]
    assert paid
    settings = storage.settings
    leases = OrderLeases(redis_client, settings)
    # (One chain's merge delivered to three workers at once: the same token in each.)
    tokens = {k["order_id"]: k["token"] for k in claimed_keys(storage, leases, [(o["order_id"], "PAY") for o in paid])}
    errors: list[BaseException] = []

    def merge_many(operation: str) -> None:
        try:
            for _ in range(5):
                keys = [{"order_id": o["order_id"], "operation_type": operation, "token": tokens[o["order_id"]],
                         "version": 1} for o in paid]
                merge_orders(storage, leases, settings, NoDimensions(), keys)
        except BaseException as error:  # noqa: BLE001
            errors.append(error)

    threads = [threading.Thread(target=merge_many, args=(op,)) for op in ("COMPLETE", "REFUND", "PAY")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    # Then every order still holds every contribution (none overwritten by a concurrent writer)
    after, _ = read_orders(storage, [o["order_id"] for o in paid])
    for order in paid:
        row = after[order["order_id"]]
        want = history.expected_orders[order["order_id"]]
        assert (row["refund_amount"], row["pay_txn_id"], row["perf_amount"]) == (
            want["refund_amount"], want["pay_txn_id"], want["perf_amount"])


def test_cancel_after_pay_is_quarantined_and_alarmed_and_the_order_untouched(storage, redis_client) -> None:
    # Given an order that is submitted and paid
    order_id = f"CX{uuid.uuid4().hex[:12]}"
    header = OrderHeaderFactory(order_id=order_id)
    item = OrderItemFactory(order_id=order_id)
    paid = {**header, "status": 20, "paid_at": T0 + dt.timedelta(minutes=5)}
    lines = [canal("gqsh_order", header, sequence=1), canal("gqsh_order_item", item, sequence=2),
             canal("gqsh_order", paid, kind="update", before=header, at=paid["paid_at"], sequence=3)]
    run_chains(storage, redis_client, ingest(storage, redis_client, ORDER_FLOW, "canal", lines).touched)
    payment = PaymentWriteFactory(order_id=order_id)
    run_chains(storage, redis_client,
               ingest(storage, redis_client, ORDER_FLOW, "business", [business(payment)]).touched)
    before, _ = read_orders(storage, [order_id])
    assert before[order_id]["status"] == 20
    alarms_before = int(redis_client.hget("tdc:alarms", "data_error") or 0)
    # When the source says it was cancelled afterwards
    cancelled = {**paid, "status": 50}
    report = ingest(storage, redis_client, ORDER_FLOW, "canal", [canal(
        "gqsh_order", cancelled, kind="update", before=paid, at=paid["paid_at"] + dt.timedelta(minutes=1),
        sequence=4)])
    run_chains(storage, redis_client, report.touched)
    # Then the wide row keeps its paid state, the CANCEL task failed, the input is quarantined, an alarm counted
    after, _ = read_orders(storage, [order_id])
    assert after[order_id]["status"] == 20 and after[order_id]["pay_txn_id"] == payment["unique_key"]
    lineage = order_lineage(storage, order_id)
    cancel = next(t for t in lineage["tasks"] if t["operation_type"] == "CANCEL")
    assert cancel["status"] == "FAILED"
    assert [f["reason"] for f in lineage["failed"]] == ["data error: CANCEL after PAY is not allowed"]
    assert [q["reason"] for q in lineage["quarantine"]] == ["data error: CANCEL after PAY is not allowed"]
    assert '"status":50' in lineage["quarantine"][0]["raw"].replace(" ", "")
    assert int(redis_client.hget("tdc:alarms", "data_error")) == alarms_before + 1


class CommitsBehindOurBack:
    """Dimensions whose first look-up, made between the merge's read and its write, lets another
    session merge and commit the same order first."""

    def __init__(self, storage, order_id: str, facts: OrderFacts) -> None:  # type: ignore[no-untyped-def]
        self.storage, self.order_id, self.facts, self.calls = storage, order_id, facts, 0

    def get(self, dimension, key):  # type: ignore[no-untyped-def]
        self.calls += 1
        if self.calls == 1:
            with self.storage.engine_for_order(self.order_id).begin() as other_session:
                merge_order_rows(other_session, self.facts, "DELIVER", 1, NoDimensions(), dt.datetime(2026, 11, 5),
                                 changelog=self.storage.settings.changelog_outbox)
        return {}


def test_a_conflicting_merge_is_retried_on_the_new_version_and_neither_update_is_lost(storage, redis_client) -> None:
    # Given a submitted order and a COMPLETE about to be merged
    order_id = f"RT{uuid.uuid4().hex[:12]}"
    facts = OrderFacts(order_id, {
        "gqsh_order": {order_id: {
            "order_id": order_id, "store_id": "S001", "member_id": "M1", "channel": "app", "status": 40,
            "item_count": 0, "total_amount": "10.00", "discount_amount": "0.00", "pay_amount": "10.00",
            "created_at": "2026-11-02T10:00:00.000", "paid_at": None, "updated_at": None}},
        "perf_record": {"1": {"id": 1, "order_id": order_id, "staff_id": "E7", "perf_amount": "0.20"}}})
    with storage.engine_for_order(order_id).begin() as connection:
        merge_order_rows(connection, facts, "SUBMIT", 1, NoDimensions(), dt.datetime(2026, 11, 2),
                         changelog=storage.settings.changelog_outbox)
    shard = storage.shard_of(order_id)
    with storage.engine_for_order(order_id).begin() as connection:
        connection.execute(meta_table(shard).insert().values(
            order_id=order_id, operation_type="COMPLETE", source="perf_record", unique_key="1", kind="insert",
            content=json.dumps(facts.rows["perf_record"]["1"]), content_hash="x", position=encode(Position(1)),
            input_format="canal", received_at=dt.datetime(2026, 11, 2), updated_at=dt.datetime(2026, 11, 2)))
        connection.execute(meta_table(shard).insert().values(
            order_id=order_id, operation_type="COMPLETE", source="gqsh_order", unique_key=order_id,
            kind="update", content=json.dumps(facts.rows["gqsh_order"][order_id]), content_hash="y",
            position=encode(Position(1)), input_format="canal", received_at=dt.datetime(2026, 11, 2),
            updated_at=dt.datetime(2026, 11, 2)))
    # When another session commits a DELIVER between our read and our write
    racing = CommitsBehindOurBack(storage, order_id, facts)
    leases = OrderLeases(redis_client, storage.settings)
    merged = merge_orders(storage, leases, storage.settings, racing,
                          claimed_keys(storage, leases, [(order_id, "COMPLETE")], version=1))
    # Then our merge conflicted, was retried on the new version, and both contributions are in the row
    assert merged and racing.calls >= 2
    row, _ = read_orders(storage, [order_id])
    assert (row[order_id]["version"], row[order_id]["status"], row[order_id]["perf_staff_id"]) == (3, 40, "E7")
    assert row[order_id]["last_operation"] == "COMPLETE"
