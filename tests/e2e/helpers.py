"""Helpers of the end-to-end tests: the environment of worker processes, an empty broker, and
waiting until storage matches a history."""

import os
import subprocess
import sys
import time
from pathlib import Path

from kombu import Connection, Queue

from demo.check import aggregate_differences, differences, expected_aggregates
from models.storage import Storage
from pipeline.aggregates import read_aggregates
from pipeline.wide_rows import read_orders
from tests.conftest import env_of

QUEUES = ("tdc.ingest", "tdc.process", "tdc.warehouse", "tdc.scheduled")


def worker_env(storage: Storage, rabbitmq: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of worker, beat and CLI processes on ``storage`` and RabbitMQ."""
    return {**os.environ, **env_of(storage), "TDC_BROKER_URL": rabbitmq, "TDC_RETRY_BASE_SECONDS": "0.2",
            "TDC_RESCAN_INTERVAL_SECONDS": "2", "TDC_HOME": str(home), **extra}


def run_tdc(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *arguments], env=env, capture_output=True,
                          text=True, timeout=300)


def purge_queues(rabbitmq: str) -> None:
    with Connection(rabbitmq) as connection:
        for name in QUEUES:
            Queue(name)(connection.default_channel).declare()
            Queue(name)(connection.default_channel).purge()


def wait_until_matching(storage: Storage, history, seconds: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Differences left in the wide rows and the (fresh) warehouse's ADS tables after at most ``seconds``."""
    expected = expected_aggregates(history.expected_orders, history.expected_items)
    deadline = time.monotonic() + seconds
    while True:
        orders, items = read_orders(storage, history.order_ids)
        problems = differences(history.expected_orders, orders, "dwd_order")
        problems += differences(history.expected_items, items, "dwd_order_item")
        with storage.dws_engine.connect() as connection:
            problems += aggregate_differences(expected, {}, read_aggregates(connection))
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)


