"""Statements on the sharded tables as driver SQL, built once per table and sent as is.

4096 task and 4096 metadata tables defeat SQLAlchemy's compiled-statement cache (500 entries):
each statement on the hot path was compiled again, which cost more than running it.  The text
here is made once per (table, paramstyle) and passed to ``exec_driver_sql``.  Table names come
from the shard map only; every value is a bound parameter.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
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
#: Bound parameters per UNION ALL statement at most (SQLite's default limit is 32,766), unless
#: one term alone holds more.
UNION_PARAMETERS = 8000


def union_all(connection: Connection, template: str, terms: list[tuple[dict[str, str], tuple[Any, ...]]]) -> list[Any]:
    """Run ``template`` once per term (its table names, its parameters), joined with UNION ALL in
    statements of at most UNION_CHUNK terms and UNION_PARAMETERS parameters: a batch read over
    many sharded tables in a few round trips.  The rows of every term, in no particular order."""
    return union_all_of(connection, [(template, names, parameters) for names, parameters in terms])


#: One select of a UNION ALL: its template, its table names, its parameters.
UnionTerm = tuple[str, dict[str, str], tuple[Any, ...]]


def union_all_of(connection: Connection, terms: list[UnionTerm]) -> list[Any]:
    """``union_all`` where each term brings its own template (selects of the same columns)."""
    rows: list[Any] = []
    for chunk in union_chunks(terms):
        sql = " UNION ALL ".join(statement(connection, template, **names) for template, names, _ in chunk)
        parameters = tuple(value for _, _, values in chunk for value in values)
        rows += connection.exec_driver_sql(sql, parameters).all()
    return rows


def union_chunks(terms: list[UnionTerm]) -> list[list[UnionTerm]]:
    """``terms`` in order, cut into statements of at most UNION_CHUNK terms and UNION_PARAMETERS
    parameters."""
    chunks: list[list[UnionTerm]] = [[]]
    held = 0
    for term in terms:
        size = len(term[2])
        if chunks[-1] and (len(chunks[-1]) >= UNION_CHUNK or held + size > UNION_PARAMETERS):
            chunks.append([])
            held = 0
        chunks[-1].append(term)
        held += size
    return [chunk for chunk in chunks if chunk]


#: MySQL protocol capability flags (the same numbers in PyMySQL and mysqlclient): row counts are
#: rows matched, not rows changed (SQLAlchemy's default, which compare-and-sets rely on), and one
#: round trip may carry several statements (mysqlclient turns that on by itself; PyMySQL does not).
CLIENT_FOUND_ROWS = 1 << 1
CLIENT_MULTI_STATEMENTS = 1 << 16
CLIENT_MULTI_RESULTS = 1 << 17
MYSQL_CLIENT_FLAGS = CLIENT_FOUND_ROWS | CLIENT_MULTI_STATEMENTS | CLIENT_MULTI_RESULTS

#: Set in a pooled connection's ``info`` by engines made with MYSQL_CLIENT_FLAGS.
MULTI_STATEMENTS = "tdc_multi_statements"

#: Statements per multi-statement round trip.
TOGETHER_CHUNK = 200
#: Bytes of statement text and values per round trip at most (about: a value's text counts, any
#: other value as a number's width), unless one statement alone is larger.  A round trip is one
#: packet, which the server refuses above ``max_allowed_packet`` (16 MB by default on MariaDB
#: 10.11, 4 MB on MySQL 5.7, 64 MB on 8.0): together, statements that each fit must still fit.
TOGETHER_BYTES = 2 * 1024 * 1024


def run_together(connection: Connection, writes: Sequence[tuple[str, tuple[Any, ...]]]) -> list[int]:
    """Run ``writes`` (driver SQL from ``statement``, each with its parameters) in this order in
    ``connection``'s transaction; the row count of each.

    On MySQL/MariaDB they go TOGETHER_CHUNK (and TOGETHER_BYTES) to a round trip as one
    multi-statement text (the driver escapes every value, as for one statement): a step's
    per-order compare-and-sets on hundreds of differently named task tables cost a few round
    trips instead of one each.  It is an ordinary ``exec_driver_sql`` (events, error wrapping,
    a lost connection invalidated); ``read_row_counts`` collects the count of each statement.
    The first statement that fails stops the rest.  Elsewhere (SQLite, PostgreSQL, an engine not
    made by ``make_engine``) one at a time."""
    counts: list[int] = []
    _run_into(connection, writes, counts)
    return counts


def _run_into(connection: Connection, writes: Sequence[tuple[str, tuple[Any, ...]]], counts: list[int]) -> None:
    """``run_together``, appending each statement's row count to ``counts`` as it completes (so
    when one fails, ``counts`` holds those before it)."""
    if not writes:
        return
    if not connection.connection.info.get(MULTI_STATEMENTS):
        for sql, parameters in writes:
            counts.append(connection.exec_driver_sql(sql, parameters).rowcount)
        return
    for chunk in together_chunks(writes):
        connection.exec_driver_sql(";\n".join(text for text, _ in chunk),
                                   tuple(value for _, values in chunk for value in values),
                                   execution_options={ROW_COUNTS: counts})


def together_chunks(writes: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Sequence[tuple[str, tuple[Any, ...]]]]:
    """``writes`` in order, cut into round trips of at most TOGETHER_CHUNK statements and
    TOGETHER_BYTES bytes (a statement larger than that goes alone, as it would by itself)."""
    chunks: list[Sequence[tuple[str, tuple[Any, ...]]]] = []
    start, held = 0, 0
    for end, (text, values) in enumerate(writes):
        size = len(text) + sum(len(v) if isinstance(v, str | bytes) else 24 for v in values)
        if end > start and (end - start >= TOGETHER_CHUNK or held + size > TOGETHER_BYTES):
            chunks.append(writes[start:end])
            start, held = end, 0
        held += size
    if start < len(writes):
        chunks.append(writes[start:])
    return chunks


def run_together_unless_present(connection: Connection, writes: Sequence[tuple[str, tuple[Any, ...]]],
                                ) -> list[int | None]:
    """``run_together`` for writes among which an INSERT may meet a unique key another writer
    stored first: that statement's count is None (on MySQL/MariaDB it failed alone, and the
    writes after it are sent again; elsewhere an INSERT is expected to say ``ON CONFLICT DO
    NOTHING`` and counts 0).  Any other error is raised."""
    counts: list[int | None] = []
    while len(counts) < len(writes):
        done: list[int] = []
        try:
            _run_into(connection, writes[len(counts):], done)
            counts += done
        except IntegrityError as error:
            if not is_duplicate_key(error):
                raise
            counts += [*done, None]
    return counts


#: Execution option: a list that ``read_row_counts`` appends each statement's row count to.
ROW_COUNTS = "tdc_row_counts"


def read_row_counts(cursor: Any, statement: str, parameters: Any, context: Any) -> bool:
    """A dialect ``do_execute`` hook for engines that allow multi-statements: for an execution
    with the ROW_COUNTS option, run it and read every statement's row count (the driver's cursor
    only reports the first, and drops the rest when it closes); True: executed here."""
    counts = context.execution_options.get(ROW_COUNTS)
    if counts is None:
        return False
    cursor.execute(statement, parameters)
    counts.append(cursor.rowcount)
    while cursor.nextset():
        counts.append(cursor.rowcount)
    return True
