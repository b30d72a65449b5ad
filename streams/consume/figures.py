"""What each consumer has taken in and how far behind it is, kept in Redis for ``/metrics``
(``web.metrics`` exports ``tdc_consumer_messages_total`` and ``tdc_consumer_lag``).

One hash, ``tdc:consumers``, holds per consumer name: ``messages:NAME`` (messages taken in and
acknowledged, a counter), ``quarantined:NAME`` (of those, poison or bad lines), ``lag:NAME``
(messages waiting in the broker for it when it last looked, or -1 when the broker cannot say)
and ``seen:NAME`` (epoch seconds of that look).  Several processes of one consumer group share a
name and add to its counters."""

from __future__ import annotations

import logging
import time

import redis

log = logging.getLogger(__name__)

#: Redis hash of every consumer's figures.
CONSUMER_FIGURES = "tdc:consumers"
#: The figures kept per consumer, as the field prefixes of ``CONSUMER_FIGURES``.
KINDS = ("messages", "quarantined", "lag", "seen")


def record_batch(client: redis.Redis, name: str, messages: int, quarantined: int) -> None:
    """Add an acknowledged batch to consumer ``name``'s counters; a Redis that cannot be reached
    only loses the count (the messages are taken in already)."""
    try:
        pipe = client.pipeline(transaction=False)
        pipe.hincrby(CONSUMER_FIGURES, f"messages:{name}", messages)
        if quarantined:
            pipe.hincrby(CONSUMER_FIGURES, f"quarantined:{name}", quarantined)
        pipe.execute()
    except redis.RedisError:
        log.warning("could not count %d messages of consumer %s", messages, name)


def record_lag(client: redis.Redis, name: str, lag: int | None) -> None:
    """Keep how many messages wait in the broker for consumer ``name`` (None: unknown)."""
    try:
        client.hset(CONSUMER_FIGURES, mapping={f"lag:{name}": -1 if lag is None else lag, f"seen:{name}": time.time()})
    except redis.RedisError:
        log.warning("could not keep the lag of consumer %s", name)


def read_consumers(fields: dict[bytes | str, bytes | str]) -> dict[str, dict[str, float]]:
    """The hash's fields (as ``HGETALL`` returns them) by consumer: {name: {kind: value}}."""
    consumers: dict[str, dict[str, float]] = {}
    for key, value in fields.items():
        text = key.decode() if isinstance(key, bytes) else key
        kind, _, name = text.partition(":")
        if kind in KINDS and name:
            consumers.setdefault(name, {})[kind] = float(value)
    return consumers
