"""Dimensions on the real Redis."""

import pytest

from flows import DimensionChange
from pipeline.dimensions import RedisDimensions, apply_dimension_changes
from tests.conftest import new_order_id

pytestmark = pytest.mark.integration


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
