"""Refreshing open entities when a dimension they look up changes (``Lookup.refreshes``).

A change of such a dimension entry (CDC or the T+1 reload) is marked pending in Redis in the
same MULTI/EXEC that writes the entry (``dimensions.lookup``), as a counter per entry, so no
written change goes without its refresh.  ``tdc.refresh_dimensions`` (beat, every few
seconds) takes each pending entry, finds the entities whose wide rows used that key within
``TDC_REFRESH_DAYS`` in the reverse index the merge keeps (``models.orders.DimensionUse``), has
them merged again through the normal chain in bounded batches, and clears the entry once no
change was written since it was read and the latest change is older than a merge can take (a
merge that looked the entry up before the change and committed after the sweep looked is
caught by a later sweep of the entities merged since).  A crash in between leaves the entry
pending: the next pass merges its entities again, which changes nothing twice.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import redis
from sqlalchemy import Table, select

from models.orders import DimensionUse
from models.storage import Storage

#: Hash of pending refreshes: "dimension<US>key" -> how many changes of the entry were written.
PENDING = "tdc:refresh:pending"
#: Same fields -> when (ms) the latest change was marked.
MARKED = "tdc:refresh:marked"
#: Same fields -> when (ms) a pass last began to sweep the entry's entities.
SWEPT = "tdc:refresh:swept"
_SEPARATOR = "\x1f"
USES = cast(Table, DimensionUse.__table__)
#: Entities merged this long before a pass's previous sweep are swept again (clock skew
#: between the machines that merge and the one that sweeps).
SWEEP_MARGIN = dt.timedelta(seconds=10)
#: A merge that began this long after a change was marked may still have read the old value
#: (the clocks of the machine that marked it and the one that merged differ this much).
CLOCK_SKEW = dt.timedelta(seconds=2)

#: Drops a pending entry only if no change was written since it was read.
_CLEAR = """
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
    redis.call('HDEL', KEYS[2], ARGV[1])
    redis.call('HDEL', KEYS[3], ARGV[1])
    return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


@dataclass(frozen=True)
class Pending:
    dimension: str
    key: str
    #: The number of changes marked, as read: the entry is cleared only while it still is.
    counter: str
    marked_at: dt.datetime | None
    swept_at: dt.datetime | None

    @property
    def field(self) -> str:
        return f"{self.dimension}{_SEPARATOR}{self.key}"


def refreshing_dimensions() -> frozenset[str]:
    """The dimensions a running flow looks up with ``refreshes``."""
    # Imported here: reading a dimension must not fix TDC_FLOWS (``tdc demo --flow`` sets it
    # after the command line, which imports intake, is built).
    from flows.registry import RUNNING

    return frozenset(lookup.dimension for flow in RUNNING for wide in flow.wide for lookup in wide.lookups
                     if lookup.refreshes)


def mark_pending(transaction: Any, dimension: str, key: str) -> None:
    """Queue a refresh of ``dimension`` ``key`` on a Redis pipeline (the dimension write's MULTI)."""
    field = f"{dimension}{_SEPARATOR}{key}"
    transaction.hincrby(PENDING, field, 1)
    transaction.hset(MARKED, field, str(_ms(_now())))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _ms(moment: dt.datetime) -> int:
    return int(moment.replace(tzinfo=dt.UTC).timestamp() * 1000)


def _time(raw: Any) -> dt.datetime | None:
    if raw is None:
        return None
    return dt.datetime.fromtimestamp(int(raw) / 1000, dt.UTC).replace(tzinfo=None)


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def pending(client: redis.Redis) -> list[Pending]:
    """Every pending refresh, by dimension and key."""
    marked = {_text(f): v for f, v in client.hgetall(MARKED).items()}
    swept = {_text(f): v for f, v in client.hgetall(SWEPT).items()}
    found = []
    for raw, counter in client.hgetall(PENDING).items():
        field = _text(raw)
        dimension, _, key = field.partition(_SEPARATOR)
        found.append(Pending(dimension, key, _text(counter), _time(marked.get(field)), _time(swept.get(field))))
    return sorted(found, key=lambda p: (p.dimension, p.key))


def swept(client: redis.Redis, entry: Pending, at: dt.datetime) -> None:
    """Record that a pass began sweeping ``entry``'s entities at ``at``."""
    client.hset(SWEPT, entry.field, str(_ms(at)))


def clear(client: redis.Redis, entry: Pending) -> bool:
    """Drop a pending entry handled at its counter; False when it changed again meanwhile."""
    return bool(client.eval(_CLEAR, 3, PENDING, MARKED, SWEPT, entry.field, entry.counter))


def sweep_window(entry: Pending, now: dt.datetime, open_days: float) -> tuple[dt.datetime, dt.datetime]:
    """Which merges a pass sweeps, by the time each began (``DimensionUse.used_at``, taken
    before the merge looks its dimensions up): none that began after the change was marked (they
    read the new value), so up to the mark; from every open one the first time, after that from
    shortly before the previous sweep began (a merge that read the old value and committed after
    that sweep looked)."""
    until = (entry.marked_at or now) + CLOCK_SKEW
    if entry.swept_at is not None:
        return entry.swept_at - SWEEP_MARGIN, until
    return now - dt.timedelta(days=open_days), until


def entities_using(storage: Storage, dimension: str, key: str, window: tuple[dt.datetime, dt.datetime],
                   batch: int) -> Iterator[list[str]]:
    """The entities whose wide rows used ``dimension`` ``key`` in a merge begun within
    ``window``, ``batch`` at a time, database by database (in entity order within each)."""
    since, until = window
    for database in storage.distinct_databases():
        last = ""
        while True:
            with storage.read_engine(database).connect() as connection:
                found = list(connection.execute(
                    select(USES.c.order_id).where((USES.c.dimension == dimension) & (USES.c.dim_key == key)
                                                  & USES.c.used_at.between(since, until) & (USES.c.order_id > last))
                    .order_by(USES.c.order_id).limit(batch)).scalars())
            if found:
                yield found
                last = found[-1]
            if len(found) < batch:
                break
