"""Helpers of the consumer tests: messages in the exact shapes Canal and Debezium Server put on a
broker, a ``tdc consume`` process run or killed, and the exactness check after the chains ran."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import amqp
import pytest
import redis
from kombu import Connection
from sqlalchemy import func, select

from chain.wide_rows import read_orders
from demo.check import ORDER_ADS, aggregate_differences, differences, expected_aggregates
from demo.history import History
from flows.registry import ACCEPTED as ORDER_FLOW
from models.orders import QuarantinedInput
from models.storage import Storage
from streams.consume.figures import CONSUMER_FIGURES
from tests.integration.helpers import run_chains
from warehouse.aggregates import read_aggregates

#: java.sql.Types of the declared source types, as Canal's ``sqlType`` gives them.
SQL_TYPES = {"varchar": 12, "int": 4, "bigint": -5, "decimal": 3, "money": 3, "datetime": 93, "timestamp": 93}
#: Messages no broker connector would make valid: bytes that are not UTF-8, and nothing at all.
POISON = [b"\xff\xfe\x00not utf-8", b""]
#: Debezium's topic prefix in the tests (``topic.prefix``; the destination is PREFIX.db.table).
TOPIC_PREFIX = "gqsh-source"


def _mysql_type(declared: str) -> str:
    return "decimal(12,2)" if declared == "money" else declared


def canal_flat_message(line: str) -> bytes:
    """The body Canal's RabbitMQ connector publishes for one flat message (``CanalRabbitMQProducer.send``:
    ``JSON.toJSONBytes(flatMessage, WriteNulls)``): every FlatMessage field, ``sqlType`` and
    ``mysqlType`` included (tests/corpus/canal.yaml), as compact UTF-8 JSON.  ``line`` is one of
    ``demo.history``'s rendered Canal lines (a malformed one is sent as it is)."""
    try:
        message = json.loads(line)
        columns = ORDER_FLOW.tables[message["table"]].columns
        names = list(message["data"][0])
        full = {"data": message["data"], "database": message["database"], "es": message["es"],
                "gtid": message["gtid"], "id": message["id"], "isDdl": message["isDdl"],
                "mysqlType": {n: _mysql_type(columns[n]) for n in names}, "old": message["old"],
                "pkNames": message["pkNames"], "sql": message["sql"],
                "sqlType": {n: SQL_TYPES[columns[n].split("(")[0]] for n in names}, "table": message["table"],
                "ts": message["ts"], "type": message["type"]}
    except (ValueError, KeyError, TypeError, IndexError):
        return line.encode()
    return json.dumps(full, separators=(",", ":"), ensure_ascii=False).encode()


def debezium_destination(line: str, prefix: str = TOPIC_PREFIX) -> str | None:
    """The destination Debezium Server sends a change event to (``<topic.prefix>.<db>.<table>``);
    None for a line that is not a change event."""
    try:
        source = json.loads(line)["source"]
        return f"{prefix}.{source['db']}.{source['table']}"
    except (ValueError, KeyError, TypeError):
        return None


def debezium_key(line: str) -> str:
    """The record key Debezium writes beside the value (the primary key, ``schemas.enable=false``)."""
    event = json.loads(line)
    table = ORDER_FLOW.tables[event["source"]["table"]]
    row = event["after"] or event["before"]
    return json.dumps({table.key: row[table.key]}, separators=(",", ":"))


#: Every consumer process the tests started, so none outlives its test (``no_consumer_left``).
STARTED: list[subprocess.Popen[str]] = []


