"""The per-(operation, order) lock taken before a chain is submitted and released, only by
its owner, when the chain ends or the submit fails."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import redis

#: Compare-and-delete: only the token's owner may release.
_RELEASE = """
if redis.call('get', KEYS[1]) == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def lock_name(operation_type: str, order_id: str) -> str:
    return f"tdc:lock:{operation_type}:{order_id}"


class TaskLocks:
    def __init__(self, client: redis.Redis, seconds: int):
        self.client = client
        self.seconds = seconds
        self._release = client.register_script(_RELEASE)

    def acquire(self, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], str]:
        """Take the free locks among ``keys`` (order_id, operation_type) in one round trip;
        returns the token of each taken."""
        keys = list(dict.fromkeys(keys))
        tokens = [uuid.uuid4().hex for _ in keys]
        pipe = self.client.pipeline(transaction=False)
        for (order_id, operation), token in zip(keys, tokens, strict=True):
            pipe.set(lock_name(operation, order_id), token, nx=True, ex=self.seconds)
        taken = pipe.execute()
        return {key: token for key, token, ok in zip(keys, tokens, taken, strict=True) if ok}

    def release(self, owned: Iterable[tuple[str, str, str]]) -> None:
        """Release locks given as (order_id, operation_type, token); others' locks stay."""
        pipe = self.client.pipeline(transaction=False)
        count = 0
        for order_id, operation, token in owned:
            self._release(keys=[lock_name(operation, order_id)], args=[token], client=pipe)
            count += 1
        if count:
            pipe.execute()
