"""Locks and dimensions on the real Redis."""

import pytest

from flows import DimensionChange
from pipeline.dimensions import RedisDimensions, apply_dimension_changes
from reliability.leases import TaskLocks, lock_name
from tests.conftest import new_order_id

pytestmark = pytest.mark.integration


def test_a_lock_is_taken_once_expires_and_is_released_only_by_its_owner(redis_client) -> None:
    locks = TaskLocks(redis_client, seconds=3600)
    order_id = new_order_id()
    first = locks.acquire([(order_id, "PAY"), (order_id, "SUBMIT")])
    second = locks.acquire([(order_id, "PAY")])
    assert set(first) == {(order_id, "PAY"), (order_id, "SUBMIT")}
    assert second == {}
    assert 3500 < redis_client.ttl(lock_name("PAY", order_id)) <= 3600
    locks.release([(order_id, "PAY", "someone-else")])
    assert redis_client.exists(lock_name("PAY", order_id))
    locks.release([(order_id, "PAY", first[(order_id, "PAY")])])
    assert not redis_client.exists(lock_name("PAY", order_id))
    assert locks.acquire([(order_id, "PAY")]) != {}


def test_dimension_writes_keep_the_newest_position_and_a_delete_is_not_undone(redis_client) -> None:
    key = new_order_id("S")
    written = apply_dimension_changes(redis_client, [
        DimensionChange("store", key, {"store_name": "Old", "city": None}, "1700000000000.1"),
        DimensionChange("store", key, {"store_name": "New", "city": "X"}, "1700000000002.1"),
        # displaced: committed between the two above, arrives last
        DimensionChange("store", key, {"store_name": "Middle", "city": "Y"}, "1700000000001.1"),
    ])
    assert written == 2
    assert RedisDimensions(redis_client).store(key) == {"store_name": "New", "city": "X"}
    apply_dimension_changes(redis_client, [DimensionChange("store", key, None, "1700000000003.1")])
    assert RedisDimensions(redis_client).store(key) == {}
    apply_dimension_changes(redis_client, [DimensionChange("store", key, {"store_name": "Late"}, "1700000000002.5")])
    assert RedisDimensions(redis_client).store(key) == {}
    apply_dimension_changes(redis_client, [DimensionChange("store", key, {"store_name": "Again"}, "1700000000004.1")])
    assert RedisDimensions(redis_client).store(key) == {"store_name": "Again"}
