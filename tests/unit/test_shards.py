import pytest

from models.shards import (
    database_for_shard,
    meta_table_name,
    shard_for,
    shards_of_database,
    stable_hash,
    task_table_name,
)


@pytest.mark.parametrize(
    ("shard", "database"),
    [(0, 0), (1023, 0), (1024, 1), (2047, 1), (2048, 2), (3071, 2), (3072, 3), (4095, 3)],
)
def test_shard_database_boundaries_for_4096_shards(shard: int, database: int) -> None:
    assert database_for_shard(shard, 4096) == database


@pytest.mark.parametrize("shard", [-1, 4096])
def test_shard_outside_the_map_is_refused(shard: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        database_for_shard(shard, 4096)


@pytest.mark.parametrize(
    ("shard", "task", "meta"),
    [(0, "task_0000", "meta_0000"), (1023, "task_1023", "meta_1023"), (1024, "task_1024", "meta_1024"),
     (4095, "task_4095", "meta_4095")],
)
def test_table_names_are_zero_padded(shard: int, task: str, meta: str) -> None:
    assert task_table_name(shard) == task
    assert meta_table_name(shard) == meta


def test_stable_hash_is_crc32_and_does_not_depend_on_the_process() -> None:
    # Given a known CRC-32 value, when hashing, then it is the same in every process.
    assert stable_hash("abc") == 0x352441C2
    assert shard_for("abc", 4096) == 0x352441C2 % 4096


def test_each_database_holds_a_quarter_of_the_shards_and_routing_agrees() -> None:
    ranges = [shards_of_database(d, 4096) for d in range(4)]
    assert [(r.start, r.stop) for r in ranges] == [(0, 1024), (1024, 2048), (2048, 3072), (3072, 4096)]
    for order_id in (f"O{n}" for n in range(500)):
        shard = shard_for(order_id, 4096)
        assert shard in ranges[database_for_shard(shard, 4096)]
