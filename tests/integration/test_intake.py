"""The Receiver on real MariaDB shards: idempotent metadata, corrections, stale events, quarantine."""

import datetime as dt
import json

import pytest
from sqlalchemy import select

from flows.registry import ACCEPTED as ORDER_FLOW
from models.orders import QuarantinedInput
from models.sharded import meta_table, task_table
from tests.conftest import new_order_id
from tests.factories import OrderHeaderFactory, canal, debezium
from tests.integration.helpers import ingest

pytestmark = pytest.mark.integration


def _task(storage, order_id: str, operation: str):  # type: ignore[no-untyped-def]
    shard = storage.shard_of(order_id)
    table = task_table(shard)
    with storage.engine_for_order(order_id).connect() as connection:
        return connection.execute(select(table).where(
            (table.c.order_id == order_id) & (table.c.operation_type == operation))).first()


def _metadata(storage, order_id: str):  # type: ignore[no-untyped-def]
    table = meta_table(storage.shard_of(order_id))
    with storage.engine_for_order(order_id).connect() as connection:
        return connection.execute(select(table).where(table.c.order_id == order_id)).fetchall()


def test_same_line_twice_is_stored_once_and_creates_one_task(storage, redis_client) -> None:
    header = OrderHeaderFactory(order_id=new_order_id())
    line = canal("gqsh_order", header)
    first = ingest(storage, redis_client, ORDER_FLOW, "canal", [line])
    second = ingest(storage, redis_client, ORDER_FLOW, "canal", [line])
    assert (first.accepted, first.duplicated) == (1, 0)
    assert (second.accepted, second.duplicated) == (0, 1)
    assert second.touched == set()
    assert len(_metadata(storage, header["order_id"])) == 1
    task = _task(storage, header["order_id"], "SUBMIT")
    assert (task.status, task.version) == ("PENDING", 1)


def test_new_content_for_the_same_key_is_a_correction_with_a_higher_version(storage, redis_client) -> None:
    header = OrderHeaderFactory(order_id=new_order_id())
    ingest(storage, redis_client, ORDER_FLOW, "canal", [canal("gqsh_order", header, sequence=100)])
    corrected = {**header, "discount_amount": "1.00", "pay_amount": "24.00"}
    report = ingest(storage, redis_client, ORDER_FLOW, "canal",
                    [canal("gqsh_order", corrected, kind="update", before=header, sequence=101,
                           at=header["created_at"] + dt.timedelta(seconds=5))])
    assert report.accepted == 1 and report.touched == {(header["order_id"], "SUBMIT")}
    [stored] = _metadata(storage, header["order_id"])
    assert '"pay_amount":"24.00"' in stored.content
    assert _task(storage, header["order_id"], "SUBMIT").version == 2


def test_an_older_event_never_overwrites_newer_data(storage, redis_client) -> None:
    header = OrderHeaderFactory(order_id=new_order_id())
    newer = {**header, "discount_amount": "2.00", "pay_amount": "23.00"}
    later = header["created_at"] + dt.timedelta(minutes=1)
    ingest(storage, redis_client, ORDER_FLOW, "canal",
           [canal("gqsh_order", newer, kind="update", before=header, at=later, sequence=201)])
    report = ingest(storage, redis_client, ORDER_FLOW, "canal", [canal("gqsh_order", header, sequence=200)])
    assert (report.accepted, report.stale) == (0, 1)
    [stored] = _metadata(storage, header["order_id"])
    assert '"pay_amount":"23.00"' in stored.content
    assert _task(storage, header["order_id"], "SUBMIT").version == 1


def test_bad_lines_are_quarantined_with_their_reason_and_do_not_block_the_rest(storage, redis_client) -> None:
    good = OrderHeaderFactory(order_id=new_order_id())
    bad = OrderHeaderFactory(order_id=new_order_id(), total_amount="-5.00")
    report = ingest(storage, redis_client, ORDER_FLOW, "canal",
                    ["{truncated", canal("gqsh_order", bad), canal("gqsh_order", good)])
    assert (report.accepted, report.quarantined) == (1, 2)
    assert _task(storage, good["order_id"], "SUBMIT") is not None
    with storage.engine_for_order(bad["order_id"]).connect() as connection:
        [kept] = connection.execute(select(QuarantinedInput.__table__).where(
            QuarantinedInput.order_id == bad["order_id"])).fetchall()
    assert kept.reason == "gqsh_order column 'total_amount': '-5.00' is a negative amount"
    assert '"-5.00"' in kept.raw


def test_one_undecodable_line_in_a_batch_of_500_leaves_the_other_499_stored(storage, redis_client) -> None:
    # Given 499 good Debezium lines and, in the middle, a DATETIME(6) MicroTimestamp sent for a
    # column declared datetime(3) (it would read as the year 58807)
    headers = [OrderHeaderFactory(order_id=new_order_id()) for _ in range(499)]
    lines = [debezium("gqsh_order", header) for header in headers]
    bad = json.loads(debezium("gqsh_order", OrderHeaderFactory(order_id=new_order_id())))
    bad["after"]["created_at"] = 1793611800125999
    lines.insert(250, json.dumps(bad))
    # When they are ingested as one batch
    report = ingest(storage, redis_client, ORDER_FLOW, "debezium", lines)
    # Then the bad line alone is quarantined, with the column named, and every other is stored
    assert (report.lines, report.accepted, report.quarantined) == (500, 499, 1)
    [reason] = report.reasons
    assert reason.startswith("gqsh_order column 'created_at':") and "out of range" in reason
    assert all(len(_metadata(storage, header["order_id"])) == 1 for header in headers)
    assert _task(storage, headers[-1]["order_id"], "SUBMIT") is not None
    with storage.engine_for_order(bad["after"]["order_id"]).connect() as connection:
        kept = connection.execute(select(QuarantinedInput.raw).where(
            QuarantinedInput.order_id == bad["after"]["order_id"])).scalars().all()
    assert kept == [json.dumps(bad)]
