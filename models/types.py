"""Column types shared by every table, so money and time mean the same on each backend."""

from __future__ import annotations

from sqlalchemy import BigInteger, DateTime, Integer, Numeric
from sqlalchemy.dialects import mysql

#: decimal(12,2), as the source schema stores every amount.
Money = Numeric(12, 2, asdecimal=True)
#: datetime(3): MySQL/MariaDB drop milliseconds from a plain DATETIME.
Timestamp = DateTime().with_variant(mysql.DATETIME(fsp=3), "mysql", "mariadb")
#: SQLite only auto-increments an INTEGER PRIMARY KEY.
BigId = BigInteger().with_variant(Integer, "sqlite")
