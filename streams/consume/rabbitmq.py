"""Canal's RabbitMQ connector, read from its queue.

With ``canal.mq.flatMessage = true`` the connector (alibaba/canal,
``connector/rabbitmq-connector``: ``CanalRabbitMQProducer.send``) publishes every FlatMessage as
its own message: the body is the message's JSON (fastjson2 ``toJSONBytes`` with ``WriteNulls``,
UTF-8), sent with ``basicPublish(rabbitmq.exchange, <topic>, PERSISTENT_TEXT_PLAIN, body)`` to
the exchange named in ``canal.properties``, routed by the topic (``canal.mq.topic``, or each
``canal.mq.dynamicTopic`` with dots as underscores).  Canal declares the durable queue
``rabbitmq.queue`` and binds it with ``rabbitmq.routingKey`` when it starts.

The queue is used as it is (a passive declaration: its type and arguments are the operator's);
one that does not exist is an error, not something to create under a mistyped name.  Messages
are acknowledged with one ``basic.ack`` (multiple) per batch after intake has committed them; a
consumer that dies leaves them unacknowledged and RabbitMQ delivers them again.
"""

from __future__ import annotations

import time
from typing import Any

import amqp
from kombu import Connection

from streams.consume.batches import Message
from streams.consume.loop import SourceError

#: Seconds a fetch keeps reading once messages flow, waiting for the batch to fill: the
#: broker pushes a prefetched batch in well under this.
LINGER_SECONDS = 0.05
#: Messages RabbitMQ may push ahead of the acknowledgements, in batches: one batch is taken in
#: while the next arrives.
PREFETCH_BATCHES = 2


class RabbitMQSource:
    """Queue ``queue`` on the broker at ``url`` (amqp://user:password@host:5672/vhost)."""

    lost: tuple[type[BaseException], ...] = (amqp.exceptions.ConnectionError, amqp.exceptions.RecoverableChannelError,
                                             OSError)

    def __init__(self, url: str, queue: str, name: str, batch: int):
        self.url, self.queue, self.name, self.batch = url, queue, name, batch
        self.connection: Connection | None = None
        self.channel: Any = None
        self._buffer: list[Message] = []

    def connect(self) -> None:
        self.close()
        connection = Connection(self.url, connect_timeout=10)
        connection.ensure_connection(max_retries=1)
        channel = connection.channel()
        try:
            channel.queue_declare(queue=self.queue, passive=True)
        except amqp.exceptions.NotFound as error:
            connection.release()
            raise SourceError(f"queue {self.queue!r} does not exist on {connection.as_uri()}: start Canal first "
                              f"(it declares rabbitmq.queue) or declare it") from error
        channel.basic_qos(0, min(65535, self.batch * PREFETCH_BATCHES), False)
        channel.basic_consume(queue=self.queue, callback=self._received, no_ack=False)
        self.connection, self.channel, self._buffer = connection, channel, []

    def _received(self, message: amqp.Message) -> None:
        self._buffer.append(Message(message.body, message.delivery_tag))

    def fetch(self, most: int, wait: float) -> list[Message]:
        assert self.connection is not None, "connect() first"
        deadline = time.monotonic() + wait
        while len(self._buffer) < most:
            timeout = LINGER_SECONDS if self._buffer else deadline - time.monotonic()
            if timeout <= 0:
                break
            try:
                self.connection.drain_events(timeout=timeout)
            except TimeoutError:
                if self._buffer or time.monotonic() >= deadline:
                    break
        taken, self._buffer = self._buffer[:most], self._buffer[most:]
        return taken

    def ack(self, messages: list[Message]) -> None:
        # Every message before the last of the batch on this channel is in the batch or was
        # acknowledged before it: one multiple ack covers them.
        self.channel.basic_ack(delivery_tag=max(m.handle for m in messages), multiple=True)

    def lag(self) -> int | None:
        """Messages ready in the queue (not those delivered and not yet acknowledged)."""
        try:
            return int(self.channel.queue_declare(queue=self.queue, passive=True).message_count)
        except amqp.exceptions.ChannelError:
            return None

    def close(self) -> None:
        if self.connection is not None:
            connection, self.connection, self.channel, self._buffer = self.connection, None, None, []
            try:
                connection.release()
            except self.lost:
                pass  # gone already
