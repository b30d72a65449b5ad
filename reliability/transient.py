"""The faults worth retrying: a database, Redis or broker that is briefly unreachable or busy,
and lock contention, which is retried here as a whole transaction."""

from __future__ import annotations

import logging
import random
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import kombu.exceptions
import redis
from sqlalchemy import exc as sa_exc

log = logging.getLogger(__name__)

#: Exception types Celery retries with back-off; everything else is a bug or bad data.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa_exc.OperationalError,  # connection lost, deadlock, lock wait timeout, database is locked
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
    ConnectionError,
)

#: MySQL/MariaDB: 1213 deadlock found, 1205 lock wait timeout exceeded.
MYSQL_CONTENTION = {1213, 1205}
#: PostgreSQL SQLSTATEs: 40P01 deadlock detected, 40001 serialization failure.
POSTGRES_CONTENTION = {"40P01", "40001"}
#: Whole-transaction attempts under contention before the error goes to the caller.  Deadlock
#: victims almost always succeed on the first retry; eight covers a burst of producers.
CONTENTION_ATTEMPTS = 8
#: First back-off between those attempts, seconds; doubled each time, full jitter, capped.
CONTENTION_BACKOFF_SECONDS = 0.05
CONTENTION_BACKOFF_CAP_SECONDS = 1.0

T = TypeVar("T")


def is_contention(error: BaseException) -> bool:
    """True for a deadlock, lock wait timeout or serialization failure on any backend: the
    database rolled back (or will not run) the whole transaction, and running it again is the fix."""
    original = getattr(error, "orig", error)
    sqlstate = getattr(original, "sqlstate", None) or getattr(original, "pgcode", None)
    if sqlstate in POSTGRES_CONTENTION:
        return True
    if isinstance(original, sqlite3.OperationalError):
        return "database is locked" in str(original)
    args: tuple[object, ...] = getattr(original, "args", ())
    return len(args) > 0 and args[0] in MYSQL_CONTENTION


@dataclass
class RetryCount:
    """How many whole transactions were run again because of contention."""

    retries: int = 0


def retry_on_contention(work: Callable[[], T], count: RetryCount | None = None,
                        attempts: int = CONTENTION_ATTEMPTS) -> T:
    """Run ``work`` (which opens and commits one whole transaction) again when the database
    rolled it back for contention, with jittered exponential back-off, at most ``attempts``
    times; other errors, and the last contention error, go to the caller.

    Never a savepoint: MariaDB rolls back the whole transaction on a deadlock, savepoints
    included."""
    for attempt in range(attempts):
        try:
            return work()
        except sa_exc.DBAPIError as error:
            if attempt == attempts - 1 or not is_contention(error):
                raise
            if count is not None:
                count.retries += 1
            pause = random.uniform(0, min(CONTENTION_BACKOFF_CAP_SECONDS, CONTENTION_BACKOFF_SECONDS * 2 ** attempt))
            log.info("transaction hit lock contention (%s); running it again in %.2fs", error.orig, pause)
            time.sleep(pause)
    raise AssertionError("unreachable")
