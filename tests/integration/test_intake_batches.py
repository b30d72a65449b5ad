"""Intake in batches on real MariaDB: a batch reads what is stored for all its keys at once, and
gives every line the verdict it would get alone; a writer that commits between the batch's read
and its writes is seen, not overwritten."""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from contextlib import ExitStack

import pytest
from sqlalchemy import event, select

from demo.history import generate_history
from dimensions.lookup import dimension_key
from flows.registry import ACCEPTED as ORDER_FLOW
from intake.receiver import KEYS_PER_SELECT, accept_lines, store_record, utcnow
from models.sharded import meta_table, task_table
from tests.conftest import new_order_id
from tests.factories import OrderHeaderFactory, OrderItemFactory, canal
from tests.integration.helpers import ingest, round_trips

pytestmark = pytest.mark.integration


def _metadata(storage, order_ids: list[str]) -> list[tuple]:  # type: ignore[no-untyped-def]
    rows = []
    for order_id in order_ids:
        meta = meta_table(storage.shard_of(order_id))
        with storage.engine_for_order(order_id).connect() as connection:
            rows += [tuple(row) for row in connection.execute(
                select(meta.c.order_id, meta.c.operation_type, meta.c.source, meta.c.unique_key, meta.c.kind,
                       meta.c.content_hash, meta.c.position).where(meta.c.order_id == order_id))]
    return sorted(rows)


def test_a_batch_gives_every_line_the_verdict_it_gets_alone(fresh_storage, redis_client) -> None:
    # Given one displaced history with duplicates, replays of older versions, corrections and
    # malformed lines: the same lines fed once as batches and once a line at a time
    history = generate_history(60, seed=13, displacement=25, duplicate_rate=0.1)
    batched, alone = fresh_storage(), fresh_storage()
    lines = [(fmt, line) for fmt, line in history.lines if fmt == "canal"]
    lines += [(fmt, line) for fmt, line in history.lines if fmt != "canal"]
    totals = []
    for storage, size in ((batched, 500), (alone, 1)):
        # (each side starts from no dimension entries, as from no metadata: the Redis database
        # is shared, and entries an earlier side or test stored would make its lines duplicates)
        for dimension in ("store", "sku"):
            for key in redis_client.scan_iter(dimension_key(dimension, "*")):
                redis_client.delete(key)
        counts = {"accepted": 0, "duplicated": 0, "stale": 0, "quarantined": 0, "ambiguous": 0}
        for start in range(0, len(lines), size):
            chunk = lines[start:start + size]
            for fmt in dict.fromkeys(f for f, _ in chunk):
                report = accept_lines(storage, redis_client, ORDER_FLOW, fmt, [line for f, line in chunk if f == fmt])
                for name in counts:
                    counts[name] += getattr(report, name)
        totals.append(counts)
    # Then the verdicts and the stored metadata are the same
    assert totals[0] == totals[1]
    assert totals[0]["stale"] > 0 and totals[0]["duplicated"] > 0 and totals[0]["quarantined"] > 0
    orders = history.order_ids
    assert _metadata(batched, orders) == _metadata(alone, orders)


def test_a_newer_record_committed_after_the_batch_read_is_kept(storage, redis_client) -> None:
    # Given a stored header at position 100, and a batch holding the same key at position 101
    header = OrderHeaderFactory(order_id=new_order_id())
    order_id = header["order_id"]
    ingest(storage, redis_client, ORDER_FLOW, "canal", [canal("gqsh_order", header, sequence=100)])
    older = canal("gqsh_order", {**header, "member_id": "M1"}, kind="update", before=header, sequence=101)
    newer = canal("gqsh_order", {**header, "member_id": "M2"}, kind="update", before=header, sequence=102)
    [newer_record] = [r for r in _records(newer) if r.operation_type == "SUBMIT"]
    # When another writer commits position 102 after the batch read what is stored
    interleaved, report = _ingest_while(storage, redis_client, older, "UPDATE meta_", newer_record)
    # Then the batch's compare-and-set failed, it read again, and its older record is stale
    assert interleaved and (report.accepted, report.stale) == (0, 1)
    [(position, content)] = _stored(storage, order_id)
    assert position == newer_record.position_text and '"member_id":"M2"' in content


