"""Where the changelog and the analytics events are published: one small interface, one class per
broker, chosen by the URL's scheme (``open_sink``).

A sink's ``publish`` returns only once the broker has confirmed every message of the call (a
Redis reply, a JetStream PubAck, an AMQP publisher confirm, a Kafka delivery report); anything
else raises, and then some of the messages may have been delivered.  The caller (the relay)
gives one publish at most one message per key, so a sink may send a call's messages at once:
per-key order is the order of the calls.

URL forms (``settings.SINK_TARGETS``):
- ``redis://HOST:6379/DB?stream=NAME[&maxlen=N]`` (also ``rediss://``, ``unix://PATH?db=N&stream=``):
  one XADD per message, fields ``id`` and the sink's field (``change`` or ``event``) holding the JSON;
- ``nats://HOST:4222?subject=NAME[&stream=STREAM]``: JetStream publish with ``Nats-Msg-Id`` set to
  the de-duplication id; with ``stream=``, the stream is created over the subject when missing;
- ``amqp://USER:PASSWORD@HOST:5672/VHOST?exchange=NAME[&queue=Q]``: persistent messages to a durable
  topic exchange, confirmed by publisher confirms, routing key = the message's topic (the changed root
  wide table such as ``dwd_order``, or the event type), ``message_id`` = the de-duplication id;
  with ``queue=``, a durable queue bound to everything is declared, so nothing is dropped before
  the first consumer binds;
- ``kafka://[USER:PASSWORD@]HOST:9092[,HOST:9092]?topic=NAME[&sasl_mechanism=M][&security_protocol=P]``:
  idempotent producer (acks=all), key = the message key (the order), so one order's messages stay
  in one partition, in order; a user and password log in with SASL (``kafka_config``).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from settings import SettingsError

#: Seconds a publish waits for the broker's confirmation of a whole call.
CONFIRM_TIMEOUT = 30.0
#: Query parameters that are tdc's, not the client library's: taken off the URL it is given.
OWN_PARAMETERS = frozenset({"stream", "maxlen", "subject", "exchange", "exchange_type", "queue", "topic",
                            "sasl_mechanism", "security_protocol"})
#: The variable each kind of sink is configured by (``open_sink``'s field), for error messages.
SINK_VARIABLES = {"change": "TDC_CHANGELOG_URL", "event": "TDC_EVENTS_URL"}
#: SASL mechanisms a kafka:// URL with a user may name (librdkafka's ``sasl.mechanisms``); PLAIN unless told.
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
#: Security protocols a kafka:// URL with a user may name; SASL_SSL unless told, so a password
#: never crosses the network in the clear by default.
KAFKA_SASL_PROTOCOLS = ("SASL_SSL", "SASL_PLAINTEXT")

T = TypeVar("T")


@dataclass(frozen=True)
class Message:
    """One message for a sink."""

    #: What order is kept per: the order id (a Kafka key, a NATS/AMQP header).
    key: str
    #: What consumers de-duplicate on: ``ORDER:VERSION`` for a change, ``EVENT_ID:VERSION`` for an event.
    dedup_id: str
    #: The kind of message: the changed root wide table (``dwd_order``) or the event type (AMQP's
    #: routing key, a Kafka header).
    topic: str
    #: The JSON.
    body: str


class SinkError(RuntimeError):
    """The broker did not confirm every message of a publish (some may have been delivered)."""


class Sink(Protocol):
    """A broker messages are published to."""

    def publish(self, messages: Sequence[Message]) -> None:
        """Send ``messages`` and return once the broker confirmed each.  Raises SinkError or the
        client's own error otherwise; some messages may have been delivered then."""

    def close(self) -> None:
        """Let go of the connection."""


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without tdc's own query parameters, and those parameters."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    own = {name: value for name, value in query if name in OWN_PARAMETERS}
    rest = urlencode([(name, value) for name, value in query if name not in OWN_PARAMETERS])
    return urlunsplit(parts._replace(query=rest)), own


