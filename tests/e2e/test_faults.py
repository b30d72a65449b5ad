"""Faults with real processes on MariaDB, PostgreSQL, Redis and RabbitMQ: a worker killed with
SIGKILL in the middle of chains, a Redis restart and a broker restart under load, chain messages
delivered three times, poison messages, two beats at once.  After each, every order's wide row
and the ADS tables equal the history's, exactly."""

import datetime as dt
import os
import signal
import time
from pathlib import Path

import pytest
import redis
from celery import Celery, chain
from sqlalchemy import insert, select

from demo.history import History, generate_history
from demo.processes import running, start_beat, start_worker
from models.orders import FailedTask, OrderFence
from models.sharded import task_table
from reliability.alarms import ALARM_COUNTERS
from tests.conftest import new_order_id
from tests.e2e.helpers import (
    PrivateRedis,
    merged,
    restart_rabbitmq,
    run_tdc,
    wait_for_progress,
    wait_until_matching,
    worker_env,
)

pytestmark = pytest.mark.e2e


def _ingest(env: dict[str, str], tmp_path: Path, history: History, name: str) -> None:
    for fmt in ("canal", "business"):
        path = tmp_path / f"{name}-{fmt}.jsonl"
        path.write_text("\n".join(line for f, line in history.lines if f == fmt) + "\n")
        result = run_tdc(env, "ingest", "--format", fmt, str(path))
        assert result.returncode == 0, result.stderr


