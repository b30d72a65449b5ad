"""Writes that never need a savepoint: insert-if-absent and upserts per backend.

MariaDB rolls back the whole transaction when it picks a deadlock victim, so a savepoint
taken before an insert may be gone when we try to roll back to it (error 1305).  These
helpers keep every statement valid inside one plain transaction: a duplicate key is an
outcome, not an error to recover from.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from sqlalchemy import Connection, Table, insert
from sqlalchemy.dialects import mysql, postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.expression import TableClause

#: MySQL/MariaDB's "duplicate entry" error number.
DUPLICATE_ENTRY = 1062


#: PostgreSQL's unique_violation SQLSTATE.
UNIQUE_VIOLATION = "23505"


def is_duplicate_key(error: IntegrityError) -> bool:
    """True when ``error`` is a unique key that already exists (not a NULL, a foreign key or a
    check): MySQL/MariaDB error 1062, PostgreSQL 23505, SQLite's UNIQUE constraint."""
    original = error.orig
    if getattr(original, "args", (None,))[0] == DUPLICATE_ENTRY:
        return True
    if getattr(original, "sqlstate", None) == UNIQUE_VIOLATION:
        return True
    return "UNIQUE constraint failed" in str(original)


def dialect_insert(connection: Connection, table: Table | TableClause) -> Any:
    """An INSERT that knows its backend's upsert clause."""
    dialect = connection.dialect.name
    if dialect in ("mysql", "mariadb"):
        return mysql.insert(table)
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise NotImplementedError(f"tdc does not support {dialect} (PostgreSQL, MySQL/MariaDB, SQLite)")


def insert_if_absent(connection: Connection, table: Table | TableClause, values: Mapping[str, Any]) -> bool:
    """Insert one row unless its unique key exists; True when this call inserted it.

    On MySQL/MariaDB a duplicate-key error rolls back only the statement (the transaction goes
    on); PostgreSQL and SQLite skip the row with ON CONFLICT DO NOTHING.  ``INSERT IGNORE`` is
    not used: it would also turn truncation and bad values into warnings.
    """
    if connection.dialect.name in ("mysql", "mariadb"):
        try:
            connection.execute(insert(table).values(**values))
            return True
        except IntegrityError as error:
            if not is_duplicate_key(error):
                raise
            return False
    # RETURNING, not rowcount: psycopg 3 under SQLAlchemy 2.1 reports a rowcount of -1 for a
    # row ON CONFLICT DO NOTHING skipped, which read as "inserted" (and let a stale fence token
    # claim an order on PostgreSQL shard databases).
    statement = (dialect_insert(connection, table).values(**values).on_conflict_do_nothing()
                 .returning(table.c[next(iter(values))]))
    return connection.execute(statement).first() is not None


def upsert(connection: Connection, table: Table, keys: tuple[str, ...], rows: list[dict[str, Any]],
           on_conflict: Callable[[Any], dict[str, Any]]) -> None:
    """Insert ``rows``; where a key exists, set what ``on_conflict(inserted_values)`` gives."""
    statement = dialect_insert(connection, table)
    if connection.dialect.name in ("mysql", "mariadb"):
        statement = statement.on_duplicate_key_update(on_conflict(statement.inserted))
    else:
        statement = statement.on_conflict_do_update(index_elements=list(keys), set_=on_conflict(statement.excluded))
    connection.execute(statement, rows)
