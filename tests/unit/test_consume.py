"""The consumers' loop and message shapes without a broker: acknowledgement only after intake,
a stop finishing its batch, the idle exit, back-off on a lost connection, poison, the Redis
sink's entry shapes, Kafka offsets and configuration, the figures kept for /metrics."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from intake.receiver import IntakeReport, TaskKey
from streams.consume.batches import TOMBSTONE, Message, line_of, raw_text
from streams.consume.figures import read_consumers
from streams.consume.kafka import BrokersDown, KafkaSource, consumer_config, message_of, next_offsets
from streams.consume.loop import Backoff, consume
from streams.consume.redis_streams import message_of as redis_message_of

FAST = Backoff(base=0.001, cap=0.002)


class FakeSource:
    """Batches handed out in turn; what was acknowledged, in order; errors to raise on cue."""

    name = "fake"
    lost: tuple[type[BaseException], ...] = (ConnectionError,)

    def __init__(self, batches: list[list[Message]], fail_fetch: int = 0, fail_ack: int = 0):
        self.batches, self.fail_fetch, self.fail_ack = list(batches), fail_fetch, fail_ack
        self.acked: list[list[Any]] = []
        self.connects = self.closes = 0
        self.events: list[str] = []

    def connect(self) -> None:
        self.connects += 1

    def fetch(self, most: int, wait: float) -> list[Message]:
        if self.fail_fetch:
            self.fail_fetch -= 1
            raise ConnectionError("broker went away")
        if not self.batches:
            time.sleep(min(wait, 0.01))
            return []
        return self.batches.pop(0)

    def ack(self, messages: list[Message]) -> None:
        if self.fail_ack:
            self.fail_ack -= 1
            raise ConnectionError("broker went away before the ack")
        self.events.append("ack")
        self.acked.append([m.handle for m in messages])

    def lag(self) -> int | None:
        return len(self.batches)

    def close(self) -> None:
        self.closes += 1


def _batch(*handles: int) -> list[Message]:
    return [Message(f'{{"n": {h}}}'.encode(), h) for h in handles]


def _report(messages: list[Message]) -> IntakeReport:
    report = IntakeReport(lines=len(messages), accepted=len(messages))
    report.touched = {(f"O{m.handle}", "CREATE") for m in messages}
    return report


def _submit(keys: Iterable[TaskKey]) -> int:
    return len(list(keys))


def test_every_batch_is_acknowledged_after_it_is_taken_in_and_its_chains_submitted() -> None:
    # Given two batches waiting
    source = FakeSource([_batch(1, 2), _batch(3)])
    events: list[str] = []

    def take_in(messages: list[Message]) -> IntakeReport:
        events.append(f"take {len(messages)}")
        return _report(messages)

    def submit(keys: Iterable[TaskKey]) -> int:
        events.append("submit")
        return len(list(keys))

    # When the consumer runs until it is idle
    consumed = consume(source, take_in, submit, None, batch=10, idle_exit=0.05, stop=threading.Event(), poll=0.01)
    # Then each batch was taken in, its chains submitted, then acknowledged, in that order
    assert source.acked == [[1, 2], [3]]
    assert consumed.messages == 3 and consumed.submitted == 3 and consumed.report.accepted == 3
    assert consumed.ended == "idle" and source.closes == 1
    assert events == ["take 2", "submit", "take 1", "submit"]
    # (the run keeps counts, not every key it ever touched)
    assert consumed.report.touched == set() and consumed.report.outcomes == []


def test_a_stop_during_intake_finishes_the_batch_acknowledges_it_and_fetches_no_more() -> None:
    source = FakeSource([_batch(1, 2), _batch(3)])
    stop = threading.Event()

    def take_in(messages: list[Message]) -> IntakeReport:
        stop.set()  # SIGTERM arrives while the first batch is being stored
        return _report(messages)

    consumed = consume(source, take_in, _submit, None, batch=10, idle_exit=None, stop=stop, poll=0.01)
    assert source.acked == [[1, 2]]
    assert source.batches == [_batch(3)] or len(source.batches) == 1
    assert consumed.ended == "stopped" and consumed.messages == 2


def test_without_idle_exit_it_runs_until_stopped() -> None:
    source = FakeSource([])
    stop = threading.Event()
    timer = threading.Timer(0.2, stop.set)
    timer.start()
    started = time.monotonic()
    consumed = consume(source, _report, _submit, None, batch=10, idle_exit=None, stop=stop, poll=0.01)
    assert time.monotonic() - started >= 0.2
    assert consumed.ended == "stopped" and consumed.messages == 0


def test_an_intake_fault_keeps_the_batch_in_hand_and_takes_it_in_again(caplog: pytest.LogCaptureFixture) -> None:
    # Given a database that is down for the first two attempts
    source = FakeSource([_batch(1)])
    attempts: list[int] = []

    def take_in(messages: list[Message]) -> IntakeReport:
        attempts.append(len(messages))
        if len(attempts) <= 2:
            raise OperationalError("INSERT", {}, Exception("server has gone away"))
        return _report(messages)

    with caplog.at_level(logging.WARNING):
        consumed = consume(source, take_in, _submit, None, batch=10, idle_exit=0.05, stop=threading.Event(),
                           poll=0.01, backoff=Backoff(base=0.001, cap=0.002))
    # Then nothing was acknowledged before it was stored, and then it was, once
    assert attempts == [1, 1, 1]
    assert source.acked == [[1]] and consumed.messages == 1
    assert "could not take in 1 messages" in caplog.text


def test_a_stop_while_intake_cannot_commit_acknowledges_nothing() -> None:
    source = FakeSource([_batch(1)])
    stop = threading.Event()

    def take_in(messages: list[Message]) -> IntakeReport:
        stop.set()
        raise OperationalError("INSERT", {}, Exception("server has gone away"))

    consumed = consume(source, take_in, _submit, None, batch=10, idle_exit=None, stop=stop, poll=0.01, backoff=FAST)
    assert source.acked == [] and consumed.messages == 0
    assert consumed.ended.startswith("stopped before its batch was stored")


def test_a_lost_connection_is_retried_with_back_off_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    source = FakeSource([_batch(1)], fail_fetch=3)
    with caplog.at_level(logging.WARNING):
        consumed = consume(source, _report, _submit, None, batch=10, idle_exit=0.05, stop=threading.Event(),
                           poll=0.01, backoff=Backoff(base=0.001, cap=0.002))
    assert source.connects == 4  # the first, then once after each loss
    assert source.acked == [[1]] and consumed.messages == 1
    assert caplog.text.count("lost the broker connection (ConnectionError: broker went away)") == 3
    assert "connected again" in caplog.text


def test_a_batch_whose_ack_is_lost_is_not_counted_and_the_consumer_reconnects() -> None:
    # The broker delivers it again after the reconnection; intake finds it duplicate.
    source = FakeSource([_batch(1), _batch(1)], fail_ack=1)
    consumed = consume(source, _report, _submit, None, batch=10, idle_exit=0.05, stop=threading.Event(), poll=0.01,
                       backoff=FAST)
    assert source.acked == [[1]] and consumed.messages == 1 and source.connects == 2


def test_back_off_doubles_with_jitter_up_to_its_cap_and_resets() -> None:
    backoff = Backoff(base=1, cap=8)
    pauses = [backoff.next() for _ in range(6)]
    for pause, ceiling in zip(pauses, [1, 2, 4, 8, 8, 8], strict=True):
        assert ceiling / 2 <= pause <= ceiling
    backoff.reset()
    assert backoff.next() <= 1


@pytest.mark.parametrize(("body", "line", "reason"), [
    (b'{"op": "c"}', '{"op": "c"}', None),
    ('{"op": "c"}', '{"op": "c"}', None),
    (None, TOMBSTONE, None),
    (b"\xff\xfe{}", None, "message body is not UTF-8 text (invalid start byte at byte 0)"),
    (b"", None, "message body is empty"),
    (b"  \n", None, "message body is empty"),
])
def test_a_message_body_is_one_line_or_the_reason_it_cannot_be(body: Any, line: str | None,
                                                                  reason: str | None) -> None:
    assert line_of(Message(body)) == (line, reason)


def test_the_quarantine_keeps_undecodable_bytes_escaped_and_long_bodies_cut() -> None:
    assert raw_text(Message(b"ok \xff")) == "ok \\xff"
    long = raw_text(Message(b"x" * 10_000))
    assert long.startswith("x" * 8192) and "[tdc: the first 8192 of 10000 characters; sha1 " in long


def test_the_redis_sink_entry_shapes() -> None:
    # compact (the default message.format): one field, the record key, holding the value
    compact = redis_message_of({b'{"order_id":"D1"}': b'{"op":"c"}'}, b"default", ("s", b"1-0"))
    assert (compact.body, compact.handle, compact.poison) == (b'{"op":"c"}', ("s", b"1-0"), None)
    # extended: key and value, and each header as an upper-cased field
    extended = redis_message_of({b"key": b'{"order_id":"D1"}', b"value": b'{"op":"u"}', b"TRACE": b"x"}, b"default",
                                ("s", b"2-0"))
    assert extended.body == b'{"op":"u"}' and extended.poison is None
    # a null value is written as the null.value placeholder: a tombstone
    assert redis_message_of({b'{"order_id":"D1"}': b"default"}, b"default", ("s", b"3-0")).body is None
    assert redis_message_of({b"key": b"k", b"value": b"default"}, b"default", ("s", b"3-1")).body is None
    # anything else is poison, kept with the fields it had
    bad = redis_message_of({b"a": b"1", b"b": b"2"}, b"default", ("s", b"4-0"))
    assert bad.poison is not None and "this one has a, b" in bad.poison
    assert line_of(bad) == (None, bad.poison)


class _Record:
    def __init__(self, topic: str, partition: int, offset: int, value: bytes | None):
        self._at, self._value = (topic, partition, offset), value

    def topic(self) -> str:
        return self._at[0]

    def partition(self) -> int:
        return self._at[1]

    def offset(self) -> int:
        return self._at[2]

    def value(self) -> bytes | None:
        return self._value


def test_kafka_commits_one_past_the_highest_offset_of_each_partition() -> None:
    messages = [message_of(_Record(t, p, o, b"{}")) for t, p, o in  # type: ignore[arg-type]
                [("a", 0, 5), ("a", 1, 9), ("a", 0, 7), ("b", 0, 0), ("a", 0, 6)]]
    assert [(tp.topic, tp.partition, tp.offset) for tp in next_offsets(messages)] == [
        ("a", 0, 8), ("a", 1, 10), ("b", 0, 1)]


def test_a_kafka_tombstone_is_a_message_without_a_body() -> None:
    message = message_of(_Record("t", 0, 3, None))  # type: ignore[arg-type]
    assert message.body is None and line_of(message) == (TOMBSTONE, None)


def test_kafka_consumer_settings_commit_by_hand_and_start_a_new_group_at_the_beginning() -> None:
    config = consumer_config("k1:9092,k2:9092", "tdc", "kafka:t:tdc", {"security.protocol": "SSL"})
    assert config["enable.auto.commit"] is False and config["enable.auto.offset.store"] is False
    assert config["auto.offset.reset"] == "earliest"
    assert (config["bootstrap.servers"], config["group.id"]) == ("k1:9092,k2:9092", "tdc")
    assert config["security.protocol"] == "SSL"


def test_kafka_brokers_that_cannot_be_reached_are_a_lost_connection() -> None:
    # Given a bootstrap address nothing listens on
    source = KafkaSource("127.0.0.1:1", ["t"], "g", "kafka:t:g", extra={"reconnect.backoff.max.ms": 100})
    source.connect()
    try:
        # When it is read, then librdkafka's "all brokers down" reaches the loop as a lost connection
        deadline = time.monotonic() + 20
        with pytest.raises(BrokersDown):
            while time.monotonic() < deadline:
                assert source.fetch(10, 0.5) == []
    finally:
        source.close()


def test_consumer_figures_are_read_back_by_name() -> None:
    fields: dict[bytes | str, bytes | str] = {
        b"messages:redis:s:g": b"120", "quarantined:redis:s:g": "2", "lag:redis:s:g": "-1",
        "seen:redis:s:g": "1700000000.5", "messages:rabbitmq:q": "7", "other": "1"}
    assert read_consumers(fields) == {
        "redis:s:g": {"messages": 120, "quarantined": 2, "lag": -1, "seen": 1700000000.5},
        "rabbitmq:q": {"messages": 7},
    }


def test_a_url_and_kafka_secrets_can_come_from_files(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from cli.consume import _secrets
    from cli.main import build_parser

    (tmp_path / "url").write_text("amqp://tdc:secret@mq:5672/canal\n")
    (tmp_path / "kafka.properties").write_text("# SASL\nsasl.password=secret\nsession.timeout.ms=6000\n")
    rabbitmq = build_parser().parse_args(["consume", "rabbitmq", "--url-file", str(tmp_path / "url"), "--queue", "q",
                                          "--format", "canal"])
    kafka = build_parser().parse_args(["consume", "kafka", "--bootstrap", "k:9092", "--topic", "t", "--group", "g",
                                       "--format", "debezium", "--config-file", str(tmp_path / "kafka.properties"),
                                       "--config", "session.timeout.ms=10000"])
    assert _secrets(rabbitmq) is None and rabbitmq.url == "amqp://tdc:secret@mq:5672/canal"
    assert _secrets(kafka) is None
    assert dict(setting.split("=", 1) for setting in kafka.config) == {"sasl.password": "secret",
                                                                       "session.timeout.ms": "10000"}
    missing = build_parser().parse_args(["consume", "redis", "--url-file", str(tmp_path / "nope"), "--stream", "s",
                                         "--group", "g", "--format", "debezium"])
    assert "nope" in (_secrets(missing) or "")
    with pytest.raises(SystemExit):  # one of --url and --url-file, not both
        build_parser().parse_args(["consume", "nats", "--url", "nats://n:4222", "--url-file", str(tmp_path / "url"),
                                   "--stream", "s", "--subject", "x", "--durable", "d", "--format", "debezium"])