def test_a_worker_killed_mid_chain_loses_and_doubles_nothing(fresh_storage, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given a worker draining 1000 orders, with a short lease so the rescan retakes orphans quickly
    storage = fresh_storage("postgresql")
    env = worker_env(storage, rabbitmq_vhost, tmp_path, TDC_LEASE_SECONDS="5")
    history = generate_history(1000, seed=31)
    with running([start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        victim = start_worker(env, tmp_path / "worker-1.log", concurrency=2)
        _ingest(env, tmp_path, history, "all")
        wait_for_progress(storage, history, 60)
        # When it is killed with SIGKILL, pool and all, in the middle of its chains
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        # Then a new worker finishes everything exactly once
        with running([start_worker(env, tmp_path / "worker-2.log", concurrency=2)]):
            problems = wait_until_matching(storage, history, 300)
    assert problems == [], (tmp_path / "worker-2.log").read_text()[-3000:]


def _next_minute(ahead_seconds: int) -> dt.datetime:
    """The first whole UTC minute at least ``ahead_seconds`` from now."""
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=ahead_seconds)
    return soon.replace(second=0, microsecond=0) + dt.timedelta(minutes=1)


def test_triple_delivery_and_poison_messages_under_two_beats_change_nothing_and_block_nothing(
        fresh_storage, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given a processed history, a worker running, two beat processes by mistake, an unresolved
    # failed task, and the daily digest due a minute or so from now (in a Redis of the test's own,
    # so no earlier run has used today's digest)
    storage = fresh_storage("mariadb")
    failed_order = new_order_id("F")
    with storage.order_transaction(failed_order) as connection:
        connection.execute(insert(FailedTask).values(
            order_id=failed_order, operation_type="PAY", reason="waiting for SUBMIT",
            last_error="waiting for SUBMIT", attempts=10, history="[]", sources="[]",
            failed_at=dt.datetime.now(dt.UTC).replace(tzinfo=None)))
    digest_at = _next_minute(20)
    server = PrivateRedis(tmp_path / "redis")
    env = worker_env(storage, rabbitmq_vhost, tmp_path, TDC_REDIS_URL=server.url, TDC_DIGEST_AT=f"{digest_at:%H:%M}")
    first, second = generate_history(60, seed=41), generate_history(40, seed=42)
    client = redis.Redis.from_url(server.url)
    app = Celery("sender", broker=rabbitmq_vhost)
    app.conf.update(task_serializer="json", accept_content=["json"])
    with server, running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                          start_beat(env, tmp_path / "beat-1.log", tmp_path / "beat-schedule-1"),
                          start_beat(env, tmp_path / "beat-2.log", tmp_path / "beat-schedule-2")]):
        _ingest(env, tmp_path, first, "first")
        assert wait_until_matching(storage, first, 300) == []
        # When every task's merge -> aggregate -> finish is delivered three more times, with the
        # token of the chain that last held its order (so fencing does not stop them: only
        # idempotence does), and poison messages are sent to every step
        keys = []
        for order_id in first.order_ids:
            tasks = task_table(storage.shard_of(order_id))
            with storage.engine_for_order(order_id).connect() as connection:
                token = connection.execute(select(OrderFence.token).where(OrderFence.order_id == order_id)).scalar()
                keys += [{"order_id": order_id, "operation_type": row.operation_type, "token": token,
                          "version": row.version}
                         for row in connection.execute(tasks.select().where(tasks.c.order_id == order_id))]
        for _ in range(3):
            chain(app.signature("tdc.merge", kwargs={"keys": keys}, immutable=True, queue="tdc.process"),
                  app.signature("tdc.aggregate", queue="tdc.warehouse"),
                  app.signature("tdc.finish", queue="tdc.process")).apply_async()
        app.send_task("tdc.check", kwargs={"keys": "not a list"}, queue="tdc.process")
        app.send_task("tdc.merge", kwargs={"keys": [{"order_id": 42, "operation_type": "PAY"}]}, queue="tdc.process")
        app.send_task("tdc.aggregate", kwargs={"wrong": "arguments"}, queue="tdc.warehouse")
        app.send_task("tdc.finish", args=[[None, "junk"]], queue="tdc.process")
        # And more input arrives after them
        _ingest(env, tmp_path, second, "second")
        problems = wait_until_matching(storage, merged(first, second), 300)
        # And both beats send the digest when it falls due
        deadline = time.monotonic() + (digest_at - dt.datetime.now(dt.UTC)).total_seconds() + 90
        while _digest_runs(tmp_path / "worker.log") < 2:
            assert time.monotonic() < deadline, "the digest did not run twice"
            time.sleep(1)
        alarms = {key.decode(): int(value) for key, value in client.hgetall(ALARM_COUNTERS).items()}
    # Then both histories hold exactly, the poison was alarmed, not retried forever, and the
    # digest, sent by both beats and run twice, alarmed once
    assert problems == [], (tmp_path / "worker.log").read_text()[-3000:]
    assert alarms.get("poison_message", 0) >= 3
    for beat in ("beat-1.log", "beat-2.log"):
        assert "Sending due task failed-task-digest" in (tmp_path / beat).read_text()
    assert alarms.get("failed_digest") == 1


def _digest_runs(worker_log: Path) -> int:
    return sum(1 for line in worker_log.read_text().splitlines()
               if "tdc.failed_digest[" in line and "succeeded" in line)


def test_a_redis_restart_under_load_loses_and_doubles_nothing(fresh_storage, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given workers draining 1000 orders, with locks and dimensions in a Redis of the test's own
    storage = fresh_storage("postgresql")
    with PrivateRedis(tmp_path / "redis") as server:
        env = worker_env(storage, rabbitmq_vhost, tmp_path, TDC_REDIS_URL=server.url, TDC_LEASE_SECONDS="5")
        history = generate_history(1000, seed=51)
        with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                      start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
            _ingest(env, tmp_path, history, "all")
            wait_for_progress(storage, history, 60)
            # When Redis goes away for five seconds in the middle of their chains, and comes back
            server.stop()
            time.sleep(5)
            server.start()
            problems = wait_until_matching(storage, history, 300)
    # Then every order and every ADS row is exact: steps retried, nothing lost or doubled
    log = (tmp_path / "worker.log").read_text()
    assert problems == [], log[-3000:]
    assert "ConnectionError" in log, "no step met the outage; the test did not test it"


def test_a_broker_restart_under_load_loses_and_doubles_nothing(fresh_storage, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given workers draining 1000 orders over RabbitMQ
    storage = fresh_storage("mariadb")
    env = worker_env(storage, rabbitmq_vhost, tmp_path, TDC_LEASE_SECONDS="5")
    history, late = generate_history(1000, seed=61), generate_history(40, seed=62)
    with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                  start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        _ingest(env, tmp_path, history, "all")
        wait_for_progress(storage, history, 60)
        # When the broker stops with chains in flight, more input is ingested while it is down,
        # and the broker comes back
        restart_rabbitmq(while_down=lambda: _ingest(env, tmp_path, late, "late"))
        problems = wait_until_matching(storage, merged(history, late), 300)
    # Then both histories are exact: unacknowledged messages were redelivered, refused submits
    # were left to the rescan, and duplicates changed nothing
    assert problems == [], (tmp_path / "worker.log").read_text()[-3000:]
