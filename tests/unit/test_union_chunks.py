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


def test_writes_sent_together_are_cut_by_size_as_well_as_by_count() -> None:
    from models.driver_sql import TOGETHER_BYTES, TOGETHER_CHUNK, together_chunks

    small = [("UPDATE t SET a = ? WHERE id = ?", ("x", n)) for n in range(TOGETHER_CHUNK + 1)]
    big = [("INSERT INTO t (a) VALUES (?)", ("y" * (TOGETHER_BYTES // 3),)) for _ in range(7)]
    huge = [("INSERT INTO t (a) VALUES (?)", ("z" * (TOGETHER_BYTES * 2),))]
    # Small writes go TOGETHER_CHUNK at a time; big ones two at a time (three would pass the
    # size); one larger than the size goes alone; nothing is lost or reordered
    assert [len(chunk) for chunk in together_chunks(small)] == [TOGETHER_CHUNK, 1]
    assert [len(chunk) for chunk in together_chunks(big)] == [2, 2, 2, 1]
    assert [len(chunk) for chunk in together_chunks(small[:3] + huge + small[:3])] == [3, 1, 3]
    assert [w for chunk in together_chunks(big + small) for w in chunk] == big + small
    assert together_chunks([]) == []
