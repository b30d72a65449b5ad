"""Engines for the four shard databases and the warehouse, one set per process.

Engines are made lazily and remade after a fork, so Celery's prefork children never
share a parent's connections.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import pymysql
from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url

from models.digests import register_sqlite
from models.driver_sql import MULTI_STATEMENTS, MYSQL_CLIENT_FLAGS, read_row_counts
from models.shards import database_for, database_for_shard, shard_for
from settings import SHARD_DATABASES, Settings, get_settings

T = TypeVar("T")

#: SQLite writers wait this long for the file lock before giving up.
SQLITE_BUSY_SECONDS = 60


class SharedTlsConnection(pymysql.connections.Connection):
    """PyMySQL's connection, except in its default TLS mode (no TLS option given: TLS when the
    server offers it, without checking its certificate), where every connection of the process
    shares one context instead of building its own.  PyMySQL's builds load the system's CA
    bundle for a check it then turns off, about 55 ms of CPU per connection (a worker's first
    step opens one per shard database).  Options given in the URL build their own as before."""

    _preferred: ssl.SSLContext | None = None

    def _create_ssl_ctx(self, sslp: Any) -> ssl.SSLContext:
        if sslp != {}:
            return super()._create_ssl_ctx(sslp)  # type: ignore[no-any-return]
        # No lock (one held across a fork would hang the child): two threads racing at first
        # use build one each, and the last one stays.
        if SharedTlsConnection._preferred is None:
            SharedTlsConnection._preferred = super()._create_ssl_ctx({})
        return SharedTlsConnection._preferred


def _shared_tls(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> pymysql.connections.Connection:
    return SharedTlsConnection(*cargs, **cparams)


def make_engine(url: str, reading: bool = False) -> Engine:
    """An engine tuned for its backend (SQLite WAL with immediate transactions, MySQL READ COMMITTED).

    ``reading``: on SQLite, an engine whose statements never take the write lock (each runs on
    its own in WAL mode); on other backends the same kind of engine as for writing.
    """
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database:
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_SECONDS})
        _serialise_sqlite_writers(engine, immediate=not reading)
        return engine
    if backend in ("mysql", "mariadb"):
        # READ COMMITTED: idempotent upserts from many workers must not deadlock on gap locks.
        engine = create_engine(
            url,
            isolation_level="READ COMMITTED",
            pool_pre_ping=True,
            pool_recycle=3600,
            # Several statements per round trip for the chain's per-order compare-and-sets
            # (models.driver_sql.run_together); every value is still escaped by the driver.
            connect_args={"charset": "utf8mb4", "client_flag": MYSQL_CLIENT_FLAGS},
        )

        @event.listens_for(engine, "connect")
        def _multi_statements(_dbapi_connection, record):  # type: ignore[no-untyped-def]
            record.info[MULTI_STATEMENTS] = True

        event.listen(engine, "do_execute", read_row_counts)
        if parsed.get_driver_name() == "pymysql":
            event.listen(engine, "do_connect", _shared_tls)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _serialise_sqlite_writers(engine: Engine, immediate: bool) -> None:
    # pysqlite's deferred BEGIN lets two processes both read and then fail to upgrade to a write
    # lock (SQLITE_BUSY without waiting); BEGIN IMMEDIATE takes the lock up front and waits for it.
    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection, _record):  # type: ignore[no-untyped-def]
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_SECONDS * 1000}")
        cursor.close()
        register_sqlite(dbapi_connection)

    if immediate:
        @event.listens_for(engine, "begin")
        def _begin(connection: Connection) -> None:
            connection.exec_driver_sql("BEGIN IMMEDIATE")


class Storage:
    """Where every table lives: shard databases by index or order, and the warehouse."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._engines: dict[tuple[str, bool], Engine] = {}

    def _engine(self, url: str, reading: bool = False) -> Engine:
        if not reading or not url.startswith("sqlite"):
            reading = False  # one pool serves both elsewhere
        if (url, reading) not in self._engines:
            self._engines[(url, reading)] = make_engine(url, reading)
        return self._engines[(url, reading)]

    def shard_engine(self, database: int) -> Engine:
        return self._engine(self.settings.db_urls[database])

    def read_engine(self, database: int) -> Engine:
        """For reads that need no transaction of their own (listings, rescans, progress)."""
        return self._engine(self.settings.db_urls[database], reading=True)

    def read_engine_for_order(self, order_id: str) -> Engine:
        return self.read_engine(self.database_of(order_id))

    def database_of(self, order_id: str) -> int:
        return database_for(order_id, self.settings.shards)

    def shard_of(self, order_id: str) -> int:
        return shard_for(order_id, self.settings.shards)

    def orders_by_database(self, order_ids: Iterable[str]) -> dict[int, dict[str, int]]:
        """``order_ids`` grouped by the database that holds them: database -> {order: its shard},
        each group in order-id order, each order once."""
        groups: dict[int, dict[str, int]] = {}
        for order_id in sorted(set(order_ids)):
            groups.setdefault(self.database_of(order_id), {})[order_id] = self.shard_of(order_id)
        return groups

    def engine_for_order(self, order_id: str) -> Engine:
        return self.shard_engine(self.database_of(order_id))

    def engine_for_shard(self, shard: int) -> Engine:
        return self.shard_engine(database_for_shard(shard, self.settings.shards))

    def distinct_databases(self) -> list[int]:
        """One database index per distinct URL (a single URL serves all four groups)."""
        seen: dict[str, int] = {}
        for index in range(SHARD_DATABASES):
            seen.setdefault(self.settings.db_urls[index], index)
        return list(seen.values())

    def each_database(self, work: Callable[[int], T]) -> list[T]:
        """``work(database)`` for each distinct database, all at once (threads: the time goes
        into the databases), in ``distinct_databases`` order."""
        databases = self.distinct_databases()
        with ThreadPoolExecutor(max_workers=len(databases)) as pool:
            return list(pool.map(work, databases))

    def each_part(self, work: Callable[[int], T], databases: Iterable[int]) -> list[T]:
        """``work(database)`` for each of ``databases`` (shard database indexes), in that order:
        at once, on threads, when each is a database of its own, one after the other when some
        share one (a SQLite file takes one writer at a time, and one server database gains
        nothing).  Each call must use its own connections and transactions."""
        databases = list(databases)
        if len(databases) < 2 or len({self.settings.db_urls[d] for d in databases}) < len(databases):
            return [work(database) for database in databases]
        with ThreadPoolExecutor(max_workers=len(databases)) as pool:
            return list(pool.map(work, databases))

    @property
    def dws_engine(self) -> Engine:
        return self._engine(self.settings.dws_url)

    @contextmanager
    def order_transaction(self, order_id: str) -> Iterator[Connection]:
        """One transaction on the database holding ``order_id``."""
        with self.engine_for_order(order_id).begin() as connection:
            yield connection

    def dispose(self) -> None:
        for engine in self._engines.values():
            engine.dispose()
        self._engines.clear()


_process_storage: tuple[int, Storage] | None = None


def get_storage() -> Storage:
    """The storage of this process (remade in a forked child)."""
    global _process_storage
    if _process_storage is None or _process_storage[0] != os.getpid():
        _process_storage = (os.getpid(), Storage(get_settings()))
    return _process_storage[1]
