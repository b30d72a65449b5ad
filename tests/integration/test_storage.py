"""``tdc init`` on real servers: 4096 shards over four MariaDB databases, ADS tables in PostgreSQL."""

import ssl
import subprocess
import sys

import pytest
from sqlalchemy import create_engine, inspect, text

from tests.conftest import fresh_mariadb_databases, fresh_postgres_database

pytestmark = pytest.mark.integration


def _tables(url: str) -> list[str]:
    engine = create_engine(url)
    try:
        return inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_init_twice_leaves_exactly_1024_task_tables_in_each_of_four_databases(mariadb, postgres, tmp_path) -> None:
    # Given four empty MariaDB databases and a PostgreSQL warehouse
    urls = fresh_mariadb_databases("tdc_it_init_shard")
    dws = fresh_postgres_database("tdc_it_init_dws")
    env = {"TDC_DB_URLS": ",".join(urls), "TDC_DWS_URL": dws, "TDC_HOME": str(tmp_path),
           "TDC_REDIS_URL": "redis://127.0.0.1:6379/9", "PATH": "/usr/bin:/bin"}
    # When tdc init runs twice, as a user would run it
    first = subprocess.run([sys.executable, "-m", "cli.main", "init"], env=env, capture_output=True, text=True)
    second = subprocess.run([sys.executable, "-m", "cli.main", "init"], env=env, capture_output=True, text=True)
    # Then the second run found everything and created nothing
    assert first.returncode == 0, first.stderr
    assert "8192 sharded tables created" in first.stdout
    assert second.returncode == 0, second.stderr
    assert "0 sharded tables created, 8192 already there" in second.stdout
    # And each database holds exactly its quarter of the task and metadata tables
    for database, url in enumerate(urls):
        tables = _tables(url)
        tasks = sorted(t for t in tables if t.startswith("task_"))
        assert len(tasks) == 1024
        assert tasks[0] == f"task_{database * 1024:04d}" and tasks[-1] == f"task_{database * 1024 + 1023:04d}"
        assert len([t for t in tables if t.startswith("meta_")]) == 1024
        assert {"dwd_order", "dwd_order_item", "dwd_order_snapshot", "failed_task", "quarantine"} <= set(tables)
        # and every sharded table keeps its InnoDB statistics in memory
        assert _persistent_statistics(url) == []
    assert {"ads_order_sales", "ads_order_item_sales", "ads_order_sales_sum"} <= set(_tables(dws))


def _persistent_statistics(url: str) -> list[str]:
    """The sharded tables in ``url``'s database that keep persistent InnoDB statistics."""
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return sorted(name for name, options in connection.execute(text(
                "SELECT table_name, create_options FROM information_schema.tables WHERE table_schema = DATABASE()"))
                if name.startswith(("task_", "meta_")) and "stats_persistent=0" not in (options or "").lower())
    finally:
        engine.dispose()


def test_init_moves_sharded_tables_of_an_older_tdc_to_statistics_in_memory(mariadb) -> None:
    # Given a shard database whose first tables an older tdc made with persistent statistics
    from sqlalchemy import MetaData
    from sqlalchemy.schema import CreateTable

    from models.schema import keep_statistics_in_memory
    from models.sharded import build_meta_table, build_task_table

    url = fresh_mariadb_databases("tdc_it_stats", 1)[0]
    engine = create_engine(url)
    with engine.begin() as connection:
        for shard in (0, 1):
            for build in (build_task_table, build_meta_table):
                connection.execute(CreateTable(build(shard, MetaData())))
        connection.execute(text("ALTER TABLE task_0001 STATS_PERSISTENT=DEFAULT"))
        connection.execute(text("ALTER TABLE meta_0000 STATS_PERSISTENT=1"))
        connection.execute(text("CREATE TABLE task_9999_other (id INTEGER PRIMARY KEY)"))  # not tdc's
    assert _persistent_statistics(url) == ["meta_0000", "task_0001", "task_9999_other"]
    # When tdc init switches them (twice)
    first = keep_statistics_in_memory(engine, range(0, 1024))
    second = keep_statistics_in_memory(engine, range(0, 1024))
    # Then exactly the shard map's tables that kept persistent statistics were switched, once
    assert first == ["meta_0000", "task_0001"] and second == []
    assert _persistent_statistics(url) == ["task_9999_other"]
    engine.dispose()