def test_a_key_repeated_in_a_batch_and_changed_meanwhile_is_judged_again_line_by_line(storage, redis_client) -> None:
    # Given a stored header at position 100, and a batch holding the same key at 101 and at 103,
    # judged together in memory and written once
    header = OrderHeaderFactory(order_id=new_order_id())
    order_id = header["order_id"]
    ingest(storage, redis_client, ORDER_FLOW, "canal", [canal("gqsh_order", header, sequence=100)])
    batch = [canal("gqsh_order", {**header, "member_id": f"M{n}"}, kind="update", before=header, sequence=100 + n)
             for n in (1, 3)]
    [theirs] = [r for r in _records(canal("gqsh_order", {**header, "member_id": "M2"}, kind="update", before=header,
                                          sequence=102)) if r.operation_type == "SUBMIT"]
    # When another writer commits 102 between the batch's read and its write
    interleaved, report = _ingest_while(storage, redis_client, batch, "UPDATE meta_", theirs)
    # Then every line of the key is judged again against theirs: 101 is stale, 103 is newer and kept
    assert interleaved and (report.accepted, report.stale) == (1, 1)
    [(position, content)] = _stored(storage, order_id)
    assert '"member_id":"M3"' in content and position != theirs.position_text


def _ingest_while(storage, client, line: str | list[str], before: str, theirs):  # type: ignore[no-untyped-def]
    """Ingest ``line`` (or lines, as one batch) while another writer stores record ``theirs``
    (and commits) just before the batch's first statement starting with ``before``; whether it
    did, and the batch's report."""
    engine = storage.engine_for_order(theirs.order_id)
    interleaved: list[bool] = []

    def store_theirs_first(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.startswith(before) and not interleaved:
            interleaved.append(True)
            with engine.begin() as other:
                store_record(other, storage.shard_of(theirs.order_id), theirs, utcnow())

    event.listen(engine, "before_cursor_execute", store_theirs_first)
    try:
        return interleaved, ingest(storage, client, ORDER_FLOW, "canal", [line] if isinstance(line, str) else line)
    finally:
        event.remove(engine, "before_cursor_execute", store_theirs_first)


def _records(line: str):  # type: ignore[no-untyped-def]
    from flows import route
    from inputs.formats import parse_line

    return [record for parsed in parse_line("canal", line) for record in route(ORDER_FLOW, parsed, "canal").records]


def _stored(storage, order_id: str) -> list[tuple]:  # type: ignore[no-untyped-def]
    meta = meta_table(storage.shard_of(order_id))
    with storage.engine_for_order(order_id).connect() as connection:
        return [tuple(row) for row in connection.execute(select(meta.c.position, meta.c.content).where(
            (meta.c.order_id == order_id) & (meta.c.operation_type == "SUBMIT")))]


def test_the_same_key_twice_in_one_batch_keeps_the_newer(storage, redis_client) -> None:
    header = OrderHeaderFactory(order_id=new_order_id())
    at = header["created_at"] + dt.timedelta(seconds=5)
    report = ingest(storage, redis_client, ORDER_FLOW, "canal", [
        canal("gqsh_order", {**header, "member_id": "M2"}, kind="update", before=header, sequence=202, at=at),
        canal("gqsh_order", header, sequence=201),
        canal("gqsh_order", {**header, "member_id": "M3"}, kind="update", before=header, sequence=203, at=at)])
    assert (report.accepted, report.stale) == (2, 1)
    [(_, content)] = _stored(storage, header["order_id"])
    assert '"member_id":"M3"' in content


@pytest.mark.parametrize(("theirs", "ours", "verdict", "kept"), [
    (102, 101, "stale", "M2"),
    (100, 101, "accepted", "M1"),
])
def test_a_key_inserted_by_another_writer_after_the_batch_read_is_judged_against_theirs(
        storage, redis_client, theirs: int, ours: int, verdict: str, kept: str) -> None:
    # Given a header no one has stored yet, and a batch about to insert it at position `ours`
    header = OrderHeaderFactory(order_id=new_order_id())
    order_id = header["order_id"]
    mine = canal("gqsh_order", {**header, "member_id": "M1"}, sequence=ours)
    [their_record] = [r for r in _records(canal("gqsh_order", {**header, "member_id": "M2"}, sequence=theirs))
                      if r.operation_type == "SUBMIT"]
    # When another writer inserts the same key, at position `theirs`, between the batch's read and its insert
    interleaved, report = _ingest_while(storage, redis_client, mine, "INSERT INTO meta_", their_record)
    # Then the newer of the two is kept and the batch's verdict says which
    assert interleaved
    assert (report.accepted, report.stale) == ((1, 0) if verdict == "accepted" else (0, 1))
    [(_, content)] = _stored(storage, order_id)
    assert f'"member_id":"{kept}"' in content


def test_a_record_stored_by_an_older_tdc_is_recognised_as_the_same_content(storage, redis_client) -> None:
    # Given a header stored with the one-part content hash an older tdc wrote
    header = OrderHeaderFactory(order_id=new_order_id("LH"), status=20)
    line = canal("gqsh_order", header, sequence=7)
    ingest(storage, redis_client, ORDER_FLOW, "canal", [line])
    order_id, shard = header["order_id"], storage.shard_of(header["order_id"])
    meta = meta_table(shard)
    with storage.engine_for_order(order_id).begin() as connection:
        for row in connection.execute(select(meta).where(meta.c.order_id == order_id)).all():
            legacy = hashlib.sha1(f"{row.kind}|{row.content}".encode()).hexdigest()
            connection.execute(meta.update().where(meta.c.id == row.id).values(content_hash=legacy))
    # When the same line is read again after the upgrade (a replayed file, a restarted tail)
    report = ingest(storage, redis_client, ORDER_FLOW, "canal", [line])
    # Then it is a duplicate, not a correction that runs SUBMIT and PAY again
    assert (report.duplicated, report.accepted, report.touched) == (1, 0, set())


def test_a_batch_with_many_keys_in_one_table_reads_them_in_bounded_selects(storage, redis_client) -> None:
    # Given an order with 120 lines stored, each its own key in the order's metadata table
    order_id = new_order_id()
    header = OrderHeaderFactory(order_id=order_id)
    items = [OrderItemFactory(order_id=order_id, item_id=10_000 + n, sku_id=f"K{n:04d}") for n in range(120)]
    lines = [canal("gqsh_order", header, sequence=1)]
    lines += [canal("gqsh_order_item", item, sequence=2 + n) for n, item in enumerate(items)]
    assert ingest(storage, redis_client, ORDER_FLOW, "canal", lines).accepted == 121
    # When the same lines come again in one batch, with one item changed at a later position
    changed = {**items[77], "quantity": 3, "amount": items[77]["unit_price"] * 3}
    again = [*lines, canal("gqsh_order_item", changed, kind="update", before=items[77], sequence=500)]
    meta = f"meta_{storage.shard_of(order_id):04d}"
    reads: list[str] = []

    def seen(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.startswith("SELECT") and meta in statement:
            reads.append(statement)

    engine = storage.engine_for_order(order_id)
    event.listen(engine, "before_cursor_execute", seen)
    try:
        report = ingest(storage, redis_client, ORDER_FLOW, "canal", again)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    # Then every stored key was found (121 duplicates, the change accepted) by reads that name the
    # table once per KEYS_PER_SELECT keys, not once per key
    assert (report.duplicated, report.accepted, report.stale) == (121, 1, 0)
    named = sum(statement.count(f"FROM {meta} ") for statement in reads)
    assert named == math.ceil(121 / KEYS_PER_SELECT) == 3


def test_a_batch_writes_all_its_metadata_and_task_tables_in_a_round_trip_each_per_database(
        storage, redis_client) -> None:
    # Given a batch of 60 new orders, spread over many task tables of every shard database
    headers = [OrderHeaderFactory(order_id=new_order_id()) for _ in range(60)]
    lines = [canal("gqsh_order", header, sequence=1) for header in headers]
    databases = range(len(storage.settings.db_urls))
    tables = {storage.shard_of(h["order_id"]) for h in headers}
    assert len(tables) > 20
    # When it is ingested, and then the same orders again, changed
    upserts, writes = [], []
    for version, batch in ((1, lines), (2, [canal("gqsh_order", {**h, "member_id": "M9"}, kind="update", before=h,
                                                  sequence=2) for h in headers])):
        with ExitStack() as stack:
            sent = [stack.enter_context(round_trips(storage.shard_engine(d))) for d in databases]
            report = accept_lines(storage, redis_client, ORDER_FLOW, "canal", batch)
        upserts.append([len([sql for sql in part if "INSERT INTO task_" in sql]) for part in sent])
        writes.append([len([sql for sql in part if sql.startswith(("INSERT INTO meta_", "UPDATE meta_"))])
                       for part in sent])
        # Then every order's task is there at that version, due
        assert report.accepted == 60
        for header in headers:
            table = task_table(storage.shard_of(header["order_id"]))
            with storage.engine_for_order(header["order_id"]).connect() as connection:
                assert connection.execute(select(table.c.version, table.c.status).where(
                    table.c.order_id == header["order_id"], table.c.operation_type == "SUBMIT")).one() == (
                    version, "PENDING")
    # And each shard database had the metadata inserts (then the compare-and-sets) of all its
    # metadata tables in one round trip, and the upserts of all its task tables in another
    assert writes == [[1] * len(databases)] * 2
    assert upserts == [[1] * len(databases)] * 2
