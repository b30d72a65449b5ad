"""``tdc cdc snapshot`` on a source database whose name needs quoting (a backtick and a hyphen),
against a real MariaDB with its binlog on: the rows are read and stored, with the operator's
``--where`` and with bound order ids beside a condition holding ``%``."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import quote

import pytest
from sqlalchemy import create_engine

from cdc.snapshot import quoted, take_snapshot
from cdc.source import source_of
from demo.history import generate_history
from demo.source import play_changes, source_metadata
from flows.registry import ACCEPTED as ORDER_FLOW

pytestmark = pytest.mark.integration


@pytest.fixture
def awkward_source(binlog_server) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A source database named ``gqsh_src_…`b-c`` (followed by the tests' TDC_SOURCE_DATABASES)
    holding a small history; its URL."""
    name = f"gqsh_src_{uuid.uuid4().hex[:6]}`b-c"
    with binlog_server.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"CREATE DATABASE {quoted(name)} CHARACTER SET utf8mb4")
    url = f"{binlog_server.url}/{quote(name)}"
    engine = create_engine(url)
    metadata = source_metadata(ORDER_FLOW)
    metadata.create_all(engine)
    history = generate_history(12, seed=81, displacement=0, duplicate_rate=0)
    with engine.begin() as connection:
        play_changes(connection, metadata, history.changes)
    engine.dispose()
    yield url
    with binlog_server.connect() as connection, connection.cursor() as cursor:
        cursor.execute(f"DROP DATABASE {quoted(name)}")


def test_a_snapshot_reads_a_database_whose_name_needs_quoting(fresh_storage, redis_client, awkward_source) -> None:
    # Given a source database named with a backtick and a hyphen
    storage = fresh_storage()
    source = source_of(awkward_source)
    assert "`" in source.database and "-" in source.database
    # When a snapshot reads its order headers with the operator's condition
    report = take_snapshot(storage, redis_client, ORDER_FLOW, source, "quoting", lambda keys: 0,
                           tables=["gqsh_order"], where="status >= 10 OR order_id LIKE '%'")
    # Then every header was read and stored
    assert report.rows["gqsh_order"] == 12 and report.intake.accepted == 12
    assert report.intake.quarantined == 0


def test_bound_order_ids_beside_a_condition_with_percent_signs(fresh_storage, redis_client, awkward_source) -> None:
    # Given the same source, when a snapshot reads two orders by id under a LIKE condition
    storage = fresh_storage()
    source = source_of(awkward_source)
    everything = take_snapshot(storage, redis_client, ORDER_FLOW, source, "quoting", lambda keys: 0,
                               tables=["gqsh_order"], hand_over=False)
    assert everything.rows["gqsh_order"] == 12
    wanted = sorted({order_id for order_id, _ in everything.intake.touched})[:2]
    report = take_snapshot(fresh_storage(), redis_client, ORDER_FLOW, source, "quoting", lambda keys: 0,
                           tables=["gqsh_order"], where="order_id LIKE '%'", orders=wanted, hand_over=False)
    # Then exactly those rows were read (the % reached the server as written)
    assert report.rows["gqsh_order"] == 2
    assert {order_id for order_id, _ in report.intake.touched} == set(wanted)
