"""Concurrent writers on real MariaDB: lock contention is retried as a whole transaction, a
metadata key is never overwritten by an older record, and replays keep side records once."""

import threading

import pytest
from sqlalchemy import create_engine, event, func, select, text

from flows.registry import ACCEPTED as ORDER_FLOW
from intake.receiver import Effect, store_record
from models.cdc import SchemaChangeRecord
from models.orders import QuarantinedInput
from models.sharded import meta_table
from reliability.alarms import ALARM_COUNTERS
from reliability.transient import RetryCount, is_contention, retry_on_contention
from tests.conftest import MARIADB, new_order_id
from tests.factories import OrderHeaderFactory, canal
from tests.integration.helpers import ingest

pytestmark = pytest.mark.integration


def _records(lines: list[str]):  # type: ignore[no-untyped-def]
    from flows import route
    from inputs.formats import parse_line
    return [record for line in lines for event_ in parse_line("canal", line)
            for record in route(ORDER_FLOW, event_, "canal").records]


def test_an_older_record_never_overwrites_a_newer_one_stored_between_our_read_and_our_write(storage) -> None:
    # Given a stored header at position 100, and two writers of the same key: A with the record
    # at position 101 and B with the record at position 102
    header = OrderHeaderFactory(order_id=new_order_id())
    stored, older, newer = _records([
        canal("gqsh_order", header, sequence=100),
        canal("gqsh_order", {**header, "member_id": "M1"}, kind="update", before=header, sequence=101),
        canal("gqsh_order", {**header, "member_id": "M2"}, kind="update", before=header, sequence=102)])
    order_id = header["order_id"]
    shard = storage.shard_of(order_id)
    engine = storage.engine_for_order(order_id)
    with engine.begin() as connection:
        assert store_record(connection, shard, stored, storage_now()) == Effect.NEW
    # When B stores and commits right after A has read the stored position, before A writes
    interleaved = []

    def b_writes_first(conn, cursor, statement, *args):  # type: ignore[no-untyped-def]
        if statement.startswith("UPDATE meta_") and not interleaved:
            interleaved.append(True)
            with engine.begin() as other:
                assert store_record(other, shard, newer, storage_now()) == Effect.CORRECTED

    with engine.begin() as connection:
        event.listen(connection, "before_cursor_execute", b_writes_first)
        effect = store_record(connection, shard, older, storage_now())
    # Then A sees B's newer record and reports its own as stale; the newer one is kept
    assert interleaved
    assert effect == Effect.STALE
    meta = meta_table(shard)
    with engine.connect() as connection:
        [row] = connection.execute(select(meta.c.position, meta.c.content).where(meta.c.order_id == order_id))
    assert row.position == newer.position_text and '"member_id":"M2"' in row.content


def storage_now():  # type: ignore[no-untyped-def]
    from intake.receiver import utcnow

    return utcnow()


def test_a_deadlock_victim_is_run_again_as_a_whole_transaction(mariadb) -> None:
    # Given two rows and a heavy transaction that will lock them in the opposite order to ours
    engine = create_engine(MARIADB + "/test", isolation_level="READ COMMITTED")
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE IF NOT EXISTS tdc_deadlock (id INT PRIMARY KEY, n INT)"))
        connection.execute(text("CREATE TABLE IF NOT EXISTS tdc_deadlock_ballast (id INT PRIMARY KEY AUTO_INCREMENT)"))
        connection.execute(text("REPLACE INTO tdc_deadlock VALUES (1, 0), (2, 0)"))
    we_hold_two, attempts = threading.Event(), []

    def heavy() -> None:
        with engine.begin() as connection:
            # InnoDB rolls back the transaction that changed fewer rows: make that ours.
            connection.execute(text("INSERT INTO tdc_deadlock_ballast () VALUES " + ", ".join(["()"] * 500)))
            connection.execute(text("UPDATE tdc_deadlock SET n = n + 10 WHERE id = 1"))
            we_hold_two.wait(10)
            connection.execute(text("UPDATE tdc_deadlock SET n = n + 10 WHERE id = 2"))

    def ours() -> None:
        attempts.append(1)
        with engine.begin() as connection:
            connection.execute(text("UPDATE tdc_deadlock SET n = n + 1 WHERE id = 2"))
            we_hold_two.set()
            connection.execute(text("UPDATE tdc_deadlock SET n = n + 1 WHERE id = 1"))

    other = threading.Thread(target=heavy)
    other.start()
    # When our transaction is picked as the deadlock victim
    count = RetryCount()
    try:
        retry_on_contention(ours, count)
    finally:
        we_hold_two.set()
        other.join(30)
    # Then it was run again whole, once per retry, and both transactions' effects are there once
    with engine.connect() as connection:
        values = dict(connection.execute(text("SELECT id, n FROM tdc_deadlock")).fetchall())
        connection.execute(text("DROP TABLE tdc_deadlock, tdc_deadlock_ballast"))
    engine.dispose()
    assert count.retries >= 1 and len(attempts) == count.retries + 1
    assert values == {1: 11, 2: 11}


