"""Debezium Server's Redis sink, read through a consumer group.

The sink (debezium/debezium-server, ``debezium-server-redis``: ``RedisStreamChangeConsumer``
and ``RedisStreamChangeConsumerConfig``) XADDs one entry per change event to the stream named
after the event's destination (``<topic.prefix>.<database>.<table>``), in one of two shapes set
by ``debezium.sink.redis.message.format``:

- ``compact`` (the default): one field, named by the record key (JSON) and holding the value;
- ``extended``: fields ``key`` and ``value``, and each header as an upper-cased field.

A record without a key or value carries the ``null.key`` / ``null.value`` placeholder instead
(both ``default`` unless configured): a value of ``default`` is a tombstone.

The group is created at the start of the stream (id 0, MKSTREAM) when it does not exist, so a
backlog written before the first start is read whole.  A restarted consumer first reads the
entries it was given and never acknowledged (its own pending list), and every
``claim_idle`` seconds takes over entries another consumer of the group has left pending that
long (XAUTOCLAIM): a consumer that died never strands what it held.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import redis

from streams.consume.batches import Message
from streams.consume.loop import SourceError

log = logging.getLogger(__name__)

#: Seconds an entry must have been pending with another consumer before it is claimed: far
#: longer than a batch takes to store, so a live consumer's entries are rarely taken twice
#: (which would only be duplicate work).
CLAIM_IDLE_SECONDS = 60.0
#: The sink's placeholder for a record without a value (``debezium.sink.redis.null.value``).
NULL_VALUE = "default"
EXTENDED_FIELDS = (b"key", b"value")


def message_of(fields: dict[bytes, bytes], null_value: bytes, handle: tuple[str, bytes]) -> Message:
    """The change event in one stream entry of either sink shape."""
    if all(name in fields for name in EXTENDED_FIELDS):
        value = fields[b"value"]
    elif len(fields) == 1:
        (value,) = fields.values()
    else:
        names = ", ".join(sorted(name.decode("utf-8", "backslashreplace") for name in fields)) or "none"
        return Message(b"\n".join(k + b"=" + v for k, v in fields.items()), handle,
                       poison=f"not a Debezium Server Redis entry: a compact entry has one field and an extended "
                              f"one the fields key and value; this one has {names}")
    return Message(None if value == null_value else value, handle)


class RedisStreamSource:
    """Streams ``streams`` of ``url`` read as consumer ``consumer`` of group ``group``."""

    lost: tuple[type[BaseException], ...] = (redis.ConnectionError, redis.TimeoutError)

    def __init__(self, url: str, streams: list[str], group: str, consumer: str, name: str,
                 claim_idle: float = CLAIM_IDLE_SECONDS, null_value: str = NULL_VALUE):
        self.url, self.streams, self.group, self.consumer, self.name = url, streams, group, consumer, name
        self.claim_idle, self.null_value = claim_idle, null_value.encode()
        self.client: redis.Redis | None = None
        #: Streams whose own pending entries are still to be read again (after a restart).
        self._own_pending: set[str] = set()
        #: Entries read beyond the batch asked for (XREADGROUP's COUNT is per stream).
        self._buffer: list[Message] = []
        self._claimed_at = 0.0

    def connect(self) -> None:
        self.close()
        # The socket timeout outlasts the longest BLOCK, so a quiet stream is not a lost connection.
        self.client = redis.Redis.from_url(self.url, socket_timeout=30, socket_connect_timeout=10)
        for stream in self.streams:
            try:
                self.client.xgroup_create(stream, self.group, id="0", mkstream=True)
                log.info("consumer %s: created group %s on %s at its start", self.name, self.group, stream)
            except redis.ResponseError as error:
                if "BUSYGROUP" not in str(error):
                    raise SourceError(f"cannot create group {self.group} on {stream}: {error}") from error
        self._own_pending = set(self.streams)
        self._buffer = []  # pending under this consumer's name: read again from its own pending list
        self._claimed_at = 0.0

    def _redis(self) -> redis.Redis:
        assert self.client is not None, "connect() first"
        return self.client

    def fetch(self, most: int, wait: float) -> list[Message]:
        if self._buffer:
            taken, self._buffer = self._buffer[:most], self._buffer[most:]
            return taken
        while self._own_pending:
            pending = self._read_own_pending(most)
            if pending:
                return pending
        if time.monotonic() - self._claimed_at >= min(self.claim_idle, 10.0):
            self._claimed_at = time.monotonic()
            claimed = self._claim(most)
            if claimed:
                return claimed
        # COUNT is per stream: what is over ``most`` waits here for the next batch.
        answer = self._redis().xreadgroup(self.group, self.consumer, dict.fromkeys(self.streams, ">"), count=most,
                                          block=max(1, int(wait * 1000)))
        messages = [self._message(*entry) for entry in _entries(answer) if entry[2] is not None]
        taken, self._buffer = messages[:most], messages[most:]
        return taken

    def _read_own_pending(self, most: int) -> list[Message]:
        """The next entries this consumer was given before and never acknowledged, one stream at
        a time (they stay pending until acknowledged, so each read starts from the first)."""
        stream = min(self._own_pending)
        answer = _entries(self._redis().xreadgroup(self.group, self.consumer, {stream: "0"}, count=most))
        if not answer:
            self._own_pending.discard(stream)
        gone = [entry_id for _, entry_id, fields in answer if fields is None]
        if gone:  # trimmed from the stream while pending: nothing to take in
            self._redis().xack(stream, self.group, *gone)
        messages = [self._message(*entry) for entry in answer if entry[2] is not None]
        if messages:
            log.info("consumer %s: %d entries it was given before and never acknowledged", self.name, len(messages))
        return messages

    def _claim(self, most: int) -> list[Message]:
        messages: list[Message] = []
        for stream in self.streams:
            start: Any = "0-0"
            while len(messages) < most:
                answer: Any = self._redis().xautoclaim(stream, self.group, self.consumer, int(self.claim_idle * 1000),
                                                       start_id=start, count=most - len(messages))
                cursor, entries = answer[0], answer[1]
                messages += [self._message(stream, entry_id, fields) for entry_id, fields in entries if fields]
                if _text(cursor) == "0-0":
                    break
                start = cursor
        if messages:
            log.warning("consumer %s: claimed %d entries left pending over %.0fs by another consumer of %s",
                        self.name, len(messages), self.claim_idle, self.group)
        return messages

    def _message(self, stream: str, entry_id: bytes, fields: dict[bytes, bytes] | None) -> Message:
        return message_of(fields or {}, self.null_value, (stream, entry_id))

    def ack(self, messages: list[Message]) -> None:
        by_stream: dict[str, list[bytes]] = {}
        for message in messages:
            stream, entry_id = message.handle
            by_stream.setdefault(stream, []).append(entry_id)
        pipe = self._redis().pipeline(transaction=False)
        for stream, ids in by_stream.items():
            pipe.xack(stream, self.group, *ids)
        pipe.execute()

    def lag(self) -> int | None:
        """Entries not yet given to the group (XINFO GROUPS ``lag``, Redis 7); None when unknown."""
        total = 0
        try:
            for stream in self.streams:
                group = next(g for g in self._redis().xinfo_groups(stream) if _text(g["name"]) == self.group)
                if group.get("lag") is None:
                    return None
                total += int(group["lag"])
        except (redis.ResponseError, StopIteration):
            return None
        return total

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _entries(answer: Any) -> list[tuple[str, bytes, dict[bytes, bytes] | None]]:
    """XREADGROUP's answer (a list of [stream, entries] in RESP2, a dict in RESP3) as (stream,
    entry id, fields) in order; fields None for an entry trimmed away while pending.  A stream
    with nothing to give appears with no entry."""
    pairs = answer.items() if isinstance(answer, dict) else answer or []
    found: list[tuple[str, bytes, dict[bytes, bytes] | None]] = []
    for stream, entries in pairs:
        found += [(_text(stream), entry_id, fields) for entry_id, fields in entries]
    return found
