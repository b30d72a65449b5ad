"""``tdc consume kafka``: Debezium's Kafka records (key and value JSON, one topic per table,
tombstones after deletes) through a consumer group, offsets committed only after intake.

No Kafka broker can run on the test machines, so these tests run twice over:

- against librdkafka's own **mock cluster** (``test.mock.num.brokers``: an in-process Kafka
  protocol implementation inside a producer of this test process, which the ``tdc consume``
  process reaches over TCP like any broker), always;
- against a **real cluster** when ``TDC_KAFKA_BOOTSTRAP`` is set (contract tests, for example
  ``TDC_KAFKA_BOOTSTRAP=localhost:9092 ./dev test tests/integration/test_consume_kafka.py``);
  skipped otherwise, in CI too, since CI has no Kafka either: the one service the suite may skip.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Iterator

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from demo.history import generate_history
from flows.registry import ACCEPTED as ORDER_FLOW
from tests.conftest import env_of
from tests.integration.consume_helpers import (
    counts,
    debezium_destination,
    debezium_key,
    finished,
    kill_after,
    lines_of,
    no_consumer_left,  # noqa: F401 - a fixture
    problems,
    run_chains_to_rest,
    tdc_consume,
)
from tests.integration.helpers import ingest

pytestmark = pytest.mark.integration

#: Partitions of each test topic: records of one key stay in order within a partition, and a
#: consumer that dies holds some partitions' batches.
PARTITIONS = 3


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module", params=["mock", "real"])
def kafka_bootstrap(request: pytest.FixtureRequest) -> Iterator[str]:
    """HOST:PORT of a Kafka cluster: librdkafka's mock cluster (kept alive by its producer for the
    module), or the real one named by TDC_KAFKA_BOOTSTRAP."""
    if request.param == "real":
        real = os.environ.get("TDC_KAFKA_BOOTSTRAP")
        if not real:
            pytest.skip("no Kafka broker here: set TDC_KAFKA_BOOTSTRAP=HOST:PORT to run the Kafka contract tests "
                        "against one (skipped in CI too, which has none)")
        yield real
        return
    logger = logging.getLogger(f"tdc.test.kafka-mock.{uuid.uuid4().hex[:6]}")
    lines = _Lines()
    logger.addHandler(lines)
    logger.setLevel(logging.DEBUG)
    owner = Producer({"test.mock.num.brokers": 1, "logger": logger, "debug": "mock"})
    owner.poll(0.5)
    found = re.search(r"bootstrap\.servers=(\S+)", "\n".join(lines.lines))
    assert found, lines.lines[:5]
    logger.setLevel(logging.WARNING)  # the mock cluster logs every request at debug level
    logger.propagate = False
    yield found.group(1)
    owner.flush(5)


def _publish(bootstrap: str, prefix: str, lines: list[str]) -> list[str]:
    """What Debezium sends (Kafka Connect's or Debezium Server's Kafka sink): each event to the
    topic named by its destination, keyed by the row's primary key, and a tombstone (the key
    with a null value) after each delete.  Lines that are no change event, and a value that is
    not UTF-8, go to the order table's topic.  The topics."""
    records: list[tuple[str, bytes | None, bytes | None]] = []
    orders = f"{prefix}.gqsh.gqsh_order"
    for line in lines:
        topic = debezium_destination(line, prefix)
        key = debezium_key(line).encode() if topic else None
        records.append((topic or orders, key, line.encode()))
        if topic and '"op": "d"' in line:
            records.append((topic, key, None))
    records.insert(len(records) // 3, (orders, b'{"order_id":"D-poison"}', b"\xff\xfe\x00not utf-8"))
    topics = sorted({topic for topic, _, _ in records})
    if os.environ.get("TDC_KAFKA_BOOTSTRAP") == bootstrap:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        for future in admin.create_topics([NewTopic(t, PARTITIONS, 1) for t in topics]).values():
            future.result(30)
    # (the mock cluster creates a topic on its first record, with partitions of its own choice)
    producer = Producer({"bootstrap.servers": bootstrap, "enable.idempotence": True})
    for topic, key, value in records:
        producer.produce(topic, key=key, value=value)
        producer.poll(0)
    assert producer.flush(30) == 0
    return topics


def _left(bootstrap: str, group: str, topics: list[str]) -> int:
    """Records of ``topics`` past the group's committed offsets."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        metadata = consumer.list_topics(timeout=10).topics
        partitions = [TopicPartition(t, p) for t in topics for p in metadata[t].partitions]
        left = 0
        for committed in consumer.committed(partitions, timeout=10):
            low, high = consumer.get_watermark_offsets(committed, timeout=10)
            left += high - (committed.offset if committed.offset >= 0 else low)
        return left
    finally:
        consumer.close()


@pytest.mark.parametrize("killed", [False, True], ids=["straight", "killed-and-restarted"])
def test_debezium_from_kafka_makes_exact_rows_and_commits_everything(
        kafka_bootstrap: str, fresh_storage, redis_client, rabbitmq_vhost, killed: bool) -> None:
    # Given a history's Debezium records in Kafka, one topic per table, before the group exists
    storage = fresh_storage()
    history = generate_history(250 if killed else 120, seed=87 if killed else 86, input_format="debezium")
    prefix = f"tdc-test-{uuid.uuid4().hex[:8]}"
    topics = _publish(kafka_bootstrap, prefix, lines_of(history, "debezium"))
    env = {**env_of(storage), "TDC_BROKER_URL": rabbitmq_vhost}
    name = f"kafka-{history.run_id}"
    group = f"tdc-{history.run_id}"
    arguments = ("kafka", "--bootstrap", kafka_bootstrap, *[a for t in topics for a in ("--topic", t)],
                 "--group", group, "--format", "debezium", "--name", name, "--batch", "50",
                 # a member killed without leaving is replaced after this long, not the default 45 s
                 "--config", "session.timeout.ms=6000", "--idle-exit", "10")
    # When tdc consume takes them in (killed with SIGKILL part of the way, and started again)
    if killed:
        taken = kill_after(tdc_consume(env, *arguments), redis_client, name, 100)
        assert taken < len(lines_of(history, "debezium"))
    # (the restarted member waits out the killed one's session before the group gives it the
    # partitions: its idle clock must outlast that rebalance)
    again = (*arguments[:-1], "30") if killed else arguments
    out = finished(tdc_consume(env, *again))
    ingest(storage, redis_client, ORDER_FLOW, "business", lines_of(history, "business"))
    run_chains_to_rest(storage, redis_client, history)
    # Then every record's offset is committed, the poison quarantined, and the rows exact
    assert _left(kafka_bootstrap, group, topics) == 0
    assert counts(out)["acknowledged"] > 0
    assert "message body is not UTF-8 text" in out or killed
    assert problems(storage, history) == []
