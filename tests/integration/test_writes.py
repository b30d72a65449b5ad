"""Telling a duplicate key from other integrity errors, on each backend tdc supports, over real
connections: a duplicate is an outcome (another writer got there first), anything else is a bug."""

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, create_engine, insert
from sqlalchemy.exc import IntegrityError

from models.writes import insert_if_absent, is_duplicate_key

pytestmark = pytest.mark.integration


def _engine(backend: str, request, tmp_path):  # type: ignore[no-untyped-def]
    """A real database of ``backend``: a SQLite file, or the session's PostgreSQL warehouse or
    first MariaDB shard database."""
    if backend == "sqlite":
        return create_engine(f"sqlite:///{tmp_path / 'writes.db'}")
    storage = request.getfixturevalue("storage")
    return storage.dws_engine if backend == "postgresql" else storage.shard_engine(0)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_a_duplicate_key_is_told_from_a_missing_value(backend: str, request, tmp_path) -> None:
    # Given a table with a key and a NOT NULL column, on a real database of each backend
    engine = _engine(backend, request, tmp_path)
    table = Table("tdc_writes_probe", MetaData(), Column("id", Integer, primary_key=True),
                  Column("name", String(10), nullable=False))
    table.drop(engine, checkfirst=True)
    table.create(engine)
    try:
        with engine.connect() as connection:
            connection.execute(insert(table).values(id=1, name="a"))
            connection.commit()
            # When a batch insert meets the existing key, and an insert leaves the column NULL
            with pytest.raises(IntegrityError) as duplicate:
                connection.execute(insert(table), [{"id": 2, "name": "b"}, {"id": 1, "name": "c"}])
            connection.rollback()
            with pytest.raises(IntegrityError) as missing:
                connection.execute(insert(table).values(id=3, name=None))
            connection.rollback()
    finally:
        table.drop(engine)
    # Then only the first is a duplicate key
    assert is_duplicate_key(duplicate.value)
    assert not is_duplicate_key(missing.value)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mariadb"])
def test_insert_if_absent_says_whether_it_inserted(backend: str, request, tmp_path) -> None:
    # The order fence (reliability.fencing.claim_order), the quarantine and the schema-change
    # log trust this answer: a row already there must answer False on every backend.
    engine = _engine(backend, request, tmp_path)
    table = Table("tdc_absent_probe", MetaData(), Column("id", Integer, primary_key=True),
                  Column("name", String(10), nullable=False))
    table.drop(engine, checkfirst=True)
    table.create(engine)
    try:
        with engine.begin() as connection:
            first = insert_if_absent(connection, table, {"id": 1, "name": "a"})
            again = insert_if_absent(connection, table, {"id": 1, "name": "b"})
            other = insert_if_absent(connection, table, {"id": 2, "name": "c"})
            names = dict(connection.execute(table.select()).all())  # type: ignore[arg-type]
    finally:
        table.drop(engine)
    assert (first, again, other) == (True, False, True)
    assert names == {1: "a", 2: "c"}
