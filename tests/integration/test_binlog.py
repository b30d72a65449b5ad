"""The binlog tail and snapshots against a real MariaDB with its binlog on: SQL statements on the
reference source tables become the expected wide rows, exactly as the same history fed as Canal
messages does; a killed tail resumes; an ALTER TABLE mid-stream is recorded and survived; a
server without the needed settings, and a purged position, are refused plainly."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import time

import pytest
import redis
from sqlalchemy import create_engine, select

from cdc.binlog import BinlogTail, DecodingFailed, start_position
from cdc.snapshot import take_snapshot
from cdc.source import (
    Checkpoint,
    SourceError,
    current_coordinates,
    load_checkpoint,
    source_of,
    store_checkpoint,
)
from chain.wide_rows import read_orders
from demo.check import differences
from demo.history import History, generate_history
from demo.source import play_changes, source_metadata
from flows.registry import ACCEPTED as ORDER_FLOW
from models.cdc import CdcPosition, SchemaChangeRecord
from models.sharded import meta_table
from models.storage import Storage
from reliability.alarms import ALARM_COUNTERS
from settings import load_settings
from tests.conftest import REDIS, env_of
from tests.integration.helpers import ingest, process_history, run_chains, run_tdc

pytestmark = pytest.mark.integration

NAME = "test-tail"


def _play(url: str, changes, per_transaction: int = 7) -> None:  # type: ignore[no-untyped-def]
    """The changes as SQL, a few per transaction (so transactions hold several row events)."""
    engine = create_engine(url)
    metadata = source_metadata(ORDER_FLOW)
    for start in range(0, len(changes), per_transaction):
        with engine.begin() as connection:
            play_changes(connection, metadata, changes[start : start + per_transaction])
    engine.dispose()


def _collector():  # type: ignore[no-untyped-def]
    """A submit that only collects the task keys, for run_chains to process in this process."""
    touched: set = set()

    def submit(keys) -> int:  # type: ignore[no-untyped-def]
        touched.update(keys)
        return 0

    return touched, submit


def _tail(storage, client, url: str, start: str | None = None, decoding: str = "process"):  # type: ignore[no-untyped-def]
    """Tail until caught up, from this process; returns the report and the task keys it touched."""
    source = source_of(url)
    touched, submit = _collector()
    tail = BinlogTail(storage, client, ORDER_FLOW, source, NAME, 4242, submit, decoding=decoding)
    report = tail.run(start_position(storage, source, NAME, start), stop_when_idle=True)
    return report, touched


def _payments(storage, client, history: History) -> set:  # type: ignore[no-untyped-def]
    lines = [line for fmt, line in history.lines if fmt == "business"]
    return ingest(storage, client, ORDER_FLOW, "business", lines).touched


def _problems(storage, history: History) -> list[str]:  # type: ignore[no-untyped-def]
    orders, items = read_orders(storage, history.order_ids)
    return (differences(history.expected_orders, orders, "dwd_order")
            + differences(history.expected_items, items, "dwd_order_item"))


@pytest.mark.parametrize("decoding", ["process", "thread"])
def test_a_history_run_as_sql_and_tailed_gives_the_rows_its_canal_messages_give(
        fresh_storage, redis_client, source_database, decoding) -> None:
    # Given one history, fed once as Canal messages and once as SQL statements on a source database
    history = generate_history(80, seed=71, displacement=0, duplicate_rate=0)
    by_canal, by_binlog = fresh_storage(), fresh_storage()
    process_history(by_canal, redis_client, history)
    _tail(by_binlog, redis_client, source_database, start="now")
    _play(source_database, history.changes)
    # When the tail reads the binlog (decoding in a process of its own, or on this one) and the
    # payments arrive as usual
    report, touched = _tail(by_binlog, redis_client, source_database, decoding=decoding)
    run_chains(by_binlog, redis_client, touched | _payments(by_binlog, redis_client, history))
    # Then both give the expected rows, and the same dwd_order rows
    assert report.changes == len(history.changes) and report.intake.quarantined == 0
    assert _problems(by_canal, history) == []
    assert _problems(by_binlog, history) == []
    columns = list(next(iter(history.expected_orders.values())))
    canal_rows, binlog_rows = read_orders(by_canal, history.order_ids)[0], read_orders(by_binlog, history.order_ids)[0]
    assert {o: {c: r[c] for c in columns} for o, r in canal_rows.items()} == \
           {o: {c: r[c] for c in columns} for o, r in binlog_rows.items()}


def test_a_batch_that_cannot_be_stored_stops_the_tail_before_any_later_position_is_stored(
        fresh_storage, redis_client, source_database) -> None:
    # Given a tail whose batches are stored on a writer thread while the next is read, and a
    # history of several batches in the binlog
    storage = fresh_storage()
    history = generate_history(60, seed=73, displacement=0, duplicate_rate=0)
    _tail(storage, redis_client, source_database, start="now")
    begun = load_checkpoint(storage, NAME)
    _play(source_database, history.changes, per_transaction=3)
    batches: list[int] = []

    def submit(keys) -> int:  # type: ignore[no-untyped-def]
        batches.append(len(keys))
        if len(batches) == 2:
            raise RuntimeError("the broker went away")
        return 0

    # When storing its second batch fails
    tail = BinlogTail(storage, redis_client, ORDER_FLOW, source_of(source_database), NAME, 4244, submit, batch=40)
    with pytest.raises(RuntimeError, match="the broker went away"):
        tail.run(start_position(storage, source_of(source_database), NAME, None), stop_when_idle=True)
    # Then the tail stopped with the error, and the stored position is the first batch's: the
    # failed batch and everything after it are read again on restart
    stored = load_checkpoint(storage, NAME)
    assert len(batches) == 2 and stored is not None and begun is not None
    assert stored[0] == tail.report.position and stored[0] != begun[0]
    report, _ = _tail(storage, redis_client, source_database)
    assert tail.report.intake.lines + report.changes == len(history.changes)
    # The failed batch was committed by intake before its submit failed: read again, it is a
    # duplicate, never lost
    assert report.intake.duplicated >= batches[1]
    # And the decoding process stopped with the tail
    assert multiprocessing.active_children() == []


def test_a_decoding_process_that_fails_stops_the_tail_with_its_error(storage, redis_client, source_database) -> None:
    # Given a tail asked to start in a binlog file the server does not have
    tail = BinlogTail(storage, redis_client, ORDER_FLOW, source_of(source_database), NAME, 4245, lambda keys: 0)
    # Then the error the decoding process met stops the tail, named, and nothing is stored
    with pytest.raises(DecodingFailed, match="decoding the binlog failed: OperationalError"):
        tail.run(Checkpoint("no-such-binlog.000042", 4, None, 0), stop_when_idle=True)
    assert tail.report.position is None and multiprocessing.active_children() == []


def _children(pid: int) -> list[int]:
    with open(f"/proc/{pid}/task/{pid}/children") as children:
        return [int(child) for child in children.read().split()]


def _running(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _tail_started_after(storage, source_database: str, seed: int):  # type: ignore[no-untyped-def]
    """A history played on the source after a stored position, and ``tdc cdc binlog`` started on
    it: (history, env, stored position, the tail's process).  The tail sends its chains to a
    broker of its own: they are not for the e2e tests' workers."""
    history = generate_history(150, seed=seed, displacement=0, duplicate_rate=0)
    env = {**env_of(storage), "TDC_BROKER_URL": REDIS.rsplit("/", 1)[0] + "/12", "TDC_CDC_SOURCE_URL": source_database}
    with source_of(source_database).connect() as connection:
        start = current_coordinates(connection)
    store_checkpoint(storage, NAME, Checkpoint(*start, None, 0), "tail")
    _play(source_database, history.changes, per_transaction=3)
    tail = subprocess.Popen([sys.executable, "-m", "cli.main", "cdc", "binlog", "--name", NAME],
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    return history, env, start, tail


def _until_stored_past(storage, start: tuple[str, int], tail, ready=lambda: True) -> None:  # type: ignore[no-untyped-def]
    """Wait until the tail has stored a position past ``start`` (and ``ready()`` holds)."""
    deadline = time.monotonic() + 60
    while True:
        stored = load_checkpoint(storage, NAME)
        if stored is not None and stored[0].log_pos != start[1] and ready():
            return
        assert time.monotonic() < deadline and tail.poll() is None, tail.communicate()[1].decode()[-2000:]
        time.sleep(0.02)


def _resumed_exactly(storage, redis_client, env: dict[str, str], history: History,  # type: ignore[no-untyped-def]
                     *options: str):
    """Start the tail again (with ``options``) until it has caught up and run the chains it made;
    its result, once every row is exact."""
    result = run_tdc(env, "cdc", "binlog", "--name", NAME, "--stop-when-idle", *options)
    assert result.returncode == 0, result.stderr
    # (its chains went to a broker no worker reads: free their leases, as their expiry would,
    # and let the rescan take the tasks)
    for key in redis_client.scan_iter(f"tdc:lease:D{history.run_id}*"):
        redis_client.delete(key)
    redis.Redis.from_url(env["TDC_BROKER_URL"]).flushdb()
    run_chains(storage, redis_client, _payments(storage, redis_client, history))
    run_chains(storage, redis_client, [])
    assert "0 quarantined" in result.stdout
    assert _problems(storage, history) == []
    return result


@pytest.mark.parametrize("decode_in", ["thread", "process"])
def test_tdc_cdc_binlog_decodes_where_it_is_told(fresh_storage, redis_client, source_database, decode_in: str) -> None:
    # Given a history played into the source after the tail's stored position
    storage = fresh_storage()
    history = generate_history(40, seed=76, displacement=0, duplicate_rate=0)
    env = {**env_of(storage), "TDC_BROKER_URL": REDIS.rsplit("/", 1)[0] + "/12", "TDC_CDC_SOURCE_URL": source_database}
    with source_of(source_database).connect() as connection:
        store_checkpoint(storage, NAME, Checkpoint(*current_coordinates(connection), None, 0), "tail")
    _play(source_database, history.changes)
    # When `tdc cdc binlog --decode-in thread|process` runs until caught up
    result = _resumed_exactly(storage, redis_client, env, history, "--decode-in", decode_in)
    # Then every row is exact, decoded where it was told
    where = "in a thread of this one" if decode_in == "thread" else "in a process of its own"
    assert f"decoding {where}" in result.stderr


def test_a_decoding_process_killed_mid_stream_stops_the_tail_and_a_restart_loses_nothing(
        fresh_storage, redis_client, source_database) -> None:
    # Given a history in the binlog after a tail's stored position, and the tail started
    storage = fresh_storage()
    history, env, start, tail = _tail_started_after(storage, source_database, seed=74)
    # When its decoding process is killed once the tail has stored a position part of the way
    _until_stored_past(storage, start, tail, ready=lambda: bool(_children(tail.pid)))
    (decoder,) = _children(tail.pid)
    os.kill(decoder, signal.SIGKILL)
    # Then the tail stops with an error that says where a restart resumes
    _, stderr = tail.communicate(timeout=60)
    assert tail.returncode == 1, stderr.decode()[-2000:]
    assert "the binlog decoding process exited" in stderr.decode() and "a restart resumes there" in stderr.decode()
    # And started again it catches up: every row exact, nothing lost or doubled
    _resumed_exactly(storage, redis_client, env, history)


def test_a_tail_killed_outright_takes_its_decoding_process_with_it(storage, source_database) -> None:
    # Given a tail following an idle source (the server sends a heartbeat a second)
    env = {**env_of(storage), "TDC_BROKER_URL": REDIS.rsplit("/", 1)[0] + "/12", "TDC_CDC_SOURCE_URL": source_database}
    command = [sys.executable, "-m", "cli.main", "cdc", "binlog", "--name", "orphan-check", "--from", "now"]
    tail = subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not _children(tail.pid):
        assert time.monotonic() < deadline and tail.poll() is None, tail.communicate()[1].decode()[-2000:]
        time.sleep(0.02)
    (decoder,) = _children(tail.pid)
    # When the tail is killed with SIGKILL (no chance to stop its child)
    os.kill(tail.pid, signal.SIGKILL)
    tail.wait()
    # Then the decoding process notices within a few heartbeats and exits
    deadline = time.monotonic() + 15
    while _running(decoder):
        assert time.monotonic() < deadline, "the decoding process outlived its tail"
        time.sleep(0.1)


def test_a_tail_killed_mid_stream_resumes_from_its_position_losing_and_doubling_nothing(
        fresh_storage, redis_client, source_database, tmp_path) -> None:
    # Given a source with a history in its binlog after a tail's stored position, and the tail started
    storage = fresh_storage()
    history, env, start, tail = _tail_started_after(storage, source_database, seed=72)
    # When it is killed with SIGKILL once it has stored a position part of the way through
    _until_stored_past(storage, start, tail)
    os.kill(tail.pid, signal.SIGKILL)
    tail.wait()
    killed_at = load_checkpoint(storage, NAME)[0]  # type: ignore[index]
    # Then, started again until it has caught up, it resumed where it had stored and every row is exact
    _resumed_exactly(storage, redis_client, env, history)
    assert (killed_at.log_file, killed_at.log_pos) > start
    final = load_checkpoint(storage, NAME)[0]  # type: ignore[index]
    assert (final.log_file, final.log_pos) > (killed_at.log_file, killed_at.log_pos)


def test_an_added_column_mid_stream_is_recorded_alarmed_and_assigns_nothing_wrongly(
        fresh_storage, redis_client, source_database) -> None:
    # Given a tail, and half a history played
    storage = fresh_storage()
    history = generate_history(60, seed=73, displacement=0, duplicate_rate=0)
    _tail(storage, redis_client, source_database, start="now")
    half = len(history.changes) // 2
    _play(source_database, history.changes[:half])
    alarms_before = int(redis_client.hget(ALARM_COUNTERS, "schema_change") or 0)
    # When a column is added in the middle of the header table, and the rest is played
    alter = "ALTER TABLE gqsh_order ADD COLUMN coupon_id VARCHAR(32) NULL AFTER store_id"
    with source_of(source_database).connect() as connection, connection.cursor() as cursor:
        cursor.execute(alter)
    _play(source_database, history.changes[half:])
    report, touched = _tail(storage, redis_client, source_database)
    run_chains(storage, redis_client, touched | _payments(storage, redis_client, history))
    # Then every row is exact, the DDL is recorded with its statement, and alarmed
    assert _problems(storage, history) == []
    assert report.intake.schema_changes == 1
    with storage.shard_engine(0).connect() as connection:
        recorded = connection.execute(select(SchemaChangeRecord.source_table, SchemaChangeRecord.sql).where(
            SchemaChangeRecord.source_database == source_of(source_database).database)).all()
    assert [tuple(r) for r in recorded] == [("gqsh_order", alter)]
    assert int(redis_client.hget(ALARM_COUNTERS, "schema_change") or 0) == alarms_before + 1


def test_a_server_without_full_row_metadata_is_refused_with_what_to_set(
        storage, service_env, binlog_server, source_database) -> None:
    with binlog_server.connect() as connection, connection.cursor() as cursor:
        cursor.execute("SET GLOBAL binlog_row_metadata = 'MINIMAL'")
        try:
            result = run_tdc({**service_env, "TDC_CDC_SOURCE_URL": source_database}, "cdc", "binlog", "--from", "now")
        finally:
            cursor.execute("SET GLOBAL binlog_row_metadata = 'FULL'")
    assert result.returncode == 2
    assert "binlog_row_metadata is MINIMAL, needs FULL" in result.stderr
    assert "binlog_row_metadata = FULL" in result.stderr


def test_a_first_snapshot_hands_over_to_the_tail_without_a_gap(fresh_storage, redis_client, source_database) -> None:
    # Given a source that already holds half a history when tdc first sees it
    storage = fresh_storage()
    history = generate_history(60, seed=74, displacement=0, duplicate_rate=0)
    half = len(history.changes) // 2
    _play(source_database, history.changes[:half])
    # When a snapshot loads it, more changes are made, and the tail starts from the stored position
    touched, submit = _collector()
    report = take_snapshot(storage, redis_client, ORDER_FLOW, source_of(source_database), NAME, submit)
    _play(source_database, history.changes[half:])
    tail_report, tail_touched = _tail(storage, redis_client, source_database)
    run_chains(storage, redis_client, touched | tail_touched | _payments(storage, redis_client, history))
    # Then the snapshot handed over its position, and every row is exact
    assert report.handed_over and sum(report.rows.values()) > 0
    assert tail_report.changes == len(history.changes) - half
    assert _problems(storage, history) == []


def test_a_purged_position_is_refused_plainly_and_a_snapshot_recovers(
        fresh_storage, redis_client, service_env, binlog_server, source_database) -> None:
    # Given a tail that stored its position, then stopped while the server purged its binlogs
    storage = fresh_storage()
    history = generate_history(40, seed=75, displacement=0, duplicate_rate=0)
    _tail(storage, redis_client, source_database, start="now")
    half = len(history.changes) // 2
    _play(source_database, history.changes[:half])
    with binlog_server.connect() as connection, connection.cursor() as cursor:
        cursor.execute("FLUSH BINARY LOGS")
        cursor.execute("SHOW MASTER STATUS")
        newest = cursor.fetchone()[0]
        # The previous file is kept for crash recovery until the server checkpoints it.
        deadline = time.monotonic() + 30
        while True:
            cursor.execute("PURGE BINARY LOGS TO %s", (newest,))
            cursor.execute("SHOW BINARY LOGS")
            if [row[0] for row in cursor.fetchall()] == [newest]:
                break
            assert time.monotonic() < deadline, "the server kept its old binlog"
            time.sleep(0.1)
    _play(source_database, history.changes[half:])
    # When the tail starts again
    env = {**env_of(storage), "TDC_BROKER_URL": service_env["TDC_BROKER_URL"], "TDC_CDC_SOURCE_URL": source_database}
    refused = run_tdc(env, "cdc", "binlog", "--name", NAME, "--stop-when-idle")
    # Then it refuses, says why and how to recover, and skipped nothing
    assert refused.returncode == 2
    assert "is no longer on the server" in refused.stderr and "tdc cdc snapshot --reset-position" in refused.stderr
    with pytest.raises(SourceError):
        start_position(storage, source_of(source_database), NAME, None)
    # And a snapshot with --reset-position, then the tail, bring every row back exactly
    touched, submit = _collector()
    take_snapshot(storage, redis_client, ORDER_FLOW, source_of(source_database), NAME, submit, reset_position=True)
    _, tail_touched = _tail(storage, redis_client, source_database)
    run_chains(storage, redis_client, touched | tail_touched | _payments(storage, redis_client, history))
    assert _problems(storage, history) == []
    with storage.shard_engine(0).connect() as connection:
        assert connection.execute(select(CdcPosition.log_file).where(CdcPosition.name == NAME)).scalar() >= newest


def test_bench_cdc_prints_both_rates_and_their_ratio(service_env, binlog_server) -> None:
    result = run_tdc({**service_env, "TDC_CDC_SOURCE_URL": binlog_server.url}, "bench", "cdc", "--orders", "20")
    assert result.returncode == 0, result.stderr
    [played] = [int(line.split(": ")[1].split()[0]) for line in result.stdout.splitlines() if "played as SQL" in line]
    loop = next(line for line in result.stdout.splitlines() if "python-mysql-replication loop" in line)
    frozen = next(line for line in result.stdout.splitlines() if "freeze_schema=True" in line)
    tail = next(line for line in result.stdout.splitlines() if "tdc cdc binlog" in line)
    assert f"{played} rows" in loop and f"{played} rows" in frozen and f"{played} rows" in tail
    assert "ratio tail/loop: " in result.stdout and "against the loop reading as the tail does: " in result.stdout


def test_a_canal_ddl_message_on_a_followed_table_is_recorded_and_alarmed(storage, redis_client) -> None:
    import json

    table = "gqsh_order"
    database = f"gqsh_src_ddl_{time.time_ns()}"
    before = int(redis_client.hget(ALARM_COUNTERS, "schema_change") or 0)
    lines = [json.dumps({"id": 9, "database": database, "table": table, "isDdl": True, "es": 1_700_000_000_000,
                         "type": "ALTER", "sql": "ALTER TABLE gqsh_order ADD COLUMN coupon_id INT"}),
             json.dumps({"id": 10, "database": database, "table": "audit_log", "isDdl": True, "es": 1_700_000_000_001,
                         "type": "ALTER", "sql": "ALTER TABLE audit_log ADD COLUMN x INT"})]
    report = ingest(storage, redis_client, ORDER_FLOW, "canal", lines)
    assert (report.schema_changes, report.ignored, report.quarantined) == (1, 1, 0)
    with storage.shard_engine(0).connect() as connection:
        recorded = connection.execute(select(SchemaChangeRecord.source_table, SchemaChangeRecord.input_format).where(
            SchemaChangeRecord.source_database == database)).all()
    assert [tuple(r) for r in recorded] == [("gqsh_order", "canal")]
    assert int(redis_client.hget(ALARM_COUNTERS, "schema_change") or 0) == before + 1


def test_a_timestamp_and_a_datetime_of_one_instant_are_stored_the_same_by_tail_and_snapshot(
        service_env, redis_client, source_database) -> None:
    # Given a source at +08:00 whose order row holds 07:30 local in a DATETIME (created_at) and in
    # a TIMESTAMP (updated_at), and tdc told the source's zone
    storage = Storage(load_settings({**service_env, "TDC_SOURCE_TIMEZONE": "Asia/Shanghai"}))
    source = source_of(source_database)
    order_id = f"TZ{time.time_ns()}"
    start = _insert_header(source, order_id, "2026-11-02 07:30:00", "SET time_zone = '+08:00'")
    try:
        # When the tail reads it, and when a snapshot reads it
        store_checkpoint(storage, NAME, start, "test")
        _tail(storage, redis_client, source_database)
        tailed = _stored_header(storage, order_id)
        take_snapshot(storage, redis_client, ORDER_FLOW, source, "tz-snapshot", lambda keys: 0, tables=["gqsh_order"])
        snapshotted = _stored_header(storage, order_id)
    finally:
        storage.dispose()
    # Then both are 23:30 UTC the day before, as the same instant from any reader must be
    assert tailed["created_at"] == tailed["updated_at"] == "2026-11-01T23:30:00.000"
    assert snapshotted == tailed


def _insert_header(source, order_id: str, updated_at: str, session: str) -> Checkpoint:  # type: ignore[no-untyped-def]
    """Insert an order header created at 07:30 (source wall clock) after running ``session`` on
    the connection; the binlog coordinates before it."""
    with source.connect() as connection:
        start = Checkpoint(*current_coordinates(connection), None, 0)
        with connection.cursor() as cursor:
            cursor.execute(session)
            cursor.execute("INSERT INTO gqsh_order (order_id, store_id, member_id, channel, status, item_count, "
                           "total_amount, discount_amount, pay_amount, created_at, updated_at) VALUES "
                           "(%s, 'S001', 'M1', 'app', 10, 1, 25, 0, 25, '2026-11-02 07:30:00', %s)",
                           (order_id, updated_at))
    return start


def _stored_header(storage, order_id: str) -> dict:  # type: ignore[no-untyped-def]
    import json

    meta = meta_table(storage.shard_of(order_id))
    with storage.engine_for_order(order_id).connect() as connection:
        content = connection.execute(select(meta.c.content).where(
            (meta.c.order_id == order_id) & (meta.c.source == "gqsh_order"))).scalar_one()
    return json.loads(content)


def test_a_source_database_no_flow_follows_is_refused_plainly(storage, redis_client, binlog_server) -> None:
    source = source_of(f"{binlog_server.url}/shop_archive")
    with pytest.raises(SourceError, match="source database 'shop_archive' is not followed .*TDC_SOURCE_DATABASES"):
        BinlogTail(storage, redis_client, ORDER_FLOW, source, NAME, 4243, lambda keys: 0).run(
            Checkpoint("mysql-bin.000001", 4, None, 0), stop_when_idle=True)


def test_a_zero_timestamp_is_no_time_from_the_tail_as_from_canal_and_snapshots(
        storage, redis_client, source_database) -> None:
    source = source_of(source_database)
    order_id = f"ZT{time.time_ns()}"
    start = _insert_header(source, order_id, "0000-00-00 00:00:00", "SET SESSION sql_mode = ''")
    store_checkpoint(storage, NAME, start, "test")
    _tail(storage, redis_client, source_database)
    assert _stored_header(storage, order_id)["updated_at"] is None
