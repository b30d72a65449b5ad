"""Locks and dimensions on the real Redis."""

import pytest

from flows import DimensionChange
from pipeline.dimensions import RedisDimensions, apply_dimension_changes
from pipeline.locks import TaskLocks, lock_name
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


def test_dimension_upsert_and_delete(redis_client) -> None:
    key = new_order_id("S")
    apply_dimension_changes(redis_client, [DimensionChange("store", key, {"store_name": "Old", "city": None})])
    apply_dimension_changes(redis_client, [DimensionChange("store", key, {"store_name": "New", "city": "X"})])
    assert RedisDimensions(redis_client).store(key) == {"store_name": "New", "city": "X"}
    apply_dimension_changes(redis_client, [DimensionChange("store", key, None)])
    assert RedisDimensions(redis_client).store(key) == {}
