"""``tdc init``: create every table, idempotently, reporting progress.

The sharded tables are created from DDL compiled once per backend and renamed per shard
(names come from the shard map only): compiling a CreateTable per shard took 8 ms a table on
MariaDB, the renamed template about half that.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from sqlalchemy import Engine, MetaData, UniqueConstraint, inspect
from sqlalchemy.schema import CreateIndex, CreateTable

import models.cdc  # noqa: F401 - declares the CDC tables on ShardBase
import models.changelog  # noqa: F401 - declares the changelog outbox (shards) and first consumption (warehouse)
import models.reconcile  # noqa: F401 - declares the reconciliation tables on WarehouseBase
import models.wide  # noqa: F401 - declares the running flows' wide tables on ShardBase
from models.driver_sql import marks
from models.orders import ShardBase
from models.sharded import build_meta_table, build_task_table
from models.shards import meta_table_name, shards_of_database, task_table_name
from models.storage import Storage
from models.warehouse import WarehouseBase

Progress = Callable[[str], None]


@dataclass
class InitReport:
    created: int = 0
    existing: int = 0


def _ddl_template(engine: Engine, build: Callable[[int, MetaData], object], shard: int) -> list[str]:
    table = build(shard, MetaData())
    statements = [str(CreateTable(table).compile(engine))]  # type: ignore[arg-type]
    statements += [str(CreateIndex(index).compile(engine)) for index in table.indexes]  # type: ignore[attr-defined]
    return statements


def _create_sharded(engine: Engine, shards: range, existing: set[str], progress: Progress) -> InitReport:
    report = InitReport()
    templates = [
        (task_table_name, _ddl_template(engine, build_task_table, 0), task_table_name(0)),
        (meta_table_name, _ddl_template(engine, build_meta_table, 0), meta_table_name(0)),
    ]
    # Commit every 128 tables so a long init shows progress and an interrupted one keeps its work.
    step = 128
    for start in range(shards.start, shards.stop, step):
        with engine.begin() as connection:
            for shard in range(start, min(start + step, shards.stop)):
                for name_of, statements, template_name in templates:
                    name = name_of(shard)
                    if name in existing:
                        report.existing += 1
                        continue
                    for statement in statements:
                        connection.exec_driver_sql(statement.replace(template_name, name))
                    report.created += 1
        where = engine.url.render_as_string(hide_password=True)
        progress(f"  {where}: shards up to {min(start + step, shards.stop) - 1}")
    return report


def upgrade_tables(engine: Engine, metadata: MetaData) -> list[str]:
    """Bring tables an older tdc created up to what this one declares: add missing columns (as
    NULL-able: rows kept before read as "unknown") and missing unique constraints.  Returns what
    was done.  Fixed tables only; the sharded tables have not changed shape."""
    quote = engine.dialect.identifier_preparer.quote
    done: list[str] = []
    with engine.begin() as connection:
        inspector = inspect(connection)  # on the transaction's connection: SQLite has one writer
        for table in metadata.sorted_tables:
            if not inspector.has_table(table.name):
                continue
            have = {column["name"] for column in inspector.get_columns(table.name)}
            for column in table.columns:
                if column.name not in have:
                    kind = column.type.compile(dialect=engine.dialect)
                    connection.exec_driver_sql(
                        f"ALTER TABLE {quote(table.name)} ADD COLUMN {quote(column.name)} {kind}")
                    done.append(f"{table.name}.{column.name} added")
            named = {u["name"] for u in inspector.get_unique_constraints(table.name)}
            named |= {i["name"] for i in inspector.get_indexes(table.name)}
            for constraint in table.constraints:
                if isinstance(constraint, UniqueConstraint) and constraint.name and constraint.name not in named:
                    columns = ", ".join(quote(c.name) for c in constraint.columns)
                    if "id" in table.columns:
                        # Rows an older tdc kept twice (replays) would refuse the constraint: keep the first.
                        present = " AND ".join(f"{quote(c.name)} IS NOT NULL" for c in constraint.columns)
                        removed = connection.exec_driver_sql(
                            f"DELETE FROM {quote(table.name)} WHERE {present} AND id NOT IN (SELECT keep FROM "
                            f"(SELECT MIN(id) AS keep FROM {quote(table.name)} WHERE {present} "
                            f"GROUP BY {columns}) AS keepers)").rowcount
                        if removed:
                            done.append(f"{table.name}: {removed} repeated rows removed")
                    connection.exec_driver_sql(
                        f"CREATE UNIQUE INDEX {quote(str(constraint.name))} ON {quote(table.name)} ({columns})")
                    done.append(f"{table.name}: unique {constraint.name} added")
            for index in table.indexes:
                if index.name and index.name not in named:
                    index.create(connection)
                    done.append(f"{table.name}: index {index.name} added")
    return done


def keep_statistics_in_memory(engine: Engine, shards: range) -> list[str]:
    """On MySQL/MariaDB, switch the sharded tables of ``shards`` that an older tdc created with
    persistent InnoDB statistics to statistics kept in memory (``SHARD_TABLE_OPTIONS``: a
    metadata-only change); the names switched.  Elsewhere nothing to do."""
    if engine.dialect.name not in ("mysql", "mariadb"):
        return []
    wanted = {name_of(shard) for shard in shards for name_of in (task_table_name, meta_table_name)}
    with engine.begin() as connection:
        persistent = sorted(name for name, options in connection.exec_driver_sql(
            "SELECT table_name, create_options FROM information_schema.tables WHERE table_schema = DATABASE()")
            if name in wanted and "stats_persistent=0" not in str(options or "").lower())
        for name in persistent:  # a name from the shard map (checked against it above)
            connection.exec_driver_sql(f"ALTER TABLE {name} STATS_PERSISTENT=0")
    return persistent


def init_storage(storage: Storage, progress: Progress = lambda _: None) -> InitReport:
    """Create the shard tables in every shard database and the ADS tables in the warehouse.

    Safe to run again: only what is missing is created.
    """
    shards = storage.settings.shards
    by_url: dict[str, list[int]] = {}
    for database in range(len(storage.settings.db_urls)):
        by_url.setdefault(storage.settings.db_urls[database], []).append(database)

    def one_database(databases: list[int]) -> InitReport:
        engine = storage.shard_engine(databases[0])
        for change in upgrade_tables(engine, ShardBase.metadata):
            progress(f"  {engine.url.render_as_string(hide_password=True)}: {change}")
        ShardBase.metadata.create_all(engine)
        existing = set(inspect(engine).get_table_names())
        total = InitReport()
        for database in databases:
            part = _create_sharded(engine, shards_of_database(database, shards), existing, progress)
            total.created += part.created
            total.existing += part.existing
            switched = keep_statistics_in_memory(engine, shards_of_database(database, shards))
            if switched:
                progress(f"  {engine.url.render_as_string(hide_password=True)}: {len(switched)} sharded tables now "
                         f"keep InnoDB statistics in memory (STATS_PERSISTENT=0)")
        return total

    for change in upgrade_tables(storage.dws_engine, WarehouseBase.metadata):
        progress(f"  warehouse: {change}")
    WarehouseBase.metadata.create_all(storage.dws_engine)
    # Databases on separate servers (or files) are created in parallel.
    with ThreadPoolExecutor(max_workers=len(by_url)) as pool:
        reports = list(pool.map(one_database, by_url.values()))
    return InitReport(
        created=sum(r.created for r in reports), existing=sum(r.existing for r in reports)
    )


#: Server caches that must hold every table tdc keeps on one MySQL/MariaDB server, or each
#: statement on a table that fell out of them reopens its definition (measured: intake ran at a
#: third of its rate with MariaDB's default table_definition_cache of 400 and 8192 tables).
TABLE_CACHES = ("table_definition_cache", "table_open_cache")


def sizing_advice(storage: Storage) -> list[str]:
    """What to raise on each MySQL/MariaDB server whose table caches, InnoDB file handles or
    buffer pool are smaller than the tables tdc keeps there (in all its shard databases on that
    server); empty when every server is sized."""
    servers: dict[tuple[str | None, int | None], tuple[Engine, set[str]]] = {}
    for database in range(len(storage.settings.db_urls)):
        engine = storage.shard_engine(database)
        if engine.dialect.name in ("mysql", "mariadb") and engine.url.database:
            _, schemas = servers.setdefault((engine.url.host, engine.url.port), (engine, set()))
            schemas.add(engine.url.database)
    advice = []
    for engine, schemas in servers.values():
        names = sorted(schemas)
        with engine.connect() as connection:
            tables, size = connection.exec_driver_sql(
                "SELECT COUNT(*), COALESCE(SUM(data_length + index_length), 0) FROM information_schema.tables "
                f"WHERE table_schema IN ({marks(connection, len(names))})", tuple(names)).one()
            values: dict[str, str] = {str(name): str(value) for name, value in connection.exec_driver_sql(
                "SHOW GLOBAL VARIABLES WHERE Variable_name IN ('table_definition_cache', 'table_open_cache', "
                "'innodb_open_files', 'innodb_buffer_pool_size')")}
        where = engine.url.render_as_string(hide_password=True).rsplit("/", 1)[0]
        advice += [f"{where}: {text}" for text in server_advice(int(tables), int(size), values)]
    return advice


#: Buffer pool per tdc table at least: an InnoDB table's clustered index and its secondary
#: indexes each take a 16 KiB page even empty, and a statement reads the root of each it uses.
POOL_PER_TABLE = 3 * 16 * 1024


def server_advice(tables: int, size: int, values: Mapping[str, str]) -> list[str]:
    """What to raise on one server holding ``tables`` of tdc's tables, ``size`` bytes of data and
    indexes, with these global variables."""
    def value(name: str) -> int:
        return int(values.get(name) or 0)

    advice = []
    small = [f"{name}={values.get(name)}" for name in TABLE_CACHES if value(name) < tables]
    if small:
        advice.append(f"{', '.join(small)} holds fewer than tdc's {tables} tables there; set both to at least "
                      f"{tables + 512} ([mysqld] section, or SET GLOBAL), or every statement on a table that fell out "
                      f"of the cache reopens it")
    if "innodb_open_files" in values and value("innodb_open_files") < tables:
        advice.append(f"innodb_open_files={values['innodb_open_files']} is fewer than tdc's {tables} tables there; "
                      f"set it to at least {tables + 512} ([mysqld] section, then restart: it is not dynamic), or "
                      f"InnoDB closes and reopens table files as statements move between tables")
    pool, needed = value("innodb_buffer_pool_size"), max(size, tables * POOL_PER_TABLE)
    if "innodb_buffer_pool_size" in values and pool < needed:
        advice.append(f"innodb_buffer_pool_size={pool // 2**20}M holds less than tdc's tables there "
                      f"({needed // 2**20}M of data and indexes now, more as they grow); set it to at least "
                      f"{-(-needed * 2 // 2**30)}G (SET GLOBAL works), or statements read evicted pages from disk")
    return advice
