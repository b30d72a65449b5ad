"""The changelog relay as beat runs it: real worker and beat processes on MariaDB, PostgreSQL and a
RabbitMQ virtual host of the test's own, fed by ``tdc ingest``, publishing to a Redis stream; the
online orders' events, and the Kingdee sales orders' declared events."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from sqlalchemy import func, select

from demo.flow_run import flow_problems
from demo.flows import sal_order
from demo.history import generate_history
from demo.processes import running, start_beat, start_worker
from models.changelog import CHANGELOG
from models.storage import Storage
from streams.events import event_id
from tests.e2e.helpers import run_tdc, wait_until_matching, worker_env
from tests.integration.streams_helpers import assert_changelog_complete_and_ordered, make_sinks
from tests.integration.test_outbox import assert_last_after_images_are_the_wide_rows, outbox_rows

pytestmark = pytest.mark.e2e


def _waiting(storage: Storage) -> int:
    total = 0
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            total += connection.execute(select(func.count()).select_from(CHANGELOG)
                                        .where(CHANGELOG.c.published_at.is_(None))).scalar_one()
    return total


def test_beat_relays_every_change_the_workers_commit(fresh_storage, rabbitmq_vhost, redis_client,
                                                    tmp_path: Path) -> None:
    # Given workers and beat with a changelog and an events sink, relaying every second
    pair = make_sinks("redis")
    storage = fresh_storage()
    history = generate_history(60, seed=31)
    env = worker_env(storage, rabbitmq_vhost, tmp_path, TDC_CHANGELOG_RELAY_SECONDS="1", **pair.env())
    files = {}
    for fmt in ("canal", "business"):
        files[fmt] = tmp_path / f"{fmt}.jsonl"
        files[fmt].write_text("\n".join(line for f, line in history.lines if f == fmt) + "\n")
    try:
        with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                      start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
            # When the history is ingested and processed
            for fmt in ("canal", "business"):
                result = run_tdc(env, "ingest", "--format", fmt, str(files[fmt]))
                assert result.returncode == 0, result.stderr
            assert wait_until_matching(storage, history, 300) == []
            deadline = time.monotonic() + 60
            while _waiting(storage) and time.monotonic() < deadline:
                time.sleep(1)
        # Then beat's relay published every change the workers wrote, in order per order, and the
        # last of each order is its wide row
        assert _waiting(storage) == 0, (tmp_path / "worker.log").read_text()[-3000:]
        outbox = {(row.order_id, row.version) for row in outbox_rows(storage)}
        assert len(outbox) > len(history.order_ids)
        changes = pair.changes()
        assert_changelog_complete_and_ordered(changes, outbox)
        assert_last_after_images_are_the_wide_rows(storage, [change for _, change in changes])
        assert {event["type"] for _, event in pair.events()} >= {"PayOrderDetail", "FirstConsumeDate"}
    finally:
        pair.close()


def test_beat_relays_a_kingdee_flows_declared_events(fresh_storage, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given workers and beat running the online orders and the Kingdee sales orders, with an events sink
    pair = make_sinks("redis")
    storage = fresh_storage()
    documents = sal_order.generate(40, seed=34)
    env = worker_env(storage, rabbitmq_vhost, tmp_path, TDC_CHANGELOG_RELAY_SECONDS="1", TDC_FLOWS="gqsh,sal_order",
                     TDC_SOURCE_DATABASES="gqsh,jd_erp", **pair.env())
    path = tmp_path / "documents.jsonl"
    path.write_text("\n".join(line for _, line in documents.lines) + "\n")
    try:
        with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                      start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
            # When the documents are ingested and processed, and beat's relay has caught up
            result = run_tdc(env, "ingest", "--format", "canal", str(path))
            assert result.returncode == 0, result.stderr
            deadline = time.monotonic() + 300
            while (problems := flow_problems(documents, {}, storage)) and time.monotonic() < deadline:
                time.sleep(1)
            assert problems == [], (tmp_path / "worker.log").read_text()[-3000:]
            deadline = time.monotonic() + 60
            while _waiting(storage) and time.monotonic() < deadline:
                time.sleep(1)
        assert _waiting(storage) == 0
        # Then every audited, unvoided document and each of its entries was published once as
        # its declared event, the newest carrying what the wide rows hold; one first per customer
        audited = {fid: row for fid, row in documents.expected["dwd_t_sal_order"].items()
                   if row["FDOCUMENTSTATUS"] == "C" and row["FCANCELSTATUS"] != "B"}
        latest: dict[str, dict] = {}
        for _, event in pair.events():
            if event["event_id"] not in latest or event["version"] > latest[event["event_id"]]["version"]:
                latest[event["event_id"]] = event
        by_type: dict[str, dict[str, dict]] = {}
        for key, event in latest.items():
            by_type.setdefault(event["type"], {})[key] = event
        assert set(by_type) == {"SalesOrderAudited", "SalesOrderEntryAudited", "FirstCustomerOrder"}
        assert set(by_type["SalesOrderAudited"]) == {event_id("SalesOrderAudited", str(fid)) for fid in audited}
        for fid, row in audited.items():
            data = by_type["SalesOrderAudited"][event_id("SalesOrderAudited", str(fid))]["data"]
            assert (data["FBILLNO"], data["entry_count"]) == (row["FBILLNO"], row["entry_count"])
        entries = [row for row in documents.expected["dwd_t_sal_order_entry"].values() if row["FID"] in audited]
        assert set(by_type["SalesOrderEntryAudited"]) == {
            event_id("SalesOrderEntryAudited", str(row["FID"]), str(row["FENTRYID"])) for row in entries}
        assert {e["data"]["FCUSTID"] for e in by_type["FirstCustomerOrder"].values()} == {
            row["FCUSTID"] for row in audited.values()}
    finally:
        pair.close()
