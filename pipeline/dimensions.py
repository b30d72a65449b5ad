"""Dimension look-ups and writes: Redis hashes ``tdc:dim:<dimension>:<key>``."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import redis

from flows import DimensionChange


def dimension_key(dimension: str, key: str) -> str:
    return f"tdc:dim:{dimension}:{key}"


def apply_dimension_changes(client: redis.Redis, changes: Iterable[DimensionChange]) -> int:
    """Upsert or delete dimension hashes in one round trip; returns how many.

    MULTI/EXEC so no reader sees a hash between its delete and its new fields."""
    pipe = client.pipeline(transaction=True)
    count = 0
    for change in changes:
        name = dimension_key(change.dimension, change.key)
        pipe.delete(name)
        if change.attributes is not None:
            pipe.hset(name, mapping={k: "" if v is None else str(v) for k, v in change.attributes.items()})
        count += 1
    if count:
        pipe.execute()
    return count


class RedisDimensions:
    """Store and SKU attributes for one merge batch, each fetched at most once."""

    def __init__(self, client: redis.Redis):
        self.client = client
        self._cache: dict[str, dict[str, Any]] = {}

    def _get(self, dimension: str, key: str | None) -> dict[str, Any]:
        if key is None:
            return {}
        name = dimension_key(dimension, key)
        if name not in self._cache:
            self._cache[name] = {str(k): (v or None) for k, v in self.client.hgetall(name).items()}
        return self._cache[name]

    def store(self, store_id: str | None) -> dict[str, Any]:
        return self._get("store", store_id)

    def sku(self, sku_id: str | None) -> dict[str, Any]:
        return self._get("sku", sku_id)
