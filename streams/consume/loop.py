"""The loop every consumer runs: fetch a batch, take it in, submit its chains, acknowledge it.

At-least-once: a batch is acknowledged only after intake has committed it, so a consumer killed
at any point leaves nothing unacknowledged that was not stored, and what it had stored but not
acknowledged is delivered again and found duplicate.  A lost broker connection is retried with
back-off; a database or Redis fault keeps the batch in hand and takes it in again.  A stop
request (SIGTERM) lets the batch in hand finish and be acknowledged, then ``consume`` returns.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import redis

from intake.receiver import IntakeReport
from reliability.transient import TRANSIENT_ERRORS
from streams.consume.batches import Message, Submit, TakeIn
from streams.consume.figures import record_batch, record_lag

log = logging.getLogger(__name__)

#: Seconds one fetch waits for a first message: how soon a stop request or the idle limit is
#: noticed when nothing arrives.
POLL_SECONDS = 1.0
#: Seconds between looks at the broker's backlog (one round trip each) while messages flow.
LAG_EVERY_SECONDS = 5.0
#: First pause after a lost connection or an intake fault, doubled each time (with jitter) up to
#: the cap: a broker restart is retried within a second, a long outage costs a look a minute.
BACKOFF_SECONDS = 0.5
BACKOFF_CAP_SECONDS = 60.0


class SourceError(Exception):
    """A source that cannot work as configured (a queue or stream that does not exist, say):
    retrying will not help, the consumer stops with the reason."""


class Source(Protocol):
    """A broker's side of a consumer.  ``lost`` are the errors that mean the connection is gone:
    after one the loop pauses and calls ``connect`` again, which drops what is left of the old
    connection (or keeps a client that reconnects by itself).  ``close`` ends the run."""

    name: str
    lost: tuple[type[BaseException], ...]

    def connect(self) -> None: ...

    def fetch(self, most: int, wait: float) -> list[Message]:
        """Up to ``most`` messages, waiting at most ``wait`` seconds for the first one."""
        ...

    def ack(self, messages: list[Message]) -> None: ...

    def lag(self) -> int | None:
        """Messages waiting in the broker that this consumer has not been given yet."""
        ...

    def close(self) -> None: ...


@dataclass
class Backoff:
    """Jittered exponential pauses: ``next()`` grows from ``base`` to ``cap``, ``reset()`` after a success."""

    base: float = BACKOFF_SECONDS
    cap: float = BACKOFF_CAP_SECONDS
    failures: int = 0

    def next(self) -> float:
        pause = min(self.cap, self.base * 2 ** self.failures)
        self.failures += 1
        return random.uniform(pause / 2, pause)

    def reset(self) -> None:
        self.failures = 0


@dataclass
class Consumed:
    """What a run of ``consume`` did: messages acknowledged, their combined intake report, tasks
    submitted, and whether it stopped because it was asked to, was idle, or failed."""

    messages: int = 0
    report: IntakeReport = field(default_factory=IntakeReport)
    submitted: int = 0
    lag: int | None = None
    ended: str = ""


def consume(source: Source, take_in: TakeIn, submit: Submit, client: redis.Redis | None, *, batch: int,
            idle_exit: float | None, stop: threading.Event,
            shown: Callable[[Consumed, int], None] = lambda consumed, n: None,
            poll: float = POLL_SECONDS, backoff: Backoff | None = None) -> Consumed:
    """Run ``source`` until ``stop`` is set or, with ``idle_exit``, until nothing new arrived for
    that many seconds.  ``take_in`` commits a batch, ``submit`` sends its chains, ``client`` keeps
    the figures for ``/metrics`` (None: not kept); ``shown`` hears each acknowledged batch (and,
    with 0 messages, each new look at the lag).
    Raises ``SourceError`` when the source cannot work as configured."""
    consumed = Consumed()
    backoff = backoff or Backoff()
    connected = False
    last_new = time.monotonic()
    lag_at = 0.0
    while not stop.is_set():
        try:
            if not connected:
                source.connect()
                connected = True
                if backoff.failures:
                    log.warning("consumer %s: connected again", source.name)
                backoff.reset()
            if time.monotonic() - lag_at >= LAG_EVERY_SECONDS:
                consumed.lag, lag_at = source.lag(), time.monotonic()
                if client is not None:
                    record_lag(client, source.name, consumed.lag)
                shown(consumed, 0)
            messages = source.fetch(batch, poll)
        except source.lost as error:
            connected = _lost(source, backoff, stop, f"lost the broker connection ({type(error).__name__}: {error})")
            continue
        if not messages:
            if idle_exit is not None and time.monotonic() - last_new >= idle_exit:
                consumed.ended = "idle"
                break
            continue
        last_new = time.monotonic()
        report = _take_in_until_committed(source, take_in, messages, backoff, stop)
        if report is None:
            consumed.ended = "stopped before its batch was stored (it will be delivered again)"
            break
        consumed.submitted += submit(report.touched)
        try:
            source.ack(messages)
        except source.lost as error:
            # Stored already: delivered again after the reconnection, and found duplicate.
            connected = _lost(source, backoff, stop, f"could not acknowledge {len(messages)} messages "
                              f"({type(error).__name__}: {error}); they will be delivered again")
            continue
        consumed.messages += len(messages)
        consumed.report.add(report)
        # Per-line verdicts and touched keys are the batch's business: a consumer that runs for
        # months keeps only the counts.
        consumed.report.outcomes.clear()
        consumed.report.touched.clear()
        if client is not None:
            record_batch(client, source.name, len(messages), report.quarantined)
        shown(consumed, len(messages))
    if not consumed.ended:
        consumed.ended = "stopped"
    _close(source)
    return consumed


def _take_in_until_committed(source: Source, take_in: TakeIn, messages: list[Message], backoff: Backoff,
                             stop: threading.Event) -> IntakeReport | None:
    """``take_in(messages)``, again after a pause while the database or Redis cannot be reached;
    None when a stop is requested before it could commit."""
    while True:
        try:
            report = take_in(messages)
        except TRANSIENT_ERRORS as error:
            pause = backoff.next()
            log.warning("consumer %s: could not take in %d messages (%s: %s); trying again in %.1fs",
                        source.name, len(messages), type(error).__name__, error, pause)
            if stop.wait(pause):
                return None
            continue
        backoff.reset()
        return report


def _lost(source: Source, backoff: Backoff, stop: threading.Event, what: str) -> bool:
    pause = backoff.next()
    log.warning("consumer %s: %s; connecting again in %.1fs", source.name, what, pause)
    stop.wait(pause)
    return False


def _close(source: Source) -> None:
    try:
        source.close()
    except Exception:  # noqa: BLE001 - a connection already gone may fail to close; nothing is lost
        log.debug("consumer %s: closing failed", source.name, exc_info=True)
