"""Fixtures for real services: MariaDB (four shard databases), PostgreSQL (warehouse), Redis,
RabbitMQ.  A missing service skips locally and fails when CI is set."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit, urlunsplit

import pytest

MARIADB = os.environ.get("TDC_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306")
POSTGRES = os.environ.get("TDC_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432")
REDIS = os.environ.get("TDC_TEST_REDIS", "redis://127.0.0.1:6379/9")
RABBITMQ = os.environ.get("TDC_TEST_RABBITMQ", "amqp://guest:guest@127.0.0.1:5672//")
#: The reference flow's source database, and the per-test copies of it on the binlog server.
SOURCE_DATABASES = "gqsh,gqsh_src_*"
#: Shards in most integration tests: the layout is the same, init takes a second instead of a minute.
TEST_SHARDS = 64


def require(service: str, probe: Callable[[], object]) -> None:
    """Skip (locally) or fail (in CI) when ``service`` does not answer."""
    try:
        probe()
    except Exception as error:  # noqa: BLE001 - any failure to reach it means the same here
        message = f"{service} is not reachable: {error}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


def _mariadb_admin():  # type: ignore[no-untyped-def]
    from sqlalchemy import create_engine

    return create_engine(MARIADB + "/", isolation_level="AUTOCOMMIT")


def fresh_mariadb_databases(prefix: str, count: int = 4) -> list[str]:
    """``count`` empty MariaDB databases; returns their URLs."""
    from sqlalchemy import text

    engine = _mariadb_admin()
    names = [f"{prefix}{i}" for i in range(count)]
    with engine.connect() as connection:
        for name in names:
            connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
            connection.execute(text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    engine.dispose()
    return [f"{MARIADB}/{name}" for name in names]


def fresh_postgres_database(name: str) -> str:
    from sqlalchemy import create_engine, text

    engine = create_engine(POSTGRES + "/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as connection:
        connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    engine.dispose()
    return f"{POSTGRES}/{name}"


@pytest.fixture(scope="session")
def mariadb() -> None:
    def probe() -> None:
        from sqlalchemy import text

        with _mariadb_admin().connect() as connection:
            connection.execute(text("SELECT 1"))

    require("MariaDB", probe)


@pytest.fixture(scope="session")
def postgres() -> None:
    def probe() -> None:
        from sqlalchemy import create_engine, text

        with create_engine(POSTGRES + "/postgres").connect() as connection:
            connection.execute(text("SELECT 1"))

    require("PostgreSQL", probe)


@pytest.fixture(scope="session")
def redis_client():  # type: ignore[no-untyped-def]
    import redis

    client = redis.Redis.from_url(REDIS, decode_responses=True)
    require("Redis", client.ping)
    return client


@pytest.fixture(scope="session")
def rabbitmq() -> str:
    from kombu import Connection

    def probe() -> None:
        with Connection(RABBITMQ, connect_timeout=3) as connection:
            connection.ensure_connection(max_retries=1)

    require("RabbitMQ", probe)
    return RABBITMQ


def _rabbitmqctl(*arguments: str) -> None:
    result = subprocess.run(["rabbitmqctl", "-q", *arguments], capture_output=True, text=True, timeout=120)
    if result.returncode:
        raise RuntimeError(f"rabbitmqctl {' '.join(arguments)}: {result.stderr.strip() or result.stdout.strip()}")


@pytest.fixture
def rabbitmq_vhost(rabbitmq: str) -> Iterator[str]:
    """The amqp URL of a RabbitMQ virtual host of this test's own, deleted afterwards: tests
    running at once (here or in another checkout) never consume each other's messages, and
    nothing left by an earlier run is delivered.  Needs rabbitmqctl on the broker's machine."""
    vhost = f"tdc-e2e-{uuid.uuid4().hex[:10]}"
    require("rabbitmqctl (to add a virtual host)", lambda: _rabbitmqctl("add_vhost", vhost))
    try:
        _rabbitmqctl("set_permissions", "-p", vhost, urlsplit(rabbitmq).username or "guest", ".*", ".*", ".*")
        yield urlunsplit(urlsplit(rabbitmq)._replace(path=f"/{vhost}"))
    finally:
        _rabbitmqctl("delete_vhost", vhost)


@pytest.fixture(scope="session")
def service_env(mariadb, postgres, redis_client, rabbitmq) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """TDC_* settings for four fresh MariaDB shard databases, a PostgreSQL warehouse, Redis, RabbitMQ."""
    tag = uuid.uuid4().hex[:6]
    urls = fresh_mariadb_databases(f"tdc_it_{tag}_shard")
    dws = fresh_postgres_database(f"tdc_it_{tag}_dws")
    yield {
        "TDC_DB_URLS": ",".join(urls),
        "TDC_DWS_URL": dws,
        "TDC_REDIS_URL": REDIS,
        "TDC_BROKER_URL": rabbitmq,
        "TDC_SHARDS": str(TEST_SHARDS),
        "TDC_RETRY_BASE_SECONDS": "0.2",
        "TDC_HOME": f"/tmp/tdc-it-{tag}",
        "TDC_SOURCE_DATABASES": SOURCE_DATABASES,
    }
    from sqlalchemy import text

    engine = _mariadb_admin()
    with engine.connect() as connection:
        for i in range(4):
            connection.execute(text(f"DROP DATABASE IF EXISTS `tdc_it_{tag}_shard{i}`"))
    engine.dispose()


