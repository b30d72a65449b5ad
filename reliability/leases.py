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
from typing import TypeVar

import redis

from settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

#: The one counter every token is drawn from (tokens grow per order because they grow overall).
FENCE_KEY = "tdc:fence"

# Each script below takes a batch of orders, one lease key each, and answers one value per key:
# a step's 500 orders cost one script call, not 500.

# KEYS: leases, then the fence counter last.  ARGV: expiry ms.  Returns, per lease, the new token,
# or 0 when the lease is held.  Tokens grow by one within the batch.
_ACQUIRE = """
local clock = redis.call('time')
local now = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
local fence = KEYS[#KEYS]
local last = tonumber(redis.call('get', fence) or '0')
local tokens = {}
for i = 1, #KEYS - 1 do
    if redis.call('exists', KEYS[i]) == 1 then
        tokens[i] = 0
    else
        last = math.max(last + 1, now)
        -- The counter first: a script stopped part-way (Redis keeps what it wrote) never leaves
        -- a lease with a token the counter has not passed.
        redis.call('set', fence, string.format('%d', last))
        redis.call('hset', KEYS[i], 'token', string.format('%d', last), 'since', clock[1])
        redis.call('pexpire', KEYS[i], ARGV[1])
        tokens[i] = last
    end
end
return tokens
"""

# KEYS: leases.  ARGV: expiry ms, ceiling s, revive (1 or 0), queued (1 or 0), then one token per
# lease.  Returns, per lease, 1 renewed, 0 lost to another holder (or gone, when not reviving),
# -1 past the ceiling (left to expire).  With revive, a lease that expired with nobody taking it
# over is taken back under the same token: if anyone had claimed the order since, our writes are
# fenced anyway.  A queued renewal records when (ms), a running one clears it.
_RENEW = """
local clock = redis.call('time')
local queued_at = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local results = {}
for i = 1, #KEYS do
    local mine = ARGV[4 + i]
    local token = redis.call('hget', KEYS[i], 'token')
    local result = 1
    if not token then
        if ARGV[3] ~= '1' then
            result = 0
        else
            redis.call('hset', KEYS[i], 'token', mine, 'since', clock[1])
        end
    elseif token ~= mine then
        result = 0
    elseif tonumber(clock[1]) - tonumber(redis.call('hget', KEYS[i], 'since')) >= tonumber(ARGV[2]) then
        result = -1
    end
    if result == 1 then
        if ARGV[4] == '1' then
            redis.call('hset', KEYS[i], 'queued_at', queued_at)
        else
            redis.call('hdel', KEYS[i], 'queued_at')
        end
        redis.call('pexpire', KEYS[i], ARGV[1])
    end
    results[i] = result
end
return results
"""

# KEYS: lease.  ARGV: age ms.  Drops a lease that has waited queued for longer than the age;
# returns 1 when it did.
_DROP_STALE_QUEUED = """
local queued_at = redis.call('hget', KEYS[1], 'queued_at')
if not queued_at then return 0 end
if tonumber(queued_at) > tonumber(ARGV[1]) then return 0 end
return redis.call('del', KEYS[1])
"""

# KEYS: leases.  ARGV: one token per lease.  Only the holder releases.
_RELEASE = """
for i = 1, #KEYS do
    if redis.call('hget', KEYS[i], 'token') == ARGV[i] then
        redis.call('del', KEYS[i])
    end
end
return 0
"""

#: Orders per script call (a call holds Redis for its duration: about a millisecond per 200).
SCRIPT_BATCH = 500


def _batches(items: list[T]) -> Iterator[list[T]]:
    for start in range(0, len(items), SCRIPT_BATCH):
        yield items[start:start + SCRIPT_BATCH]


def lease_name(order_id: str) -> str:
    return f"tdc:lease:{order_id}"


class OrderLeases:
    """Take, renew and release per-order leases; each call is one script call per SCRIPT_BATCH orders."""

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
        expiry = self.queued_ms if queued else self.lease_ms
        taken: dict[str, int] = {}
        for batch in _batches(orders):
            tokens = self._acquire(keys=[*map(lease_name, batch), FENCE_KEY], args=[expiry])
            taken.update((order_id, int(token)) for order_id, token in zip(batch, tokens, strict=True) if token)
        return taken

    def renew(self, owned: dict[str, int], queued: bool = False, revive: bool = True) -> set[str]:
        """Extend the leases ``owned`` (order -> token) by the running lease, or the queued one;
        returns the orders whose lease another holder has taken.

        ``revive``: take back a lease that lapsed with nobody taking it over (a step that runs on).
        Without it a lease that is gone stays gone and counts as lost: a renewal that may come
        after its chain released the order (a worker renewing the messages it still holds) must
        not hold the order for nobody."""
        if not owned:
            return set()
        settings = [self.queued_ms if queued else self.lease_ms, self.ceiling_seconds, "1" if revive else "0",
                    "1" if queued else "0"]
        lost: set[str] = set()
        for batch in _batches(list(owned.items())):
            held = self._renew(keys=[lease_name(order_id) for order_id, _ in batch],
                               args=[*settings, *(str(token) for _, token in batch)])
            lost.update(order_id for (order_id, _), one in zip(batch, held, strict=True) if one == 0)
        if lost:
            log.info("%d orders were taken over by another holder: %s", len(lost), sorted(lost)[:5])
        return lost

    def release(self, owned: dict[str, int]) -> None:
        """Release the leases ``owned`` (order -> token); a lease another holder took stays."""
        if not owned:
            return
        for batch in _batches(list(owned.items())):
            self._release(keys=[lease_name(order_id) for order_id, _ in batch], args=[str(token) for _, token in batch])

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
