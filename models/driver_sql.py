"""Statements on the sharded tables as driver SQL, built once per table and sent as is.

4096 task and 4096 metadata tables defeat SQLAlchemy's compiled-statement cache (500 entries):
each statement on the hot path was compiled again, which cost more than running it.  The text
here is made once per (table, paramstyle) and passed to ``exec_driver_sql``.  Table names come
from the shard map only; every value is a bound parameter.
"""

from __future__ import annotations

import datetime as dt
from functools import lru_cache
from typing import Any

from sqlalchemy import Connection
from sqlalchemy.exc import IntegrityError

from models.writes import is_duplicate_key

#: The driver's placeholder per DB-API paramstyle.
PLACEHOLDER = {"qmark": "?", "format": "%s", "pyformat": "%s"}


def marks(connection: Connection, count: int) -> str:
    """``count`` placeholders, comma-separated, in the connection's paramstyle."""
    return ", ".join([PLACEHOLDER[connection.dialect.paramstyle]] * count)


def driver_time(connection: Connection, moment: dt.datetime) -> Any:
    """``moment`` as the driver takes it for a Timestamp column (SQLite stores text)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if connection.dialect.name == "sqlite" else moment


def statement(connection: Connection, template: str, **names: str) -> str:
    """``template`` with ``{table}``-style names filled in and ``?`` placeholders in the
    connection's paramstyle.  Only the placeholder conversion is cached (per template): a cache
    per table name would hold tens of thousands of strings per process for a format call."""
    return _converted(template, connection.dialect.paramstyle).format(**names)


@lru_cache(maxsize=1024)
def _converted(template: str, paramstyle: str) -> str:
    return template.replace("?", PLACEHOLDER[paramstyle]) if paramstyle != "qmark" else template


def insert_if_absent(connection: Connection, table: str, values: dict[str, Any]) -> bool:
    """``models.writes.insert_if_absent`` as driver SQL: insert one row into ``table`` (a name from
    the shard map) unless its unique key exists; True when this call inserted it."""
    columns = tuple(values)
    sql = _insert_sql(table, columns, connection.dialect.name, connection.dialect.paramstyle)
    parameters = tuple(values.values())
    if connection.dialect.name in ("mysql", "mariadb"):
        try:
            connection.exec_driver_sql(sql, parameters)
            return True
        except IntegrityError as error:
            if not is_duplicate_key(error):
                raise
            return False
    return bool(connection.exec_driver_sql(sql, parameters).rowcount)


@lru_cache(maxsize=65536)
def _insert_sql(table: str, columns: tuple[str, ...], dialect: str, paramstyle: str) -> str:
    mark = PLACEHOLDER[paramstyle]
    sql = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join([mark] * len(columns))})"
    return sql if dialect in ("mysql", "mariadb") else sql + " ON CONFLICT DO NOTHING"


#: Selects per UNION ALL statement of a batch read (SQLite allows 500 terms).
UNION_CHUNK = 200


def union_all(connection: Connection, template: str, terms: list[tuple[dict[str, str], tuple[Any, ...]]]) -> list[Any]:
    """Run ``template`` once per term (its table names, its parameters), joined with UNION ALL in
    statements of at most UNION_CHUNK terms: a batch read over many sharded tables in a few round
    trips.  The rows of every term, in no particular order."""
    rows: list[Any] = []
    for start in range(0, len(terms), UNION_CHUNK):
        chunk = terms[start:start + UNION_CHUNK]
        sql = " UNION ALL ".join(statement(connection, template, **names) for names, _ in chunk)
        rows += connection.exec_driver_sql(sql, tuple(value for _, parameters in chunk for value in parameters)).all()
    return rows
