"""Refreshing open entities when a dimension they look up changes (``Lookup.refreshes``).

A change of such a dimension entry (CDC or the T+1 reload) is marked pending in Redis in the
same MULTI/EXEC that writes the entry (``dimensions.lookup``), as a counter per entry, so no
written change goes without its refresh.  ``tdc.refresh_dimensions`` (beat, every few
seconds) takes each pending entry, finds the entities whose wide rows used that key within
``TDC_REFRESH_DAYS`` in the reverse index the merge keeps (``models.orders.DimensionUse``), has
them merged again through the normal chain in bounded batches, and only then clears the entry,
unless it changed again meanwhile.  A crash in between leaves the entry pending: the next pass
merges its entities again, which changes nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any, cast

import redis
from sqlalchemy import Table, select

from flows.registry import RUNNING
from models.orders import DimensionUse
from models.storage import Storage

#: Hash of pending refreshes: "dimension<US>key" -> how many changes of the entry were written.
PENDING = "tdc:refresh:pending"
_SEPARATOR = "\x1f"
USES = cast(Table, DimensionUse.__table__)

#: Deletes a pending entry only if no change was written since it was read.
_CLEAR = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
    return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


def refreshing_dimensions() -> frozenset[str]:
    """The dimensions a running flow looks up with ``refreshes``."""
    return frozenset(lookup.dimension for flow in RUNNING for wide in flow.wide for lookup in wide.lookups
                     if lookup.refreshes)


def mark_pending(transaction: Any, dimension: str, key: str) -> None:
    """Queue a refresh of ``dimension`` ``key`` on a Redis pipeline (the dimension write's MULTI)."""
    transaction.hincrby(PENDING, f"{dimension}{_SEPARATOR}{key}", 1)


def pending(client: redis.Redis) -> list[tuple[str, str, str]]:
    """Each pending (dimension, key, counter)."""
    found = []
    for field, counter in client.hgetall(PENDING).items():
        name = field.decode() if isinstance(field, bytes) else str(field)
        dimension, _, key = name.partition(_SEPARATOR)
        found.append((dimension, key, counter.decode() if isinstance(counter, bytes) else str(counter)))
    return sorted(found)


def clear(client: redis.Redis, dimension: str, key: str, counter: str) -> bool:
    """Drop a pending entry handled at ``counter``; False when it changed again meanwhile."""
    return bool(client.eval(_CLEAR, 1, PENDING, f"{dimension}{_SEPARATOR}{key}", counter))


def entities_using(storage: Storage, dimension: str, key: str, since: dt.datetime,
                   batch: int) -> Iterator[list[str]]:
    """The entities whose wide rows used ``dimension`` ``key`` since ``since``, ``batch`` at a
    time, database by database (in entity order within each)."""
    for database in storage.distinct_databases():
        last = ""
        while True:
            with storage.read_engine(database).connect() as connection:
                found = list(connection.execute(
                    select(USES.c.order_id).where((USES.c.dimension == dimension) & (USES.c.dim_key == key)
                                                  & (USES.c.used_at >= since) & (USES.c.order_id > last))
                    .order_by(USES.c.order_id).limit(batch)).scalars())
            if found:
                yield found
                last = found[-1]
            if len(found) < batch:
                break
