"""Column types shared by every table, so money and time mean the same on each backend."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy import BigInteger, Date, DateTime, Integer, Numeric, String, Text, Time
from sqlalchemy.dialects import mysql
from sqlalchemy.types import TypeEngine

if TYPE_CHECKING:
    from inputs.columns import ColumnType

#: decimal(12,2), as the source schema stores every amount.
Money = Numeric(12, 2, asdecimal=True)
#: datetime(3): MySQL/MariaDB drop milliseconds from a plain DATETIME.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
#: SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")


def column_sql_type(kind: ColumnType) -> TypeEngine[Any]:
    """The SQL type of a declared source column (``inputs.columns``), on any backend: MySQL and
    MariaDB get the source's own type and fractional seconds."""
    if kind.kind == "text":
        return String(kind.size) if kind.size else Text()
    if kind.kind == "int":
        return BigInteger() if kind.name == "bigint" else Integer()
    if kind.name == "decimal":
        return Numeric(kind.size, kind.scale, asdecimal=True)
    if kind.name == "date":
        return Date()
    if kind.name == "time":
        return Time().with_variant(mysql.TIME(fsp=kind.size), "mysql", "mariadb")
    exact = mysql.TIMESTAMP(fsp=kind.size) if kind.name == "timestamp" else mysql.DATETIME(fsp=kind.size)
    return DateTime().with_variant(exact, "mysql", "mariadb")


def sql_type_of(kind: ColumnType) -> TypeEngine[Any]:
    """The SQL type of a declared wide or ADS column, on any backend: like ``column_sql_type``,
    but every time is a DATETIME with its fractional seconds (never MySQL's TIMESTAMP, which
    rewrites itself on update) and ``money`` is ``Money``."""
    if kind.kind == "decimal":
        return Money if (kind.size, kind.scale) == (12, 2) else Numeric(kind.size, kind.scale, asdecimal=True)
    if kind.kind in ("datetime", "timestamp"):
        return Timestamp if kind.size == 3 else DateTime().with_variant(mysql.DATETIME(fsp=kind.size), "mysql",
                                                                         "mariadb")
    return column_sql_type(kind)
