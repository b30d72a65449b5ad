"""Per-order leases with fencing tokens (DESIGN section 6).

One chain at a time works on an order: it holds the order's lease in Redis, a short expiry it
renews while its steps run (``TDC_LEASE_SECONDS``), and a longer one while its next step waits
in the broker (``TDC_QUEUED_LEASE_SECONDS``), never past ``TDC_LOCK_SECONDS`` in all.  A holder
that died stops renewing; once its lease expires the rescan takes the order over.

Taking a lease hands out a fencing token that only ever grows: the larger of the last token
plus one and Redis's clock in microseconds, so tokens keep growing even if Redis loses its data.
Every chain message carries its token, and every step that writes checks it against the one the
order's storage last saw (``reliability.fencing``) in the transaction that writes: a late
message from a dead or slow holder changes nothing.

Serialising per order, not per (operation, order), is what keeps a PAY and a CANCEL of one
order from passing their checks side by side.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import redis

from settings import Settings

log = logging.getLogger(__name__)

#: The one counter every token is drawn from (tokens grow per order because they grow overall).
FENCE_KEY = "tdc:fence"

# KEYS: lease, fence counter.  ARGV: expiry ms.  Returns the new token, or 0 when the lease is held.
_ACQUIRE = """
if redis.call('exists', KEYS[1]) == 1 then return 0 end
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local token = math.max(tonumber(redis.call('get', KEYS[2]) or '0') + 1, now)
redis.call('set', KEYS[2], string.format('%d', token))
redis.call('hset', KEYS[1], 'token', string.format('%d', token), 'since', clock[1])
redis.call('pexpire', KEYS[1], ARGV[1])
return token
"""

# KEYS: lease.  ARGV: token, expiry ms, ceiling s, revive (1 or 0), queued (1 or 0).  Returns 1
# renewed, 0 lost to another holder (or gone, when not reviving), -1 past the ceiling (left to
# expire).  With revive, a lease that expired with nobody taking it over is taken back under the
# same token: if anyone had claimed the order since, our writes are fenced anyway.  A queued
# renewal records when (ms), a running one clears it.
_RENEW = """
local token = redis.call('hget', KEYS[1], 'token')
local clock = redis.call('time')
if not token then
    if ARGV[4] ~= '1' then return 0 end
    redis.call('hset', KEYS[1], 'token', ARGV[1], 'since', clock[1])
elseif token ~= ARGV[1] then
    return 0
elseif tonumber(clock[1]) - tonumber(redis.call('hget', KEYS[1], 'since')) >= tonumber(ARGV[3]) then
    return -1
end
if ARGV[5] == '1' then
    redis.call('hset', KEYS[1], 'queued_at', tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000))
else
    redis.call('hdel', KEYS[1], 'queued_at')
end
redis.call('pexpire', KEYS[1], ARGV[2])
return 1
"""

# KEYS: lease.  ARGV: age ms.  Drops a lease that has waited queued for longer than the age;
# returns 1 when it did.
_DROP_STALE_QUEUED = """
local queued_at = redis.call('hget', KEYS[1], 'queued_at')
if not queued_at then return 0 end
if tonumber(queued_at) > tonumber(ARGV[1]) then return 0 end
return redis.call('del', KEYS[1])
"""

# KEYS: lease.  ARGV: token.  Only the holder releases.
_RELEASE = """
if redis.call('hget', KEYS[1], 'token') == ARGV[1] then
    return redis.call('del', KEYS[1])