def tdc_consume(env: dict[str, str], *arguments: str, stderr: Path | None = None) -> subprocess.Popen[str]:
    """``tdc consume ARGUMENTS`` started in a session of its own; stderr to a pipe or to ``stderr``."""
    process = subprocess.Popen([sys.executable, "-m", "cli.main", "consume", *arguments], env={**os.environ, **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE if stderr is None else stderr.open("w"),
                               text=True, start_new_session=True)
    STARTED.append(process)
    return process


@pytest.fixture(autouse=True)
def no_consumer_left() -> Iterator[None]:
    """Kill whatever consumer a test started and left running (a failed assertion, say)."""
    yield
    while STARTED:
        process = STARTED.pop()
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()


def finished(process: subprocess.Popen[str], timeout: float = 240) -> str:
    """Wait for a consumer to exit 0; its stdout."""
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        raise AssertionError(f"tdc consume did not exit:\n{(err or '')[-3000:]}") from None
    assert process.returncode == 0, f"exit {process.returncode}\n{out[-2000:]}\n{(err or '')[-3000:]}"
    return out


def wait_for_messages(process: subprocess.Popen[str], client: redis.Redis, name: str, messages: int) -> int:
    """Wait until consumer ``name`` has acknowledged at least ``messages`` messages; how many it has."""
    deadline = time.monotonic() + 120
    while True:
        done = int(client.hget(CONSUMER_FIGURES, f"messages:{name}") or 0)
        if done >= messages:
            return done
        assert process.poll() is None, process.communicate()[1][-3000:]
        assert time.monotonic() < deadline, "the consumer made no progress"
        time.sleep(0.01)


def kill_after(process: subprocess.Popen[str], client: redis.Redis, name: str, messages: int) -> int:
    """SIGKILL a consumer once it has acknowledged at least ``messages`` messages; how many it had."""
    done = wait_for_messages(process, client, name, messages)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    return done


def run_chains_to_rest(storage: Storage, client: redis.Redis, history: History) -> None:
    """The chains the consumer submitted went to a broker no worker reads: free their orders'
    leases, as their expiry would, and let the rescan run every due task in-process."""
    for key in client.scan_iter(f"tdc:lease:D{history.run_id}*"):
        client.delete(key)
    run_chains(storage, client, [])


def problems(storage: Storage, history: History) -> list[str]:
    """Every wide row and ADS cell that differs from the history (the warehouse is the test's own)."""
    orders, items = read_orders(storage, history.order_ids)
    found = differences(history.expected_orders, orders, "dwd_order")
    found += differences(history.expected_items, items, "dwd_order_item")
    with storage.dws_engine.connect() as connection:
        found += aggregate_differences(expected_aggregates(history.expected_orders, history.expected_items), {},
                                       read_aggregates(connection, tables=ORDER_ADS))
    return found


def lines_of(history: History, input_format: str) -> list[str]:
    return [line for fmt, line in history.lines if fmt == input_format]


def counts(stdout: str) -> dict[str, Any]:
    """The figures of a consumer's summary line."""
    summary = stdout.strip().splitlines()[0]
    acknowledged = int(summary.split(" messages acknowledged")[0])
    kept = int(summary.split(" quarantined")[0].rsplit(" ", 1)[-1])
    return {"acknowledged": acknowledged, "quarantined": kept}


def quarantined(storage: Storage, reason: str) -> int:
    """Quarantine rows whose reason starts with ``reason``, over every shard database."""
    total = 0
    for database in range(len(storage.settings.db_urls)):
        with storage.shard_engine(database).connect() as connection:
            total += connection.execute(select(func.count()).select_from(QuarantinedInput).where(
                QuarantinedInput.reason.startswith(reason))).scalar_one()
    return total


def publish_canal(url: str, history_lines: list[str], payments: list[str]) -> None:
    """What Canal's RabbitMQ connector does (alibaba/canal connector/rabbitmq-connector,
    CanalRabbitMQProducer): declare the durable queue and exchange, bind them by the routing key,
    and publish each flat message as its own PERSISTENT_TEXT_PLAIN message; poison goes the same
    way.  Business writes go to a queue of their own."""
    with Connection(url) as connection:
        channel = connection.channel()
        channel.queue_declare("canal.gqsh", durable=True, exclusive=False, auto_delete=False)
        channel.exchange_declare("canal", "direct", durable=True, auto_delete=False)
        channel.queue_bind("canal.gqsh", "canal", "gqsh")
        channel.queue_declare("payments", durable=True, exclusive=False, auto_delete=False)
        bodies = [canal_flat_message(line) for line in history_lines]
        bodies[len(bodies) // 3:len(bodies) // 3] = POISON
        for body in bodies:
            channel.basic_publish(amqp.Message(body, content_type="text/plain", delivery_mode=2, priority=0),
                                  exchange="canal", routing_key="gqsh")
        for line in payments:
            channel.basic_publish(amqp.Message(line.encode(), content_type="application/json", delivery_mode=2),
                                  exchange="", routing_key="payments")


def ready(url: str, queue: str) -> int:
    with Connection(url) as connection:
        return int(connection.channel().queue_declare(queue, passive=True).message_count)
