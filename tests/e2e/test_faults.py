"""Faults with real processes on MariaDB, PostgreSQL, Redis and RabbitMQ: a worker killed with
SIGKILL in the middle of chains, chain messages delivered three times, poison messages, two
beats at once.  After each, every order's wide row and the ADS tables equal the history's,
exactly."""

import os
import signal
import time
from pathlib import Path

import pytest
import redis
from celery import Celery, chain

from demo.history import History, generate_history
from demo.processes import running, start_beat, start_worker
from models.sharded import task_table
from pipeline.alarms import ALARM_COUNTERS
from pipeline.wide_rows import read_orders
from tests.e2e.helpers import purge_queues, run_tdc, wait_until_matching, worker_env

pytestmark = pytest.mark.e2e


def _ingest(env: dict[str, str], tmp_path: Path, history: History, name: str) -> None:
    for fmt in ("canal", "business"):
        path = tmp_path / f"{name}-{fmt}.jsonl"
        path.write_text("\n".join(line for f, line in history.lines if f == fmt) + "\n")
        result = run_tdc(env, "ingest", "--format", fmt, str(path))
        assert result.returncode == 0, result.stderr


def _both(first: History, second: History) -> History:
    return History(run_id="both", expected_orders={**first.expected_orders, **second.expected_orders},
                   expected_items={**first.expected_items, **second.expected_items})


def test_a_worker_killed_mid_chain_loses_and_doubles_nothing(fresh_storage, rabbitmq, tmp_path: Path) -> None:
    # Given a worker draining 300 orders, with a short lease so the rescan retakes orphans quickly
    storage = fresh_storage("postgresql")
    env = worker_env(storage, rabbitmq, tmp_path, TDC_LEASE_SECONDS="5")
    purge_queues(rabbitmq)
    history = generate_history(300, seed=31)
    with running([start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        victim = start_worker(env, tmp_path / "worker-1.log", concurrency=2)
        _ingest(env, tmp_path, history, "all")
        deadline = time.monotonic() + 120
        while len([o for o in read_orders(storage, history.order_ids)[0].values() if o["status"]]) < 60:
            assert time.monotonic() < deadline, "the first worker made no progress"
            time.sleep(0.2)
        # When it is killed with SIGKILL, pool and all, in the middle of its chains
        os.killpg(victim.pid, signal.SIGKILL)
        victim.wait()
        # Then a new worker finishes everything exactly once
        with running([start_worker(env, tmp_path / "worker-2.log", concurrency=2)]):
            problems = wait_until_matching(storage, history, 300)
    assert problems == [], (tmp_path / "worker-2.log").read_text()[-3000:]


def test_triple_delivery_and_poison_messages_under_two_beats_change_nothing_and_block_nothing(
        fresh_storage, rabbitmq, tmp_path: Path) -> None:
    # Given a processed history, a worker running, and two beat processes by mistake
    storage = fresh_storage("mariadb")
    env = worker_env(storage, rabbitmq, tmp_path)
    purge_queues(rabbitmq)
    first, second = generate_history(60, seed=41), generate_history(40, seed=42)
    client = redis.Redis.from_url(env["TDC_REDIS_URL"])
    poison_before = int(client.hget(ALARM_COUNTERS, "poison_message") or 0)
    app = Celery("sender", broker=rabbitmq)
    app.conf.update(task_serializer="json", accept_content=["json"])
    with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                  start_beat(env, tmp_path / "beat-1.log", tmp_path / "beat-schedule-1"),
                  start_beat(env, tmp_path / "beat-2.log", tmp_path / "beat-schedule-2")]):
        _ingest(env, tmp_path, first, "first")
        assert wait_until_matching(storage, first, 300) == []
        # When every task's merge -> aggregate -> finish is delivered three more times, and
        # poison messages are sent to every step
        keys = []
        for order_id in first.order_ids:
            tasks = task_table(storage.shard_of(order_id))
            with storage.engine_for_order(order_id).connect() as connection:
                keys += [{"order_id": order_id, "operation_type": row.operation_type, "token": "replayed",
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
        problems = wait_until_matching(storage, _both(first, second), 300)
    # Then both histories hold exactly, and the poison was alarmed, not retried forever
    assert problems == [], (tmp_path / "worker.log").read_text()[-3000:]
    assert int(client.hget(ALARM_COUNTERS, "poison_message") or 0) >= poison_before + 3