end
return 0
"""


def lease_name(order_id: str) -> str:
    return f"tdc:lease:{order_id}"


class OrderLeases:
    """Take, renew and release per-order leases; each call is one pipelined round trip."""

    def __init__(self, client: redis.Redis, settings: Settings):
        self.client = client
        self.lease_ms = settings.lease_seconds * 1000
        self.queued_ms = settings.queued_lease_seconds * 1000
        self.ceiling_seconds = settings.lock_seconds
        self._acquire = client.register_script(_ACQUIRE)
        self._renew = client.register_script(_RENEW)
        self._release = client.register_script(_RELEASE)
        self._drop_stale_queued = client.register_script(_DROP_STALE_QUEUED)

    def acquire(self, order_ids: Iterable[str], queued: bool = False) -> dict[str, int]:
        """Take the free leases among ``order_ids``; returns the token of each taken.  They run
        for the running lease (or the queued one): a submitter renews them with the queued lease
        once its chain is in the broker, so one that dies in between holds them a lease only."""
        orders = list(dict.fromkeys(order_ids))
        pipe = self.client.pipeline(transaction=False)
        for order_id in orders:
            self._acquire(keys=[lease_name(order_id), FENCE_KEY], args=[self.queued_ms if queued else self.lease_ms],
                          client=pipe)
        return {order_id: int(token) for order_id, token in zip(orders, pipe.execute(), strict=True) if token}

    def renew(self, owned: dict[str, int], queued: bool = False, revive: bool = True) -> set[str]:
        """Extend the leases ``owned`` (order -> token) by the running lease, or the queued one;
        returns the orders whose lease another holder has taken.

        ``revive``: take back a lease that lapsed with nobody taking it over (a step that runs on).
        Without it a lease that is gone stays gone and counts as lost: a renewal that may come
        after its chain released the order (a worker renewing the messages it still holds) must
        not hold the order for nobody."""
        if not owned:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for order_id, token in owned.items():
            self._renew(keys=[lease_name(order_id)], client=pipe,
                        args=[str(token), self.queued_ms if queued else self.lease_ms, self.ceiling_seconds,
                              "1" if revive else "0", "1" if queued else "0"])
        lost = {order_id for order_id, held in zip(owned, pipe.execute(), strict=True) if held == 0}
        if lost:
            log.info("%d orders were taken over by another holder: %s", len(lost), sorted(lost)[:5])
        return lost

    def release(self, owned: dict[str, int]) -> None:
        """Release the leases ``owned`` (order -> token); a lease another holder took stays."""
        if not owned:
            return
        pipe = self.client.pipeline(transaction=False)
        for order_id, token in owned.items():
            self._release(keys=[lease_name(order_id)], args=[str(token)], client=pipe)
        pipe.execute()

    def clock_ms(self) -> int:
        """Redis's clock, in ms: the clock ``queued_at`` is kept in."""
        seconds, micros = self.client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    def drop_stale_queued(self, order_ids: Iterable[str], queued_by_ms: int) -> set[str]:
        """Drop the leases among ``order_ids`` queued at or before ``queued_by_ms`` (``clock_ms``)
        and not renewed since; the orders dropped.  For the rescan, with a time taken before it saw
        the chain queues empty: a message published by then is no longer in the broker, so its
        order's lease is held for nobody (its message never reached the broker, or a worker took
        it and died before it could say so, and a Redis broker hides it for the visibility
        timeout; a live worker holding it renews the lease, which moves ``queued_at``).  Taking
        such an order over is safe even if the message does run after all: its token is fenced
        off."""
        orders = list(dict.fromkeys(order_ids))
        if not orders:
            return set()
        pipe = self.client.pipeline(transaction=False)
        for order_id in orders:
            self._drop_stale_queued(keys=[lease_name(order_id)], args=[int(queued_by_ms)], client=pipe)
        return {order_id for order_id, dropped in zip(orders, pipe.execute(), strict=True) if dropped}

    @contextmanager
    def kept(self, owned: dict[str, int]) -> Iterator[set[str]]:
        """Renew ``owned`` now and every third of the lease while the block runs; yields the
        orders already lost to another holder (the block should leave them alone)."""
        lost = self.renew(owned)
        stop = threading.Event()
        live = {order_id: token for order_id, token in owned.items() if order_id not in lost}

        def keep() -> None:
            while not stop.wait(self.lease_ms / 3000):
                try:
                    self.renew(live)
                except redis.RedisError:
                    log.warning("could not renew %d leases; retrying in a third of the lease", len(live))

        keeper = threading.Thread(target=keep, name="tdc-lease-keeper", daemon=True)
        if live:
            keeper.start()
        try:
            yield lost
        finally:
            stop.set()
            if keeper.is_alive():
                keeper.join()
