"""The Redis client of this process (dimensions, locks), remade after a fork."""

from __future__ import annotations

import os

import redis

from settings import get_settings

_process_client: tuple[int, redis.Redis] | None = None


def get_redis() -> redis.Redis:
    global _process_client
    if _process_client is None or _process_client[0] != os.getpid():
        client = redis.Redis.from_url(get_settings().redis_url, decode_responses=True,
                                      socket_timeout=10, health_check_interval=30)
        _process_client = (os.getpid(), client)
    return _process_client[1]
