"""What the chain records for ``/metrics`` (``web.metrics``): how long each step batch took, and
for each task it marked DONE, how long that took from the newest event behind it (end-to-end lag).

The figures live in Redis, not in the worker, so every process on every machine adds to the same
histograms and one scrape reads them all.  A histogram is one hash: field ``b:<upper bound>``
counts the observations of that bucket alone (above the bound before it; the scrape makes them
cumulative), ``sum`` is their total in seconds.  A step batch writes its figures in one pipelined
round trip (MULTI/EXEC, so a scrape never sees a count without its sum): one HINCRBY per bucket
it touched, HINCRBYFLOAT on the sum, and at finish the same for the lags and a DONE count per
operation.  When Redis fails the batch loses its figures, never its work: it is logged and the
step goes on.  A batch with no keys (a chain whose check found nothing ready) is not timed: it
would cost a round trip and pull the percentiles towards nothing.
"""

from __future__ import annotations

import bisect
import functools
import logging
import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import redis

from chain.keys import Key
from inputs.positions import decode

log = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

#: Upper bounds (seconds) of a step batch's duration: a batch of 50 keys takes tens of
#: milliseconds on an idle MariaDB, minutes only under heavy contention (the step limit is 180 s).
STEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 180.0, math.inf)
#: Upper bounds (seconds) of event-to-DONE lag: a second or two when the fleet keeps up, minutes
#: behind a backlog, hours for a task that waited for its predecessor, a day for a replay.
LAG_BUCKETS = (0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 21600.0, 86400.0,
               math.inf)
#: The chain's steps, in order.
STEPS = ("check", "merge", "aggregate", "finish")
#: Redis hash of one step's duration histogram.
STEP_HISTOGRAM = "tdc:metrics:step:{step}"
#: Redis hash of the event-to-DONE lag histogram.
LAG_HISTOGRAM = "tdc:metrics:lag"
#: Redis hash: operation -> tasks marked DONE.
DONE_COUNTS = "tdc:metrics:done"
#: Redis hash: epoch minute -> tasks marked DONE in it (the console's DONE-per-minute chart);
#: fields older than ``MINUTES_KEPT`` are trimmed by the reader, the key expires when idle.
DONE_PER_MINUTE = "tdc:metrics:done_per_minute"
MINUTES_KEPT = 24 * 60


def bucket_field(bound: float) -> str:
    """The hash field of the bucket with upper bound ``bound``."""
    return "b:+Inf" if bound == math.inf else f"b:{bound:g}"


def _add(pipe: Any, key: str, bounds: tuple[float, ...], values: list[float]) -> None:
    for index, n in Counter(bisect.bisect_left(bounds, value) for value in values).items():
        pipe.hincrby(key, bucket_field(bounds[index]), n)
    pipe.hincrbyfloat(key, "sum", sum(values))


def cumulative(bounds: tuple[float, ...], fields: Mapping[Any, Any]) -> tuple[list[tuple[float, int]], float]:
    """A histogram hash as Prometheus wants it: (upper bound, observations at or below it) for
    each bound, and the sum.  Fields of bounds this version does not know are left out."""
    text = {(k.decode() if isinstance(k, bytes) else k): v for k, v in fields.items()}
    buckets, total = [], 0
    for bound in bounds:
        total += int(text.get(bucket_field(bound), 0))
        buckets.append((bound, total))
    return buckets, float(text.get("sum", 0.0))


def newest_event_times(sources: Iterable[Any]) -> dict[str, int]:
    """Epoch ms of the newest event behind each operation among an order's metadata rows (their
    positions carry the source's commit or event time), in one pass; an operation with a
    position that cannot be read is left out."""
    newest: dict[str, int] = {}
    unreadable: set[str] = set()
    for row in sources:
        try:
            time_ms = decode(row.position).time_ms
        except ValueError:
            unreadable.add(row.operation_type)
            continue
        if time_ms > newest.get(row.operation_type, -1):
            newest[row.operation_type] = time_ms
    return {operation: ms for operation, ms in newest.items() if operation not in unreadable}


@dataclass
class StepTiming:
    """One step batch being timed: the keys the step finished (at finish) are added to ``done``."""

    step: str
    done: list[Key] = field(default_factory=list)


def record(client: redis.Redis | None, step: str, seconds: float, done: list[Key], now: float) -> None:
    """Add one step batch's duration, and the lag of each key in ``done`` as of ``now`` (epoch
    seconds), in one round trip; never raises."""
    if client is None:
        return
    try:
        pipe = client.pipeline()
        _add(pipe, STEP_HISTOGRAM.format(step=step), STEP_BUCKETS, [seconds])
        # An event stamped in the future (a source clock ahead of ours) counts as no lag.
        lags = [max(0.0, now - key["event_ms"] / 1000) for key in done if isinstance(key.get("event_ms"), int)]
        if lags:
            _add(pipe, LAG_HISTOGRAM, LAG_BUCKETS, lags)
        for operation, n in Counter(key["operation_type"] for key in done).items():
            pipe.hincrby(DONE_COUNTS, operation, n)
        if done:
            pipe.hincrby(DONE_PER_MINUTE, str(int(now // 60)), len(done))
            pipe.expire(DONE_PER_MINUTE, MINUTES_KEPT * 60)
        pipe.execute()
    except Exception:  # noqa: BLE001 - the figures must never fail the step
        log.warning("could not record the timings of a %s step", step, exc_info=True)


@contextmanager
def timed_step(client: redis.Redis | None, step: str, keys: list[Key]) -> Iterator[StepTiming]:
    """Time the block as one batch of ``step`` (not when ``keys`` is empty), also when it raises."""
    timing = StepTiming(step)
    started = time.perf_counter()
    try:
        yield timing
    finally:
        if keys:
            record(client, step, time.perf_counter() - started, timing.done, time.time())


def timed(step: str) -> Callable[[Callable[Concatenate[Any, Any, P], R]], Callable[Concatenate[Any, Any, P], R]]:
    """Decorate a step function ``(storage, leases, ..., keys)`` (its keys last) to time each batch."""
    def decorate(function: Callable[Concatenate[Any, Any, P], R]) -> Callable[Concatenate[Any, Any, P], R]:
        @functools.wraps(function)
        def step_function(storage: Any, leases: Any, *args: P.args, **kwargs: P.kwargs) -> R:
            keys = kwargs.get("keys", args[-1] if args else [])
            with timed_step(leases.client, step, keys if isinstance(keys, list) else []):
                return function(storage, leases, *args, **kwargs)
        return step_function
    return decorate


def done_per_minute(client: redis.Redis, now: float, minutes: int) -> list[tuple[int, int]]:
    """(epoch minute, tasks marked DONE in it) for the last ``minutes`` minutes up to ``now``,
    oldest first, a minute with none as 0; drops fields older than ``MINUTES_KEPT``."""
    current = int(now // 60)
    fields = {int(k): int(v) for k, v in client.hgetall(DONE_PER_MINUTE).items()}
    stale = [str(minute) for minute in fields if minute <= current - MINUTES_KEPT]
    if stale:
        client.hdel(DONE_PER_MINUTE, *stale)
    return [(minute, fields.get(minute, 0)) for minute in range(current - minutes + 1, current + 1)]
