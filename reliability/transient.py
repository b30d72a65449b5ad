"""The faults worth retrying: a database, Redis or broker that is briefly unreachable or busy."""

from __future__ import annotations

import kombu.exceptions
import redis
from sqlalchemy import exc as sa_exc

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
