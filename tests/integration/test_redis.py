"""Dimensions on the real Redis: only a newer change lands, a delete is not undone, and writers
racing on the same entries from several processes leave the newest."""

import multiprocessing
import random

import pytest
import redis

from dimensions.lookup import RedisDimensions, apply_dimension_changes
from flows import DimensionChange
from inputs.positions import Position
from tests.conftest import REDIS, new_order_id

pytestmark = pytest.mark.integration


def _at(offset: int) -> Position:
    """Binlog offset ``offset`` of one file, with a clock that runs backwards (as a lock wait makes it)."""
    return Position(1_800_000_000_000 - offset, binlog=(3, offset))


def test_dimension_writes_keep_the_newest_position_and_a_delete_is_not_undone(redis_client) -> None:
    key = new_order_id("S")
    written = apply_dimension_changes(redis_client, [
        DimensionChange("store", key, {"store_name": "Old", "city": None}, _at(100)),
        DimensionChange("store", key, {"store_name": "New", "city": "X"}, _at(300)),
        # displaced: committed between the two above, arrives last
        DimensionChange("store", key, {"store_name": "Middle", "city": "Y"}, _at(200)),
    ])
    assert written == 1
    assert RedisDimensions(redis_client).get("store", key) == {"store_name": "New", "city": "X"}
    assert apply_dimension_changes(redis_client, [DimensionChange("store", key, {"store_name": "Mid"}, _at(250))]) == 0
    apply_dimension_changes(redis_client, [DimensionChange("store", key, None, _at(400))])
    assert RedisDimensions(redis_client).get("store", key) == {}
    apply_dimension_changes(redis_client, [DimensionChange("store", key, {"store_name": "Late"}, _at(350))])
    assert RedisDimensions(redis_client).get("store", key) == {}
    apply_dimension_changes(redis_client, [DimensionChange("store", key, {"store_name": "Again"}, _at(500))])
    assert RedisDimensions(redis_client).get("store", key) == {"store_name": "Again"}


def _write_every(keys: list[str], offsets: range) -> None:
    """Write each version of ``keys`` in ``offsets``, in a shuffled order (displaced arrivals)."""
    client = redis.Redis.from_url(REDIS, decode_responses=True)
    order = list(offsets)
    random.Random(offsets.start).shuffle(order)
    for offset in order:
        apply_dimension_changes(client, [DimensionChange("sku", key, {"sku_name": f"v{offset}"}, _at(offset))
                                         for key in keys])


def test_processes_racing_on_the_same_entries_leave_the_newest(redis_client) -> None:
    # Given three processes writing the same entries, each with its own share of the versions
    keys = [new_order_id("K") for _ in range(5)]
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_write_every, args=(keys, range(start, 600, 3))) for start in range(3)]
    for writer in writers:
        writer.start()
    for writer in writers:
        writer.join(120)
    # Then every entry holds the newest version written by any of them
    assert [writer.exitcode for writer in writers] == [0, 0, 0]
    dims = RedisDimensions(redis_client)
    assert [dims.get("sku", key)["sku_name"] for key in keys] == ["v599"] * 5


def test_a_newer_write_between_our_read_and_our_write_is_kept(redis_client) -> None:
    # Given an entry at version 100, and a writer about to store version 200 that reads the
    # stored version, then (before it writes) another client stores version 300
    key = new_order_id("S")
    apply_dimension_changes(redis_client, [DimensionChange("store", key, {"store_name": "v100"}, _at(100))])
    other = redis.Redis.from_url(REDIS, decode_responses=True)

    class ReadThenInterleaved(redis.Redis):
        def pipeline(self, transaction=True, shard_hint=None):  # type: ignore[no-untyped-def]
            pipe = super().pipeline(transaction, shard_hint)
            if not transaction:
                read = pipe.execute

                def execute(raise_on_error: bool = True):  # type: ignore[no-untyped-def]
                    stored = read(raise_on_error)
                    if not interleaved:
                        interleaved.append(True)
                        apply_dimension_changes(other, [DimensionChange("store", key, {"store_name": "v300"},
                                                                        _at(300))])
                    return stored
                pipe.execute = execute  # type: ignore[method-assign]
            return pipe

    interleaved: list[bool] = []
    racing = ReadThenInterleaved.from_url(REDIS, decode_responses=True)
    # When the first writer goes on
    written = apply_dimension_changes(racing, [DimensionChange("store", key, {"store_name": "v200"}, _at(200))])
    # Then it saw the newer version and wrote nothing over it
    assert interleaved and written == 0
    assert RedisDimensions(redis_client).get("store", key) == {"store_name": "v300"}
