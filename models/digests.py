"""Row digests that the database and Python compute alike, for comparing rows in bulk.

A row's digest is the first 32 bits of the MD5 of its canonical text: the chosen columns, each
written the same way on every backend, joined with ``|``.  The database sums digests per
bucket (``GROUP BY``), so two sides are compared by a few numbers per bucket, and rows are read
only where the numbers differ.  ``row_digest`` is the Python twin of ``sql_row_digest``.

Canonical text per kind of column:
- text: the value; int: decimal digits; money: whole cents; date: ``YYYY-MM-DD``;
- time: ``YYYY-MM-DD HH:MM:SS.mmm`` (milliseconds, as the source keeps them);
- NULL: ``\\N``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Mapping, Sequence
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sqlalchemy import BigInteger, Column, Date, DateTime, Integer, Numeric, Text, case, cast, func, literal
from sqlalchemy.sql.elements import ColumnElement

NULL = "\\N"
SEPARATOR = "|"
#: The SQLite function the digest is computed with (registered on every SQLite connection).
SQLITE_FUNCTION = "tdc_digest32"

#: (column name, kind) in the order they are digested.
Columns = Sequence[tuple[str, str]]


def kind_of(column: Column[Any]) -> str:
    """The canonical kind of a table column: text, int, money, date or time."""
    kind = column.type
    if isinstance(kind, DateTime):
        return "time"
    if isinstance(kind, Date):
        return "date"
    if isinstance(kind, Numeric) and not isinstance(kind, Integer):
        return "money"
    if isinstance(kind, Integer):
        return "int"
    return "text"


#: The digest kind of a decimal column kept to more places than cents: ``decimal:10``.
DECIMAL = "decimal:"


def digest_kind(column: Column[Any], dialect: str) -> str:
    """The kind a column is digested and compared as in a database of ``dialect``: ``kind_of``,
    except that a decimal with more than two places (Kingdee's decimal(23,10) quantities) keeps
    every place (``decimal:10``), so a change in the fifth place is a difference, not rounded away
    with the cents.  Not on SQLite, which keeps decimals as floats: past the cents a large amount
    reads back with float noise (1234567.89 as 1234567.8899999999), so there it is the cents."""
    kind = kind_of(column)
    scale = getattr(column.type, "scale", None)
    exact = kind == "money" and scale is not None and scale > 2 and dialect != "sqlite"
    return f"{DECIMAL}{scale}" if exact else kind


def _places(kind: str) -> int:
    return int(kind[len(DECIMAL):])


def canonical(kind: str, value: Any) -> str:
    """How ``value`` of a column of ``kind`` is written into the digested text."""
    if value is None:
        return NULL
    if kind.startswith(DECIMAL):
        number = Decimal(str(value)).quantize(Decimal(1).scaleb(-_places(kind)), rounding=ROUND_HALF_UP)
        return f"{abs(number) if number == 0 else number:f}"  # as the databases print it: no -0
    if kind == "money":
        return str(int((Decimal(str(value)) * 100).quantize(Decimal(1), rounding=ROUND_HALF_UP)))
    if kind == "int":
        return str(int(value))
    if kind == "time":
        moment = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(str(value))
        return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d}"
    if kind == "date":
        day = value.date() if isinstance(value, dt.datetime) else value
        return day.isoformat() if isinstance(day, dt.date) else str(day)[:10]
    return str(value)


def digest(text: str) -> int:
    """The first 32 bits of the MD5 of ``text`` (UTF-8), as an unsigned integer."""
    return int(hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:8], 16)


def canonical_text(columns: Columns, row: Mapping[str, Any]) -> str:
    return SEPARATOR.join(canonical(kind, row.get(name)) for name, kind in columns)


def row_digest(columns: Columns, row: Mapping[str, Any]) -> int:
    """The digest of ``row``'s ``columns``, equal to ``sql_row_digest`` of the stored row."""
    return digest(canonical_text(columns, row))


def bucket_of(order_id: str, buckets: int) -> int:
    return digest(order_id) % buckets


def register_sqlite(dbapi_connection: Any) -> None:
    """Give a SQLite connection the digest function (the others have MD5 built in)."""
    dbapi_connection.create_function(SQLITE_FUNCTION, 1, lambda text: None if text is None else digest(text),
                                     deterministic=True)


def _sql_part(dialect: str, kind: str, column: ColumnElement[Any]) -> ColumnElement[Any]:
    text: ColumnElement[Any]
    if kind == "money":
        text = cast(cast(func.round(column * 100), BigInteger), Text)
    elif kind.startswith(DECIMAL):
        # MariaDB and PostgreSQL print a DECIMAL(p, s) with its s places; SQLite keeps a float
        # (and prints NULL as zero).
        text = (case((column.is_(None), None), else_=func.printf(literal(f"%.{_places(kind)}f"), column))
                if dialect == "sqlite" else cast(column, Text))
    elif kind == "time":
        if dialect in ("mysql", "mariadb"):
            text = func.left(func.date_format(column, literal("%Y-%m-%d %H:%i:%s.%f")), 23)
        elif dialect == "postgresql":
            text = func.to_char(column, literal("YYYY-MM-DD HH24:MI:SS.MS"))
        else:  # SQLite keeps times as text with microseconds
            text = func.substr(column, 1, 23)
    elif kind == "date" and dialect == "postgresql":
        text = func.to_char(column, literal("YYYY-MM-DD"))
    elif kind == "text":
        text = column
    else:
        text = cast(column, Text)
    return func.coalesce(text, literal(NULL))


def sql_digest(dialect: str, text: ColumnElement[Any]) -> ColumnElement[Any]:
    """The digest of a text expression, computed by the database."""
    if dialect in ("mysql", "mariadb"):
        return cast(func.conv(func.left(func.md5(text), 8), 16, 10), BigInteger)
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import BIT

        return cast(cast(literal("x", Text) + func.substr(func.md5(text), 1, 8), BIT(32)), BigInteger)
    return getattr(func, SQLITE_FUNCTION)(text)


def sql_canonical_text(dialect: str, columns: Sequence[tuple[ColumnElement[Any], str]]) -> ColumnElement[Any]:
    parts = [_sql_part(dialect, kind, column) for column, kind in columns]
    if dialect == "sqlite":  # no concat_ws before SQLite 3.44
        joined = parts[0]
        for part in parts[1:]:
            joined = joined + literal(SEPARATOR, Text) + part
        return joined
    return func.concat_ws(literal(SEPARATOR), *parts)


def sql_row_digest(dialect: str, columns: Sequence[tuple[ColumnElement[Any], str]]) -> ColumnElement[Any]:
    """The digest of a stored row's ``(column, kind)`` pairs, as ``row_digest`` computes it."""
    return sql_digest(dialect, sql_canonical_text(dialect, columns))


def sql_bucket(dialect: str, column: ColumnElement[Any], buckets: int) -> ColumnElement[Any]:
    """``bucket_of`` computed by the database."""
    return sql_digest(dialect, column) % buckets
