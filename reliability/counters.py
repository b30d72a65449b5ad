"""Operational counters in Redis (``tdc:counters``): what happened that is neither an error nor
an alarm, but that an operator tuning the fleet wants to see (late messages fenced off, say)."""

from __future__ import annotations

import logging

import redis

log = logging.getLogger(__name__)

#: Redis hash of counts by name.
COUNTERS = "tdc:counters"
#: Chain keys that arrived after their order was taken over, and so wrote nothing.
FENCED = "fenced_keys"


def count(client: redis.Redis | None, name: str, amount: int = 1) -> None:
    """Add ``amount`` to counter ``name``; a Redis that cannot be reached only loses the count."""
    if client is None or not amount:
        return
    try:
        client.hincrby(COUNTERS, name, amount)
    except redis.RedisError:
        log.warning("could not count %s += %d", name, amount)
