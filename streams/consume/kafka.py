"""Kafka topics written by Canal's Kafka connector (flat messages) or Debezium (Kafka Connect or
Debezium Server's Kafka sink), read by a consumer group with confluent-kafka.

confluent-kafka rather than kafka-python: it wraps librdkafka, the C client Kafka's own
ecosystem maintains (consumer-group protocol, cooperative rebalancing, every broker version and
security mechanism, reconnection), and it is several times faster per message; kafka-python is
pure Python and went years without a release.  One message value is one line (Canal: one
FlatMessage; Debezium: one change event, with or without the schema envelope); a null value is
Debezium's tombstone.

Offsets are never committed automatically: after intake has committed a batch, the next offset
of each of its partitions is committed, synchronously.  A new group starts at the earliest
offset the topic retains (``auto.offset.reset=earliest``), so a backlog is read whole.
"""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka import Message as KafkaMessage

from streams.consume.batches import Message
from streams.consume.loop import SourceError

log = logging.getLogger(__name__)

#: Errors librdkafka reports that mean no broker can be reached: the loop backs off. It
#: reconnects by itself; the rest of its errors are logged and it carries on.
UNREACHABLE = {KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE}


#: Errors that mean the consumer may not read what it was given: retrying will not help.  (A
#: topic that does not exist yet is only logged: Debezium creates a table's topic with its
#: first event.)
REFUSED = {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.GROUP_AUTHORIZATION_FAILED}


class BrokersDown(ConnectionError):
    """librdkafka says no broker of the cluster can be reached."""


def consumer_config(bootstrap: str, group: str, name: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """librdkafka settings of a tdc consumer: manual commits, a new group from the beginning."""
    return {
        "bootstrap.servers": bootstrap,
        "group.id": group,
        "client.id": f"tdc-{name}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "enable.partition.eof": False,
        **(extra or {}),
    }


def next_offsets(messages: list[Message]) -> list[TopicPartition]:
    """The offsets to commit after ``messages``: one past the highest of each partition."""
    highest: dict[tuple[str, int], int] = {}
    for message in messages:
        topic, partition, offset = message.handle
        highest[(topic, partition)] = max(offset, highest.get((topic, partition), -1))
    return [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in sorted(highest.items())]


def message_of(record: KafkaMessage) -> Message:
    """A delivered record as a message: its value (None: a tombstone) and where it is."""
    return Message(record.value(), (record.topic(), record.partition(), record.offset()))


class KafkaSource:
    """Topics ``topics`` at ``bootstrap`` read as consumer group ``group``."""

    lost: tuple[type[BaseException], ...] = (BrokersDown,)

    def __init__(self, bootstrap: str, topics: list[str], group: str, name: str,
                 extra: dict[str, Any] | None = None):
        self.bootstrap, self.topics, self.group, self.name = bootstrap, topics, group, name
        self.extra = extra
        self.consumer: Any = None
        self._down: KafkaError | None = None

    def _error(self, error: KafkaError) -> None:
        """librdkafka's error callback (called from poll/consume)."""
        if error.code() in UNREACHABLE:
            self._down = error
        elif error.fatal():
            raise SourceError(f"Kafka consumer failed: {error.str()}")
        else:
            log.warning("consumer %s: %s", self.name, error.str())

    def connect(self) -> None:
        if self.consumer is None:  # librdkafka reconnects by itself: one consumer for the whole run
            self.consumer = Consumer({**consumer_config(self.bootstrap, self.group, self.name, self.extra),
                                      "error_cb": self._error})
            self.consumer.subscribe(self.topics)

    def fetch(self, most: int, wait: float) -> list[Message]:
        self._down = None
        records = self.consumer.consume(num_messages=most, timeout=wait)
        messages = []
        for record in records:
            error = record.error()
            if error is None:
                messages.append(message_of(record))
            elif error.code() in UNREACHABLE:
                self._down = error
            elif error.fatal() or error.code() in REFUSED:
                raise SourceError(f"Kafka consumer cannot read {', '.join(self.topics)}: {error.str()}")
            else:
                log.warning("consumer %s: %s", self.name, error.str())
        if self._down is not None and not messages:
            raise BrokersDown(self._down.str())
        return messages

    def ack(self, messages: list[Message]) -> None:
        try:
            self.consumer.commit(offsets=next_offsets(messages), asynchronous=False)
        except KafkaException as error:
            # A rebalance took the partitions away: their new owner reads the batch again,
            # which is only duplicate work.
            log.warning("consumer %s: offsets of %d messages not committed (%s); they will be read again",
                        self.name, len(messages), error)

    def lag(self) -> int | None:
        """Messages behind the consumer's position on its assigned partitions."""
        try:
            assigned = self.consumer.assignment()
            if not assigned:
                return None
            total = 0
            for position in self.consumer.position(assigned):
                low, high = self.consumer.get_watermark_offsets(position, timeout=2)
                total += max(0, high - (position.offset if position.offset >= 0 else low))
            return total
        except KafkaException:
            return None

    def close(self) -> None:
        """Leave the group, which hands the partitions on at once."""
        if self.consumer is not None:
            self.consumer.close()
            self.consumer = None
