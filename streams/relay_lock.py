"""One changelog relay per shard database at a time: a lock the database server (or, for SQLite,
the file system) releases by itself when the holder's connection or process dies.

- MySQL/MariaDB: ``GET_LOCK`` on a connection of the lock's own;
- PostgreSQL: a session advisory lock (``pg_try_advisory_lock``) on a connection of its own;
- SQLite: ``flock`` on a file beside the database file.

No lease runs out under a relay that is merely slow: the lock goes only with its connection.  A
relay checks it before every round (``RelayLock.check``) and stops at the first check after its
lock connection was lost.  That is not a fence: a relay whose lock connection dies between the
check and the publish still publishes that round (and marks it), possibly after another relay
took the database over and published newer versions of the same orders.  Consumers therefore
de-duplicate on (order id, version) and keep the highest version, which they must do anyway for a
relay killed between publishing and marking.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection, Engine, text


class LockLost(RuntimeError):
    """The relay no longer holds its database's lock: it must stop publishing."""


class RelayLock:
    """A held relay lock; ``check`` raises LockLost when it is not held any more."""

    def __init__(self, name: str, connection: Connection | None = None):
        self.name = name
        self.connection = connection

    def check(self) -> None:
        if self.connection is None:
            return
        try:
            if self.connection.dialect.name in ("mysql", "mariadb"):
                held = self.connection.execute(text("SELECT IS_USED_LOCK(:name) = CONNECTION_ID()"),
                                               {"name": self.name}).scalar()
            else:
                held = self.connection.execute(text("SELECT 1")).scalar()
            self.connection.commit()
        except Exception as error:  # noqa: BLE001 - whatever broke the connection, the lock went with it
            raise LockLost(f"{self.name}: lock connection lost ({type(error).__name__}: {error})") from error
        if not held:
            raise LockLost(f"{self.name}: lock no longer held")


def lock_name(engine: Engine) -> str:
    """The lock's name on its server: per database (MySQL's lock names are server-wide), at most 64
    characters."""
    name = f"tdc-changelog-relay:{engine.url.database or ''}"
    return name if len(name) <= 64 else f"tdc-changelog-relay:{hashlib.sha1(name.encode()).hexdigest()}"


#: Relay locks on SQLite databases without a file (``:memory:``): one per process is enough.
_MEMORY_LOCKS: dict[str, threading.Lock] = {}


@contextmanager
def relay_lock(engine: Engine) -> Iterator[RelayLock | None]:
    """Hold the relay lock of ``engine``'s database for the block, or yield None at once when
    another relay holds it."""
    name = lock_name(engine)
    dialect = engine.dialect.name
    if dialect == "sqlite":
        with _file_lock(engine, name) as held:
            yield held
        return
    with engine.connect() as connection:
        if dialect in ("mysql", "mariadb"):
            got = connection.execute(text("SELECT GET_LOCK(:name, 0)"), {"name": name}).scalar()
            release = text("SELECT RELEASE_LOCK(:name)")
            parameters: dict[str, object] = {"name": name}
        else:
            key = int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big", signed=True)
            got = connection.execute(text("SELECT pg_try_advisory_lock(:key)"), {"key": key}).scalar()
            release = text("SELECT pg_advisory_unlock(:key)")
            parameters = {"key": key}
        connection.commit()
        if not got:
            yield None
            return
        try:
            yield RelayLock(name, connection)
        finally:
            try:
                connection.execute(release, parameters)
                connection.commit()
            except Exception:  # noqa: BLE001 - a lost connection released it already
                connection.invalidate()


@contextmanager
def _file_lock(engine: Engine, name: str) -> Iterator[RelayLock | None]:
    database = engine.url.database
    if not database or database == ":memory:":
        memory = _MEMORY_LOCKS.setdefault(name, threading.Lock())
        if not memory.acquire(blocking=False):
            yield None
            return
        try:
            yield RelayLock(name)
        finally:
            memory.release()
        return
    path = Path(f"{database}.changelog-relay.lock")
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield None
            return
        try:
            yield RelayLock(name)
        finally:
            fcntl.flock(descriptor, fcntl.LOCK_UN)
    finally:
        os.close(descriptor)
