"""Debezium Server's NATS JetStream sink, read by a durable pull consumer.

The sink (debezium/debezium-server, ``debezium-server-nats-jetstream``:
``NatsJetStreamChangeConsumer.handleBatch``) publishes each change event's value, as is, to the
subject named after its destination (``<topic.prefix>.<database>.<table>``); records without a
value (tombstones) are not published, headers go as NATS headers.  With
``create-stream=true`` it makes the stream ``DebeziumStream`` on subjects ``*.*.*``.

The durable consumer is created with ``DeliverPolicy.ALL`` when it does not exist, so it starts
at the first message the stream retains; an existing one is used as it is.  Messages are
acknowledged after intake has committed them; those a consumer held when it died are delivered
again once their ``ack_wait`` has passed.  The client reconnects by itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, TypeVar

import nats
import nats.errors
import nats.js.errors
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy

from streams.consume.batches import Message
from streams.consume.loop import SourceError

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Seconds a message delivered to a consumer that has not acknowledged it waits before it is
#: delivered again (for a consumer this creates): longer than a batch takes to store, short
#: enough that a consumer killed mid-batch is made good soon after its restart.
ACK_WAIT_SECONDS = 60.0


class NatsJetStreamSource:
    """Subject ``subject`` of stream ``stream`` at ``url``, read as durable consumer ``durable``."""

    lost: tuple[type[BaseException], ...] = (nats.errors.ConnectionClosedError, nats.errors.NoServersError,
                                             nats.errors.StaleConnectionError, nats.errors.ConnectionReconnectingError,
                                             nats.errors.NoRespondersError, OSError)

    def __init__(self, url: str, stream: str, subject: str, durable: str, name: str, batch: int,
                 ack_wait: float = ACK_WAIT_SECONDS):
        self.url, self.stream, self.subject, self.durable, self.name = url, stream, subject, durable, name
        self.batch, self.ack_wait = batch, ack_wait
        self._loop = asyncio.new_event_loop()
        self._connection: Any = None
        self._subscription: Any = None
        self._closing = False

    def _run(self, work: Coroutine[Any, Any, T]) -> T:
        return self._loop.run_until_complete(work)

    def connect(self) -> None:
        self.close()
        self._run(self._connect())

    async def _connect(self) -> None:
        self._connection = await nats.connect(self.url, connect_timeout=10, max_reconnect_attempts=-1,
                                              allow_reconnect=True, error_cb=self._error,
                                              disconnected_cb=self._disconnected, reconnected_cb=self._reconnected)
        jetstream = self._connection.jetstream()
        try:
            await jetstream.stream_info(self.stream)
        except nats.js.errors.NotFoundError as error:
            await self._connection.close()
            raise SourceError(f"stream {self.stream!r} does not exist on {self.url}: start Debezium Server with "
                              f"debezium.sink.nats-jetstream.create-stream=true, or add the stream") from error
        config = ConsumerConfig(deliver_policy=DeliverPolicy.ALL, ack_policy=AckPolicy.EXPLICIT,
                                ack_wait=self.ack_wait, max_ack_pending=max(1000, 4 * self.batch))
        self._subscription = await jetstream.pull_subscribe(self.subject, durable=self.durable, stream=self.stream,
                                                            config=config)

    # The client reconnects by itself; these say so in one line each instead of its tracebacks.
    async def _error(self, error: Exception) -> None:
        log.warning("consumer %s: NATS: %s: %s", self.name, type(error).__name__, error)

    async def _disconnected(self) -> None:
        if not self._closing:
            log.warning("consumer %s: NATS connection lost; the client reconnects by itself", self.name)

    async def _reconnected(self) -> None:
        log.warning("consumer %s: NATS connection made again", self.name)

    def fetch(self, most: int, wait: float) -> list[Message]:
        try:
            received = self._run(self._subscription.fetch(batch=most, timeout=wait))
        except TimeoutError:  # nothing came (nats' TimeoutError, or asyncio's from inside the client)
            return []
        return [Message(m.data, m) for m in received]

    def ack(self, messages: list[Message]) -> None:
        async def ack_all() -> None:
            for message in messages:
                await message.handle.ack()
            await self._connection.flush(timeout=10)
        self._run(ack_all())

    def lag(self) -> int | None:
        """Messages of the subject the stream holds that the consumer has not delivered yet."""
        try:
            info = self._run(self._subscription.consumer_info())
        except (nats.errors.Error, TimeoutError):
            return None
        return int(info.num_pending or 0)

    def close(self) -> None:
        if self._connection is not None:
            connection, self._connection, self._subscription = self._connection, None, None
            self._closing = True
            try:
                self._run(connection.close())
            except (nats.errors.Error, OSError):
                pass  # gone already
            finally:
                self._closing = False
