"""Shard routing: which task table and which database hold an order.

Pure functions, no I/O.  ``shard = stable_hash(order_id) % shards`` and the
shards are split evenly over the four shard databases, so with the default
4096 shards database ``shard // 1024`` holds tables ``shard``.  Table names
come only from here, never from input.
"""

from __future__ import annotations

import zlib

from settings import SHARD_DATABASES


def stable_hash(order_id: str) -> int:
    """A hash of ``order_id`` that is the same in every process and release (CRC-32 of UTF-8)."""
    return zlib.crc32(order_id.encode("utf-8"))


def shard_for(order_id: str, shards: int) -> int:
    """The shard that holds every row of ``order_id``."""
    return stable_hash(order_id) % shards


def database_for_shard(shard: int, shards: int) -> int:
    """Index (0..3) of the shard database that holds ``shard``.

    Raises ValueError for a shard outside ``0..shards-1``.
    """
    if not 0 <= shard < shards:
        raise ValueError(f"shard {shard} is outside 0..{shards - 1}")
    return shard // (shards // SHARD_DATABASES)


def database_for(order_id: str, shards: int) -> int:
    return database_for_shard(shard_for(order_id, shards), shards)


def shards_of_database(database: int, shards: int) -> range:
    """The shards whose tables live in ``database``."""
    per_database = shards // SHARD_DATABASES
    return range(database * per_database, (database + 1) * per_database)


def _suffix(shard: int) -> str:
    return f"{shard:04d}"


def task_table_name(shard: int) -> str:
    return f"task_{_suffix(shard)}"


def meta_table_name(shard: int) -> str:
    return f"meta_{_suffix(shard)}"
