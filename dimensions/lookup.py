"""Dimension look-ups and writes: Redis hashes ``tdc:dim:<dimension>:<key>``.

Each hash carries the position of the change that wrote it (``_position``).  A write lands
only when it is newer (``inputs.positions.compare``), and replaces the hash in one MULTI/EXEC
under WATCH, so a displaced CDC event or an offline reload of yesterday's copy never
overwrites a newer value, and no reader ever finds the entry missing in between.  A delete
leaves a tombstone (``_deleted``) for the same reason: an older upsert arriving after it must
not bring the entry back.
"""

from __future__ import annotations

from collections.abc import Iterable
from enum import Enum
from typing import Any

import redis

from dimensions.refresh import mark_pending, refreshing_dimensions
from flows import DimensionChange
from inputs.positions import compare, decode, encode

POSITION, DELETED = "_position", "_deleted"
#: WATCH rounds before concurrent writers of the same entries are reported.
WRITE_ROUNDS = 16


def dimension_key(dimension: str, key: str) -> str:
    return f"tdc:dim:{dimension}:{key}"


def _fields(change: DimensionChange) -> dict[Any, Any]:
    fields: dict[Any, Any] = {POSITION: encode(change.position)}
    if change.attributes is None:
        return fields | {DELETED: "1"}
    return fields | {name: "" if value is None else str(value) for name, value in change.attributes.items()}


class Verdict(Enum):
    """What became of one dimension change."""

    WRITTEN = "written"
    #: Older than the entry by a source position: dropped, as a stale metadata record is.
    OLDER = "older"
    #: What the entry already holds.
    SAME = "same"
    #: Not newer by event time alone, and different: kept out, counted and alarmed by intake.
    AMBIGUOUS = "ambiguous"


def apply_dimension_changes(client: redis.Redis, changes: Iterable[DimensionChange]) -> int:
    """``put_dimension_changes``; how many were newer and written."""
    return put_dimension_changes(client, list(changes)).count(Verdict.WRITTEN)


def put_dimension_changes(client: redis.Redis, changes: list[DimensionChange]) -> list[Verdict]:
    """Upsert or delete dimension entries, each only if newer than what is stored, in three round
    trips (WATCH, read the entries, MULTI/EXEC); the verdict on each change, in order.

    Raises RuntimeError when other writers kept changing the same entries for WRITE_ROUNDS rounds."""
    latest: dict[str, DimensionChange] = {}
    for change in changes:
        name = dimension_key(change.dimension, change.key)
        if name not in latest or compare(change.position, latest[name].position)[0] > 0:
            latest[name] = change
    if not latest:
        return []
    names = list(latest)
    refreshing = refreshing_dimensions()
    for _ in range(WRITE_ROUNDS):
        with client.pipeline() as transaction:
            try:
                transaction.watch(*names)
                reads = client.pipeline(transaction=False)
                for name in names:
                    reads.hgetall(name)
                stored = {name: {_text(k): _text(v) for k, v in entry.items()}
                          for name, entry in zip(names, reads.execute(), strict=True)}
                newer = [name for name in names if POSITION not in stored[name]
                         or compare(latest[name].position, decode(stored[name][POSITION]))[0] > 0]
                transaction.multi()
                for name in newer:
                    transaction.delete(name)
                    transaction.hset(name, mapping=_fields(latest[name]))
                    if latest[name].dimension in refreshing and _attributes_of(_fields(latest[name])) != \
                            _attributes_of(stored[name]):
                        # In the same transaction: a written change never goes without its
                        # refresh.  A newer copy of the same values (a reload) refreshes nothing.
                        mark_pending(transaction, latest[name].dimension, latest[name].key)
                transaction.execute()
                break
            except redis.WatchError:
                continue
    else:
        raise RuntimeError(f"dimension entries kept changing under {WRITE_ROUNDS} concurrent writes: {names[:3]}")
    written = set(newer)
    verdicts = []
    for change in changes:
        name = dimension_key(change.dimension, change.key)
        if change is latest[name] and name in written:
            verdicts.append(Verdict.WRITTEN)
            continue
        # Judged against what the entry holds now: what was there, or the batch's newest change.
        holder = _fields(latest[name]) if name in written else stored[name]
        fields = _fields(change)
        if {k: v for k, v in fields.items() if k != POSITION} == {k: v for k, v in holder.items() if k != POSITION}:
            verdicts.append(Verdict.SAME)
            continue
        exact = compare(change.position, decode(holder[POSITION]))[1].exact
        verdicts.append(Verdict.OLDER if exact else Verdict.AMBIGUOUS)
    return verdicts


def _attributes_of(fields: dict[Any, Any]) -> dict[str, str]:
    return {str(k): str(v) for k, v in fields.items() if k != POSITION}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _attributes(stored: dict[Any, Any]) -> dict[str, Any]:
    """A dimension entry's attributes as generators read them (none for a tombstone)."""
    return {} if stored.get(DELETED) else {str(k): (v or None) for k, v in stored.items() if not str(k).startswith("_")}


class RedisDimensions:
    """Dimension attributes for one merge batch (a task's run): each entry is fetched at most
    once per batch, so no value served is older than the batch."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._cache: dict[str, dict[str, Any]] = {}

    def prefetch(self, entries: Iterable[tuple[str, Any]]) -> None:
        """Fetch the (dimension, key) entries a batch will look up in one pipelined round trip."""
        names = list(dict.fromkeys(dimension_key(dimension, str(key)) for dimension, key in entries if key is not None))
        names = [name for name in names if name not in self._cache]
        if not names:
            return
        reads = self.client.pipeline(transaction=False)
        for name in names:
            reads.hgetall(name)
        for name, stored in zip(names, reads.execute(), strict=True):
            self._cache[name] = _attributes(stored)

    def get(self, dimension: str, key: Any) -> dict[str, Any]:
        """The attributes of one entry (none when it is missing, deleted, or ``key`` is None)."""
        if key is None:
            return {}
        name = dimension_key(dimension, str(key))
        if name not in self._cache:
            self._cache[name] = _attributes(self.client.hgetall(name))
        return self._cache[name]