def test_task_table_has_the_due_index_rescans_rely_on(storage) -> None:
    engine = storage.shard_engine(0)
    with engine.connect() as connection:
        indexes = connection.execute(text("SHOW INDEX FROM task_0000")).fetchall()
    columns = [(row.Key_name, row.Column_name) for row in indexes]
    assert ("ix_task_0000_due", "status") in columns and ("ix_task_0000_due", "next_run_at") in columns
    assert ("uq_task_0000", "order_id") in columns


@pytest.mark.parametrize("backend", ["mariadb", "sqlite"])
def test_init_brings_tables_of_an_older_tdc_up_to_date(mariadb, tmp_path, backend: str) -> None:
    # Given a shard database made by an older tdc: quarantine without raw_hash, schema_change
    # without its unique key and holding a DDL kept twice by a replay, a ledger without fence
    from models.cdc import SchemaChangeRecord
    from models.orders import ShardBase
    from models.schema import upgrade_tables

    url = fresh_mariadb_databases("tdc_it_upgrade", 1)[0] if backend == "mariadb" else f"sqlite:///{tmp_path}/old.db"
    engine = create_engine(url)
    with engine.begin() as connection:
        connection.execute(text("CREATE TABLE quarantine (id INTEGER PRIMARY KEY, received_at DATETIME, "
                                "input_format VARCHAR(16), order_id VARCHAR(64), reason VARCHAR(512), raw TEXT)"))
        connection.execute(text("CREATE TABLE schema_change (id INTEGER PRIMARY KEY, received_at DATETIME, "
                                "input_format VARCHAR(16), source_database VARCHAR(128), source_table VARCHAR(128), "
                                "position VARCHAR(64), `sql` TEXT)".replace("`", '"' if backend == "sqlite" else "`")))
        connection.execute(text("INSERT INTO quarantine (id, reason, raw) VALUES (1, 'bad', 'x'), (2, 'bad', 'x')"))
        # wide rows from before the stored source digest and the index on the lines' day
        connection.execute(text("CREATE TABLE dwd_order (order_id VARCHAR(64) PRIMARY KEY, version INTEGER)"))
        connection.execute(text("CREATE TABLE dwd_order_item (item_id BIGINT PRIMARY KEY, order_id VARCHAR(64), "
                                "biz_date DATE)"))
        for row_id in (1, 2, 3):
            connection.execute(SchemaChangeRecord.__table__.insert().values(
                id=row_id, input_format="canal", source_database="gqsh", source_table="gqsh_order",
                position="p1" if row_id < 3 else "p2", sql="ALTER ..."))
    # When tdc init upgrades it (twice)
    first = upgrade_tables(engine, ShardBase.metadata)
    second = upgrade_tables(engine, ShardBase.metadata)
    # Then the new column and unique keys are there, the replayed DDL is kept once, and old
    # quarantine rows (no hash) are all kept; the second run has nothing to do
    assert "quarantine.raw_hash added" in first and "schema_change: 1 repeated rows removed" in first
    assert "dwd_order.source_digest added" in first
    assert {"dwd_order_item: index ix_dwd_order_item_biz_date added",
            "dwd_order_item: index ix_dwd_order_item_order_id added"} <= set(first)
    assert second == []
    with engine.connect() as connection:
        assert connection.execute(text("SELECT id FROM schema_change ORDER BY id")).scalars().all() == [1, 3]
        assert connection.execute(text("SELECT COUNT(*) FROM quarantine")).scalar() == 2
    uniques = {u["name"] for u in inspect(engine).get_unique_constraints("schema_change")}
    uniques |= {i["name"] for i in inspect(engine).get_indexes("schema_change") if i["unique"]}
    assert "uq_schema_change_at" in uniques
    assert "ix_dwd_order_item_biz_date" in {i["name"] for i in inspect(engine).get_indexes("dwd_order_item")}
    engine.dispose()