class RedisStreamSink:
    """One XADD per message, pipelined; a call is confirmed when every reply came back."""

    def __init__(self, url: str, field: str):
        import redis

        base, own = split_url(url)
        self.stream, self.field = own["stream"], field
        self.maxlen = int(own["maxlen"]) if own.get("maxlen") else None
        self.client = redis.Redis.from_url(base, socket_timeout=CONFIRM_TIMEOUT, socket_connect_timeout=10)

    def publish(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        pipe = self.client.pipeline(transaction=False)
        for message in messages:
            pipe.xadd(self.stream, {"id": message.dedup_id, self.field: message.body},
                      maxlen=self.maxlen, approximate=True)
        replies = pipe.execute(raise_on_error=True)
        if len(replies) != len(messages) or not all(replies):
            raise SinkError(f"Redis answered {len(replies)} of {len(messages)} XADDs to {self.stream}")

    def close(self) -> None:
        self.client.close()


class NatsSink:
    """JetStream publishes, sent at once and confirmed by their PubAcks.  The client's event loop
    runs on a thread of its own, so it answers the server's pings between publishes."""

    def __init__(self, url: str, field: str):
        import nats

        base, own = split_url(url)
        self.subject, self.field = own["subject"], field
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="tdc-nats-sink", daemon=True)
        self._thread.start()
        try:
            self._nc = self._run(lambda: nats.connect(base, connect_timeout=10, name="tdc-relay"))
            self._js = self._nc.jetstream(timeout=CONFIRM_TIMEOUT)
            if own.get("stream"):
                self._run(lambda: self._ensure_stream(own["stream"]))
        except BaseException:
            self._stop_loop()
            raise

    def _run(self, make: Callable[[], Coroutine[Any, Any, T]]) -> T:
        return asyncio.run_coroutine_threadsafe(make(), self._loop).result(CONFIRM_TIMEOUT + 5)

    async def _ensure_stream(self, name: str) -> None:
        from nats.js.errors import NotFoundError

        try:
            await self._js.stream_info(name)
        except NotFoundError:
            await self._js.add_stream(name=name, subjects=[self.subject])

    async def _publish(self, messages: Sequence[Message]) -> None:
        futures = [await self._js.publish_async(self.subject, message.body.encode(),
                                                headers={"Nats-Msg-Id": message.dedup_id, "Tdc-Key": message.key,
                                                         "Tdc-Topic": message.topic})
                   for message in messages]
        await asyncio.wait_for(asyncio.gather(*futures), CONFIRM_TIMEOUT)

    def publish(self, messages: Sequence[Message]) -> None:
        if messages:
            self._run(lambda: self._publish(messages))

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def close(self) -> None:
        try:
            self._run(lambda: self._nc.close())
        finally:
            self._stop_loop()


class AmqpSink:
    """Persistent messages to a durable exchange on a channel in confirm mode: a call's messages
    are sent one after the other and then every publisher confirm is awaited.  (Waiting for each
    confirm in turn, as kombu's ``confirm_publish`` does, took 1.36 s for 1,000 messages of 2 kB
    on the local RabbitMQ; sending them and then collecting the confirms, 0.09 s.)"""

    def __init__(self, url: str, field: str):
        from kombu import Connection, Exchange, Producer, Queue

        base, own = split_url(url)
        self.field = field
        self.connection = Connection(base, connect_timeout=10)
        self.exchange = Exchange(own["exchange"], type=own.get("exchange_type") or "topic", durable=True)
        self.channel = self.connection.channel()
        self.producer = Producer(self.channel, exchange=self.exchange)  # declares the exchange
        if own.get("queue"):
            Queue(own["queue"], exchange=self.exchange, routing_key="#", durable=True)(self.channel).declare()
        # Delivery tags count this channel's publishes from 1 once confirms are selected.
        self.channel.confirm_select()
        self._sent = 0
        self._waiting: set[int] = set()
        self._refused: list[int] = []
        self.channel.events["basic_ack"].add(self._confirmed)
        self.channel.events["basic_nack"].add(self._refused_by_broker)

    def _settle(self, tag: int, multiple: bool) -> list[int]:
        settled = sorted(t for t in self._waiting if t <= tag) if multiple else [tag] if tag in self._waiting else []
        self._waiting.difference_update(settled)
        return settled

    def _confirmed(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple)

    def _refused_by_broker(self, tag: int, multiple: bool) -> None:
        self._refused += self._settle(tag, multiple)

    def publish(self, messages: Sequence[Message]) -> None:
        for message in messages:
            self.producer.publish(message.body, routing_key=message.topic, delivery_mode=2, retry=False,
                                  content_type="application/json", content_encoding="utf-8",
                                  message_id=message.dedup_id, headers={"tdc_key": message.key})
            self._sent += 1
            self._waiting.add(self._sent)
        deadline = time.monotonic() + CONFIRM_TIMEOUT
        while self._waiting and not self._refused:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                self.connection.drain_events(timeout=left)
            except TimeoutError:
                break
        if self._refused or self._waiting:
            refused, unconfirmed = len(self._refused), len(self._waiting)
            self._refused.clear()
            self._waiting.clear()
            raise SinkError(f"RabbitMQ refused {refused} and did not confirm {unconfirmed} of {len(messages)} "
                            f"messages to {self.exchange.name}")

    def close(self) -> None:
        self.connection.release()