def test_contention_is_recognised_on_every_backend_and_nothing_else_is() -> None:
    import sqlite3

    import pymysql
    from sqlalchemy.exc import OperationalError

    def wrapped(error: Exception) -> OperationalError:
        return OperationalError("statement", {}, error)

    assert is_contention(wrapped(pymysql.err.OperationalError(1213, "Deadlock found")))
    assert is_contention(wrapped(pymysql.err.OperationalError(1205, "Lock wait timeout exceeded")))
    assert is_contention(wrapped(sqlite3.OperationalError("database is locked")))
    assert not is_contention(wrapped(pymysql.err.OperationalError(2003, "Can't connect")))
    assert not is_contention(wrapped(sqlite3.OperationalError("no such table: x")))


def test_a_replayed_bad_line_is_quarantined_once(storage, redis_client) -> None:
    # Given a malformed line for an order
    order_id = new_order_id()
    bad = '{"type": "INSERT", "database": "gqsh", "table": "gqsh_order", "data": [{"order_id": "' + order_id + '"}]}'
    # When it arrives twice (a retried receive, a re-read file)
    first = ingest(storage, redis_client, ORDER_FLOW, "canal", [bad])
    second = ingest(storage, redis_client, ORDER_FLOW, "canal", [bad])
    # Then both report it quarantined, and one row keeps it
    assert first.quarantined == second.quarantined == 1
    kept = 0
    for database in storage.distinct_databases():
        with storage.shard_engine(database).connect() as connection:
            kept += connection.execute(select(func.count()).select_from(QuarantinedInput).where(
                QuarantinedInput.raw == bad)).scalar()
    assert kept == 1


def test_a_replayed_ddl_is_recorded_and_alarmed_once(storage, redis_client) -> None:
    # Given a DDL statement on a followed table at a binlog position
    # (Canal 1.1.x flat message of a DDL: isDdl true, the statement in "sql", data/old null;
    # FlatMessage in canal's protocol module.)
    message_id = int(new_order_id("")[:8], 16)
    ddl = ('{"type": "ALTER", "isDdl": true, "database": "gqsh", "table": "gqsh_order", '
           '"sql": "ALTER TABLE gqsh_order ADD COLUMN note varchar(8)", "es": 1762075800000, '
           f'"ts": 1762075800100, "id": {message_id}, "data": null, "old": null, "pkNames": null, '
           '"mysqlType": null, "sqlType": null}')
    before = int(redis_client.hget(ALARM_COUNTERS, "schema_change") or 0)
    # When the same line is read twice (a tail replaying after a crash)
    reports = [ingest(storage, redis_client, ORDER_FLOW, "canal", [ddl]) for _ in range(2)]
    # Then one schema_change row and one alarm
    assert [r.schema_changes for r in reports] == [1, 1]
    with storage.shard_engine(0).connect() as connection:
        rows = connection.execute(select(SchemaChangeRecord.position).where(
            SchemaChangeRecord.sql == "ALTER TABLE gqsh_order ADD COLUMN note varchar(8)")).fetchall()
    assert len({row.position for row in rows}) == len(rows)
    assert int(redis_client.hget(ALARM_COUNTERS, "schema_change") or 0) - before == 1


def test_a_line_that_stays_contended_is_quarantined_and_the_batch_goes_on(storage, redis_client) -> None:
    # Given a batch of three orders, one of whose metadata rows every transaction deadlocks on
    import pymysql
    from sqlalchemy.exc import OperationalError

    headers = [OrderHeaderFactory(order_id=new_order_id()) for _ in range(3)]
    stuck = headers[1]["order_id"]
    engines = {storage.engine_for_order(h["order_id"]) for h in headers}

    def deadlock(conn, cursor, statement, parameters, context, executemany):  # type: ignore[no-untyped-def]
        if "meta_" in statement and stuck in str(parameters):
            raise OperationalError(statement, parameters, pymysql.err.OperationalError(1213, "Deadlock found"))

    for engine in engines:
        event.listen(engine, "before_cursor_execute", deadlock)
    try:
        # When it is ingested
        report = ingest(storage, redis_client, ORDER_FLOW, "canal", [canal("gqsh_order", h) for h in headers])
    finally:
        for engine in engines:
            event.remove(engine, "before_cursor_execute", deadlock)
    # Then the other two are stored, the stuck one is quarantined with the reason, and the
    # retries are reported
    assert (report.accepted, report.quarantined) == (2, 1)
    assert report.touched == {(h["order_id"], "SUBMIT") for h in headers if h["order_id"] != stuck}
    assert report.retries >= 2 * (8 - 1)
    [reason] = report.reasons
    assert reason.startswith("could not be stored: lock contention after 8 attempts")
    with storage.engine_for_order(stuck).connect() as connection:
        kept = connection.execute(select(QuarantinedInput.reason).where(QuarantinedInput.order_id == stuck)).scalars()
        assert list(kept) == [reason]