@pytest.fixture(scope="session")
def storage(service_env):  # type: ignore[no-untyped-def]
    """Initialised storage on the real MariaDB shards and PostgreSQL warehouse."""
    from models.schema import init_storage
    from models.storage import Storage
    from settings import load_settings

    store = Storage(load_settings(service_env))
    init_storage(store)
    yield store
    store.dispose()


@pytest.fixture
def fresh_storage(mariadb, postgres, redis_client):  # type: ignore[no-untyped-def]
    """A factory of initialised storage on four fresh MariaDB shard databases and a fresh
    warehouse on ``"postgresql"`` or ``"mariadb"``: for tests that compare whole tables."""
    from models.schema import init_storage
    from models.storage import Storage
    from settings import load_settings

    made: list[tuple[Storage, str]] = []

    def make(warehouse: str = "postgresql", driver: str = "pymysql", **settings: str) -> Storage:
        """``driver``: the shard databases' DB-API driver, PyMySQL or mysqlclient ("mysqldb")."""
        if driver != "pymysql":
            require("mysqlclient (pip install 'tdc[mysqlclient]')", lambda: __import__("MySQLdb"))
        tag = uuid.uuid4().hex[:6]
        urls = [url.replace("+pymysql://", f"+{driver}://", 1)
                for url in fresh_mariadb_databases(f"tdc_it_{tag}_shard")]
        if warehouse == "mariadb":
            dws = fresh_mariadb_databases(f"tdc_it_{tag}_dws", 1)[0]
        else:
            dws = fresh_postgres_database(f"tdc_it_{tag}_dws")
        store = Storage(load_settings({
            "TDC_DB_URLS": ",".join(urls), "TDC_DWS_URL": dws, "TDC_REDIS_URL": REDIS,
            "TDC_SHARDS": str(TEST_SHARDS), "TDC_RETRY_BASE_SECONDS": "0.2", "TDC_HOME": f"/tmp/tdc-it-{tag}",
            "TDC_SOURCE_DATABASES": SOURCE_DATABASES, **settings,
        }))
        init_storage(store)
        made.append((store, tag))
        return store

    yield make
    from sqlalchemy import create_engine, text

    engine = _mariadb_admin()
    for store, tag in made:
        store.dispose()
        with engine.connect() as connection:
            for name in [f"tdc_it_{tag}_shard{i}" for i in range(4)] + [f"tdc_it_{tag}_dws0"]:
                connection.execute(text(f"DROP DATABASE IF EXISTS `{name}`"))
        if store.settings.dws_url.startswith("postgresql"):
            pg = create_engine(POSTGRES + "/postgres", isolation_level="AUTOCOMMIT")
            with pg.connect() as connection:
                connection.execute(text(f'DROP DATABASE IF EXISTS "tdc_it_{tag}_dws" WITH (FORCE)'))
            pg.dispose()
    engine.dispose()


@pytest.fixture(scope="session")
def binlog_server():  # type: ignore[no-untyped-def]
    """A MariaDB server of the tests' own with ROW/FULL/FULL binlog, for the binlog tail."""
    from demo.binlog_server import BinlogServer

    server = BinlogServer()
    require("a throwaway MariaDB with binlog (mariadb-install-db, mariadbd)", server.start)
    yield server
    server.stop()


@pytest.fixture
def source_database(binlog_server):  # type: ignore[no-untyped-def]
    """A fresh source database on the binlog server with the reference order tables; its URL."""
    from sqlalchemy import create_engine

    from demo.source import source_metadata
    from flows.registry import ACCEPTED as ORDER_FLOW

    name = f"gqsh_src_{uuid.uuid4().hex[:8]}"
    with binlog_server.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
    url = f"{binlog_server.url}/{name}"
    engine = create_engine(url)
    source_metadata(ORDER_FLOW).create_all(engine)
    engine.dispose()
    return url


def env_of(storage) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """The TDC_* environment that gives a command-line process the same storage."""
    settings = storage.settings
    return {"TDC_DB_URLS": ",".join(settings.db_urls), "TDC_DWS_URL": settings.dws_url,
            "TDC_REDIS_URL": settings.redis_url, "TDC_SHARDS": str(settings.shards), "TDC_HOME": str(settings.home),
            "TDC_SOURCE_DATABASES": ",".join(settings.source_databases or ())}


def new_order_id(prefix: str = "T") -> str:
    return f"{prefix}{uuid.uuid4().hex[:16]}"


@pytest.fixture(scope="session")
def elasticsearch_url() -> Iterator[str]:
    """A real Elasticsearch when TDC_ES_URL is set (contract tests), else the tests' own
    Elasticsearch-compatible server (``tests.es_server``) on a free port."""
    real = os.environ.get("TDC_ES_URL")
    if real:
        yield real
        return
    from tests.es_server import TestServer

    server = TestServer().start()
    yield server.url
    server.stop()


@pytest.fixture
def order_index(elasticsearch_url):  # type: ignore[no-untyped-def]
    """An OrderIndex under an alias of its own (so a real server's other indices are untouched),
    deleted afterwards."""
    from search.elastic import OrderIndex, connect

    client = connect(elasticsearch_url)
    index = OrderIndex(client, alias=f"tdc-test-{uuid.uuid4().hex[:8]}")
    yield index
    client.options(ignore_status=404).indices.delete(index=f"{index.prefix}*")
    client.options(ignore_status=404).indices.delete_index_template(name=index.template)
    client.close()