def kafka_config(url: str, variable: str) -> dict[str, Any]:
    """The producer settings of a kafka:// sink URL: its brokers, and with ``USER:PASSWORD@`` a
    SASL login (``security_protocol=`` SASL_SSL or SASL_PLAINTEXT, ``sasl_mechanism=`` PLAIN,
    SCRAM-SHA-256 or SCRAM-SHA-512; user and password percent-decoded).  Raises SettingsError,
    naming ``variable`` and never the password, for a user without a password, an unknown
    mechanism or protocol, or either of them without a user."""
    parts = urlsplit(url)
    _, own = split_url(url)
    config: dict[str, Any] = {"bootstrap.servers": parts.netloc.rsplit("@", 1)[-1], "enable.idempotence": True,
                              "acks": "all", "linger.ms": 5, "message.timeout.ms": int(CONFIRM_TIMEOUT * 1000)}
    mechanism, protocol = own.get("sasl_mechanism"), own.get("security_protocol")
    if parts.username is None:
        if mechanism or protocol:
            raise SettingsError(f"{variable}: sasl_mechanism and security_protocol need a login: "
                                "kafka://USER:PASSWORD@HOST:9092?topic=NAME")
        return config
    if parts.password is None:
        raise SettingsError(f"{variable}: a kafka:// sink with a user needs its password: "
                            "kafka://USER:PASSWORD@HOST:9092?topic=NAME")
    mechanism, protocol = (mechanism or KAFKA_SASL_MECHANISMS[0]).upper(), (protocol or KAFKA_SASL_PROTOCOLS[0]).upper()
    if mechanism not in KAFKA_SASL_MECHANISMS:
        raise SettingsError(f"{variable}: sasl_mechanism must be one of {', '.join(KAFKA_SASL_MECHANISMS)}")
    if protocol not in KAFKA_SASL_PROTOCOLS:
        raise SettingsError(f"{variable}: security_protocol must be one of {', '.join(KAFKA_SASL_PROTOCOLS)}")
    return config | {"security.protocol": protocol, "sasl.mechanisms": mechanism,
                     "sasl.username": unquote(parts.username), "sasl.password": unquote(parts.password)}


class KafkaSink:
    """An idempotent producer: a call is produced, flushed, and confirmed by its delivery reports."""

    def __init__(self, url: str, field: str):
        from confluent_kafka import Producer

        config = kafka_config(url, SINK_VARIABLES.get(field, "the sink URL"))
        _, own = split_url(url)
        self.topic, self.field = own["topic"], field
        self.producer = Producer(config)

    def publish(self, messages: Sequence[Message]) -> None:
        errors: list[str] = []

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                errors.append(str(error))

        for message in messages:
            while True:
                try:
                    self.producer.produce(self.topic, key=message.key.encode(), value=message.body.encode(),
                                          headers={"id": message.dedup_id, "type": message.topic},
                                          on_delivery=delivered)
                    break
                except BufferError:  # the local queue is full: let deliveries drain it
                    self.producer.poll(0.5)
        left = self.producer.flush(CONFIRM_TIMEOUT + 5)
        if left or errors:
            raise SinkError(f"Kafka confirmed {len(messages) - left - len(errors)} of {len(messages)} messages "
                            f"to {self.topic}: {errors[:3]}")

    def close(self) -> None:
        self.producer.flush(CONFIRM_TIMEOUT)


#: URL scheme -> the sink class that publishes there.
SINKS: dict[str, Callable[[str, str], Sink]] = {
    "redis": RedisStreamSink, "rediss": RedisStreamSink, "unix": RedisStreamSink,
    "nats": NatsSink,
    "amqp": AmqpSink, "amqps": AmqpSink,
    "kafka": KafkaSink,
}


def open_sink(url: str, field: str) -> Sink:
    """The sink ``url`` names (a URL ``settings.sink_url`` accepted); ``field`` names the Redis
    entry field the JSON goes in (``change``, ``event``)."""
    return SINKS[urlsplit(url).scheme](url, field)
