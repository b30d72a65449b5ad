"""The console's DONE-per-minute series, written by chain steps in many processes into Redis."""

from __future__ import annotations

import multiprocessing
import uuid

import pytest
import redis

from chain.timings import DONE_PER_MINUTE, MINUTES_KEPT, done_per_minute, record
from tests.conftest import REDIS

pytestmark = pytest.mark.integration

MINUTE = 29_000_000  # an epoch minute in 2025


def _finish(minute: int, keys: int) -> None:
    client = redis.Redis.from_url(REDIS, decode_responses=True)
    done = [{"order_id": f"O{uuid.uuid4().hex[:8]}", "operation_type": "PAY", "token": 1} for _ in range(keys)]
    record(client, "finish", 0.02, done, minute * 60 + 30)


def test_done_per_minute_adds_up_what_every_process_finished_and_forgets_old_minutes(redis_client) -> None:
    redis_client.delete(DONE_PER_MINUTE)
    redis_client.hset(DONE_PER_MINUTE, str(MINUTE - MINUTES_KEPT - 5), 99)  # older than kept
    context = multiprocessing.get_context("spawn")
    jobs = [context.Process(target=_finish, args=(minute, keys))
            for minute, keys in ((MINUTE - 2, 3), (MINUTE - 2, 4), (MINUTE, 5), (MINUTE, 1))]
    for job in jobs:
        job.start()
    for job in jobs:
        job.join(60)
        assert job.exitcode == 0
    series = done_per_minute(redis_client, MINUTE * 60 + 59, 5)
    assert series == [(MINUTE - 4, 0), (MINUTE - 3, 0), (MINUTE - 2, 7), (MINUTE - 1, 0), (MINUTE, 6)]
    assert not redis_client.hexists(DONE_PER_MINUTE, str(MINUTE - MINUTES_KEPT - 5))
    assert 0 < redis_client.ttl(DONE_PER_MINUTE) <= MINUTES_KEPT * 60
    redis_client.delete(DONE_PER_MINUTE)
