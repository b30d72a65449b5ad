"""Batch reads joined with UNION ALL stay within SQLite's limits: at most UNION_CHUNK selects and
UNION_PARAMETERS bound parameters per statement."""

from __future__ import annotations

import sqlite3

from sqlalchemy import create_engine, event

from models.driver_sql import UNION_CHUNK, UNION_PARAMETERS, union_all_of, union_chunks

_SELECT = "SELECT id FROM {table} WHERE " + " OR ".join(["id = ?"] * 200)


def test_a_read_of_many_keys_fits_sqlites_default_variable_limit() -> None:
    # Given SQLite held to its upstream default of 32,766 variables per statement (builds differ)
    engine = create_engine("sqlite://")

    @event.listens_for(engine, "connect")
    def limit(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        dbapi_connection.setlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER, 32_766)

    with engine.begin() as connection:
        connection.exec_driver_sql("CREATE TABLE t (id INTEGER PRIMARY KEY)")
        connection.exec_driver_sql("INSERT INTO t (id) VALUES (7), (40000)")
        # When 200 selects of 200 keys each (40,000 parameters) are read at once
        terms = [(_SELECT, {"table": "t"}, tuple(range(n * 200, (n + 1) * 200))) for n in range(200)]
        rows = union_all_of(connection, terms)
    # Then it runs, and finds what is there
    assert sorted(row.id for row in rows) == [7]


def test_chunks_keep_order_and_bounds() -> None:
    terms = [("x", {}, tuple(range(size))) for size in (3000, 3000, 3000, 10, 9000, 1)]
    chunks = union_chunks(terms)
    assert [term for chunk in chunks for term in chunk] == terms
    assert [[len(term[2]) for term in chunk] for chunk in chunks] == [[3000, 3000], [3000, 10], [9000], [1]]
    many = union_chunks([("x", {}, (n,)) for n in range(2 * UNION_CHUNK + 1)])
    assert [len(chunk) for chunk in many] == [UNION_CHUNK, UNION_CHUNK, 1]
    assert all(sum(len(t[2]) for t in chunk) <= UNION_PARAMETERS for chunk in chunks if len(chunk) > 1)
