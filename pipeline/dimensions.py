"""Dimension look-ups and writes: Redis hashes ``tdc:dim:<dimension>:<key>``.

Each hash carries the position of the change that wrote it (``_position``).  A write lands
only when it is newer, in one server-side step, so a displaced CDC event or an offline reload
of yesterday's copy never overwrites a newer value, and no reader ever finds the entry
missing in between.  A delete leaves a tombstone (``_deleted``) for the same reason: an older
upsert arriving after it must not bring the entry back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from flows import DimensionChange

#: ARGV: position, then field/value pairs.  Replaces the hash when ARGV[1] is newer than its position.
_PUT_IF_NEWER = """
local stored = redis.call('hget', KEYS[1], '_position')
if stored and stored >= ARGV[1] then
    return 0
end
redis.call('del', KEYS[1])
redis.call('hset', KEYS[1], '_position', unpack(ARGV))
return 1
"""
POSITION, DELETED = "_position", "_deleted"


def dimension_key(dimension: str, key: str) -> str:
    return f"tdc:dim:{dimension}:{key}"


def _fields(attributes: dict[str, Any] | None) -> list[str]:
    if attributes is None:
        return [DELETED, "1"]
    fields: list[str] = []
    for name, value in attributes.items():
        fields += [name, "" if value is None else str(value)]
    return fields


def apply_dimension_changes(client: redis.Redis, changes: Iterable[DimensionChange]) -> int:
    """Upsert or delete dimension entries, each only if newer than what is stored, in one
    round trip; returns how many were newer and written."""
    put = client.register_script(_PUT_IF_NEWER)
    pipe = client.pipeline(transaction=False)
    count = 0
    for change in changes:
        put(keys=[dimension_key(change.dimension, change.key)],
            args=[change.position, *_fields(change.attributes)], client=pipe)
        count += 1
    return sum(pipe.execute()) if count else 0


class RedisDimensions:
    """Store and SKU attributes for one merge batch (a task's run): each entry is fetched at
    most once per batch, so no value served is older than the batch."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._cache: dict[str, dict[str, Any]] = {}

    def _get(self, dimension: str, key: str | None) -> dict[str, Any]:
        if key is None:
            return {}
        name = dimension_key(dimension, key)
        if name not in self._cache:
            stored = self.client.hgetall(name)
            self._cache[name] = {} if stored.get(DELETED) else {
                str(k): (v or None) for k, v in stored.items() if not str(k).startswith("_")}
        return self._cache[name]

    def store(self, store_id: str | None) -> dict[str, Any]:
        return self._get("store", store_id)

    def sku(self, sku_id: str | None) -> dict[str, Any]:
        return self._get("sku", sku_id)