def test_init_warns_when_the_server_table_caches_cannot_hold_tdcs_tables(storage, mariadb) -> None:
    from sqlalchemy import create_engine

    from models.schema import sizing_advice
    from tests.conftest import MARIADB

    admin = create_engine(MARIADB + "/", isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        # (the test storage has 64 shards: about 150 tables, under MariaDB's smallest definition cache)
        saved = connection.exec_driver_sql("SELECT @@GLOBAL.table_open_cache").scalar_one()
        try:
            connection.exec_driver_sql("SET GLOBAL table_open_cache = 20")
            [advice] = sizing_advice(storage)
            assert "table_open_cache=20 holds fewer than tdc's" in advice and "set both to at least" in advice
            connection.exec_driver_sql("SET GLOBAL table_open_cache = 20000")
            assert all("table_open_cache" not in advice for advice in sizing_advice(storage))
        finally:
            connection.exec_driver_sql(f"SET GLOBAL table_open_cache = {int(saved)}")
    admin.dispose()


def test_init_warns_when_innodb_cannot_hold_tdcs_tables() -> None:
    from models.schema import POOL_PER_TABLE, server_advice

    sized = {"table_definition_cache": "9000", "table_open_cache": "9000", "innodb_open_files": "9000",
             "innodb_buffer_pool_size": str(2 * 2**30)}
    # 8,280 tables, empty: each takes its pages' worth of the buffer pool, which 2G holds
    assert server_advice(8280, 8280 * 32 * 1024, sized) == []
    # MariaDB's defaults (innodb_open_files 2000, a 128M buffer pool) do not
    defaults = {**sized, "innodb_open_files": "2000", "innodb_buffer_pool_size": str(128 * 2**20)}
    files, pool = server_advice(8280, 8280 * 32 * 1024, defaults)
    assert "innodb_open_files=2000 is fewer than tdc's 8280 tables" in files and "restart" in files
    assert f"innodb_buffer_pool_size=128M holds less than tdc's tables there ({8280 * POOL_PER_TABLE // 2**20}M" in pool
    assert "set it to at least 1G" in pool
    # Tables grown past the pool: the advice follows their size
    [grown] = server_advice(8280, 5 * 2**30, sized)
    assert "(5120M of data and indexes now" in grown and "at least 10G" in grown


def test_connections_share_one_tls_context_unless_the_url_asks_for_tls_options(mariadb) -> None:
    # Given two engines on MariaDB, as two shard databases of one worker process have
    from models.storage import make_engine

    url = fresh_mariadb_databases("tdc_it_tls")[0]
    engines = [make_engine(url), make_engine(url)]
    try:
        # When each opens a connection (with no TLS option: PyMySQL's default, TLS if offered)
        with engines[0].connect() as first, engines[1].connect() as second:
            contexts = [c.connection.dbapi_connection.ctx for c in (first, second)]  # type: ignore[union-attr]
            assert first.execute(text("SELECT 1")).scalar() == 1
        # Then they share one context, as PyMySQL itself would have built it (no certificate check)
        assert contexts[0] is contexts[1]
        assert contexts[0].verify_mode == ssl.CERT_NONE and not contexts[0].check_hostname
        # And a URL that turns TLS off still turns it off
        plain = make_engine(url + "?ssl_disabled=true")
        try:
            with plain.connect() as connection:
                assert connection.connection.dbapi_connection.ssl is False  # type: ignore[union-attr]
        finally:
            plain.dispose()
    finally:
        for engine in engines:
            engine.dispose()


def test_a_tls_option_in_the_url_builds_its_own_context(tmp_path) -> None:
    # (No server needed: the context is built before the connection is attempted.)
    from models.storage import SharedTlsConnection

    shared = SharedTlsConnection._create_ssl_ctx(SharedTlsConnection.__new__(SharedTlsConnection), {})
    own = SharedTlsConnection._create_ssl_ctx(SharedTlsConnection.__new__(SharedTlsConnection),
                                              {"ca": None, "check_hostname": False, "verify_mode": True})
    assert own is not shared and own.verify_mode == ssl.CERT_REQUIRED
