"""The reference source database of the order flow, as a MySQL/MariaDB schema built from the
flow's declaration, and a generated history played into it as SQL statements."""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import (
    Column,
    Connection,
    MetaData,
    Table,
    delete,
    insert,
    update,
)

from demo.history import SourceChange
from flows import Flow
from models.types import column_sql_type


def source_metadata(flow: Flow) -> MetaData:
    """One table per source table of ``flow``, keyed by its declared unique key."""
    metadata = MetaData()
    for table in flow.tables.values():
        Table(table.name, metadata, *[
            Column(name, column_sql_type(kind), primary_key=name == table.key, autoincrement=False, nullable=True)
            for name, kind in table.types.items()])
    return metadata


def play_changes(connection: Connection, metadata: MetaData, changes: Iterable[SourceChange]) -> int:
    """Run each change as the INSERT, UPDATE or DELETE that made it, in order; returns how many."""
    count = 0
    for change in changes:
        table = metadata.tables[change.table]
        [key] = [column for column in table.primary_key.columns]
        where = key == (change.before or change.row)[key.name]
        if change.kind == "insert":
            connection.execute(insert(table).values(**change.row))
        elif change.kind == "update":
            connection.execute(update(table).where(where).values(**change.row))
        else:
            connection.execute(delete(table).where(where))
        count += 1
    return count
