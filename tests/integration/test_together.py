"""Per-order compare-and-sets sent together (``models.driver_sql.run_together``): the same row
counts, errors and TasksChanged as one statement at a time, in a few round trips on MariaDB."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from chain.task_state import CompareAndSets, TasksChanged, mark_done
from intake.receiver import utcnow
from models.driver_sql import TOGETHER_CHUNK, run_together, run_together_unless_present, statement
from models.sharded import TaskStatus, task_table
from models.shards import database_for_shard, task_table_name
from models.storage import Storage
from settings import load_settings
from tests.conftest import new_order_id
from tests.integration.helpers import round_trips

pytestmark = pytest.mark.integration


@pytest.fixture(params=["pymysql", "mysqldb"])
def drivers_storage(request, storage):  # type: ignore[no-untyped-def]
    """Storage on MariaDB through PyMySQL (the shared one) and through mysqlclient."""
    if request.param == "pymysql":
        return storage
    return request.getfixturevalue("fresh_storage")(driver=request.param)


def _running_tasks(storage: Storage, database: int, count: int) -> list[tuple[int, str]]:
    """``count`` orders with one RUNNING SUBMIT task each, spread over the task tables of
    ``database``: (shard, order)."""
    made: list[tuple[int, str]] = []
    shards = [s for s in range(storage.settings.shards)
              if database_for_shard(s, storage.settings.shards) == database]
    now = utcnow()
    with storage.shard_engine(database).begin() as connection:
        for n in range(count):
            shard = shards[n % len(shards)]
            order_id = new_order_id("TG")
            connection.execute(insert(task_table(shard)).values(
                order_id=order_id, operation_type="SUBMIT", status=TaskStatus.RUNNING, version=1, done_version=0,
                attempts=0, next_run_at=now, created_at=now, updated_at=now))
            made.append((shard, order_id))
    return made


def _done(storage: Storage, database: int, made: list[tuple[int, str]]) -> list[str]:
    with storage.shard_engine(database).connect() as connection:
        return [connection.execute(select(task_table(shard).c.status).where(
            task_table(shard).c.order_id == order_id)).scalar_one() for shard, order_id in made]


def test_marks_of_more_orders_than_a_round_trip_carries_go_in_two_with_each_row_count(drivers_storage) -> None:
    storage = drivers_storage
    # Given more RUNNING tasks, over every task table of a database, than one round trip carries
    count = TOGETHER_CHUNK + 50
    made = _running_tasks(storage, 0, count)
    engine = storage.shard_engine(0)
    # When they are marked DONE together, the second one at a version it does not have
    with round_trips(engine) as sent, engine.begin() as connection:
        writes = [(statement(connection, "UPDATE {task} SET status = 'DONE', updated_at = ? "
                             "WHERE order_id = ? AND version = ?", task=task_table_name(shard)),
                   (utcnow(), order_id, 2 if n == 1 else 1)) for n, (shard, order_id) in enumerate(made)]
        counts = run_together(connection, writes)
    # Then two round trips carried them, and each statement reports its own rows matched
    assert len([sql for sql in sent if "UPDATE" in sql]) == 2
    assert counts == [1, 0] + [1] * (count - 2)
    statuses = _done(storage, 0, made)
    assert statuses[1] == TaskStatus.RUNNING and statuses.count(TaskStatus.DONE) == count - 1


def test_a_task_changed_since_its_read_names_its_order_and_nothing_of_the_batch_commits(drivers_storage) -> None:
    storage = drivers_storage
    # Given three orders whose RUNNING tasks a finish read at version 1, and new data that has
    # bumped the second one since
    made = _running_tasks(storage, 1, 3)
    engine = storage.shard_engine(1)
    with engine.begin() as connection:
        table = task_table(made[1][0])
        connection.execute(table.update().where(table.c.order_id == made[1][1]).values(version=2))
    # When the finish marks all three DONE in one transaction
    with pytest.raises(TasksChanged, match=f"{made[1][1]}: 1 of 1 tasks changed before they were done"):
        with engine.begin() as connection:
            sets = CompareAndSets(connection)
            for shard, order_id in made:
                mark_done(sets, shard, order_id, [("SUBMIT", 1)], utcnow())
            sets.flush()
    # Then the transaction rolled back whole: none of them is DONE
    assert _done(storage, 1, made) == [TaskStatus.RUNNING] * 3


def test_an_error_part_way_stops_the_rest_and_is_sqlalchemys(drivers_storage) -> None:
    storage = drivers_storage
    # Given two tasks, and a batch whose middle statement breaks a unique key
    made = _running_tasks(storage, 2, 2)
    engine = storage.shard_engine(2)
    (first_shard, first), (second_shard, second) = made
    with pytest.raises(IntegrityError):
        with engine.begin() as connection:
            update = "UPDATE {task} SET status = 'DONE' WHERE order_id = ?"
            run_together(connection, [
                (statement(connection, update, task=task_table_name(first_shard)), (first,)),
                (statement(connection, "INSERT INTO {task} (order_id, operation_type, status, version, done_version, "
                           "attempts, next_run_at, created_at, updated_at) SELECT order_id, operation_type, status, "
                           "version, done_version, attempts, next_run_at, created_at, updated_at FROM {task} "
                           "WHERE order_id = ?", task=task_table_name(first_shard)), (first,)),
                (statement(connection, update, task=task_table_name(second_shard)), (second,)),
            ])
    # Then the error is SQLAlchemy's (what the step's fault handling knows) and nothing committed
    assert _done(storage, 2, made) == [TaskStatus.RUNNING] * 2
    # And the pooled connection is still usable afterwards
    with engine.connect() as connection:
        assert run_together(connection, [(statement(connection, "UPDATE {task} SET attempts = 0 WHERE order_id = ?",
                                                    task=task_table_name(first_shard)), (first,))]) == [1]


def test_sqlite_runs_them_one_at_a_time_with_the_same_counts(tmp_path) -> None:
    # Given SQLite storage (no multi-statements) with two RUNNING tasks
    settings = load_settings({"TDC_DB_URLS": f"sqlite:///{tmp_path}/tdc.db", "TDC_HOME": str(tmp_path)})
    storage = Storage(settings)
    from models.schema import init_storage

    init_storage(storage)
    made = _running_tasks(storage, 0, 2)
    engine = storage.shard_engine(0)
    with round_trips(engine) as sent, engine.begin() as connection:
        writes = [(statement(connection, "UPDATE {task} SET status = 'DONE' WHERE order_id = ? AND version = ?",
                             task=task_table_name(shard)), (order_id, version))
                  for (shard, order_id), version in zip(made, (1, 5), strict=True)]
        assert run_together(connection, writes) == [1, 0]
    assert len([sql for sql in sent if "UPDATE" in sql]) == 2
    storage.dispose()


def test_an_engine_not_made_for_multi_statements_falls_back(mariadb, storage) -> None:
    # Given a plain engine on a shard database (no multi-statement flag)
    from sqlalchemy import create_engine

    url = storage.settings.db_urls[0]
    plain = create_engine(url)
    made = _running_tasks(storage, 0, 2)
    try:
        with plain.begin() as connection:
            writes = [(statement(connection, "UPDATE {task} SET attempts = 0 WHERE order_id = ?",
                                 task=task_table_name(shard)), (order_id,)) for shard, order_id in made]
            # Then it still runs them, one at a time
            assert run_together(connection, writes) == [1, 1]
    finally:
        plain.dispose()


def test_an_insert_of_a_key_already_there_fails_alone_and_the_writes_after_it_still_run(drivers_storage) -> None:
    storage = drivers_storage
    # Given two RUNNING tasks, and writes whose second INSERT repeats the first task's key, in a
    # batch longer than one round trip
    made = _running_tasks(storage, 3, 2)
    engine = storage.shard_engine(3)
    (first_shard, first), (second_shard, second) = made
    fresh = [(first_shard, new_order_id("TG")) for _ in range(TOGETHER_CHUNK)]
    with round_trips(engine) as sent, engine.begin() as connection:
        now = utcnow()
        add = ("INSERT INTO {task} (order_id, operation_type, status, version, done_version, attempts, next_run_at, "
               "created_at, updated_at) VALUES (?, 'SUBMIT', 'PENDING', 1, 0, 0, ?, ?, ?)")
        writes = [(statement(connection, add, task=task_table_name(shard)), (order_id, now, now, now))
                  for shard, order_id in fresh[:1] + [(first_shard, first)] + fresh[1:]]
        writes.append((statement(connection, "UPDATE {task} SET status = 'DONE' WHERE order_id = ?",
                                 task=task_table_name(second_shard)), (second,)))
        counts = run_together_unless_present(connection, writes)
    # Then only the repeated key's INSERT failed (None); every write before and after it counted
    # and committed with the transaction, in two round trips (the first stopped at the failure;
    # the writes after it were sent again)
    assert counts == [1, None] + [1] * (TOGETHER_CHUNK - 1) + [1]
    assert len([sql for sql in sent if "INSERT" in sql]) == 2
    assert _done(storage, 3, made) == [TaskStatus.RUNNING, TaskStatus.DONE]
    with engine.connect() as connection:
        assert all(connection.execute(select(task_table(shard).c.status).where(
            task_table(shard).c.order_id == order_id)).scalar_one() == TaskStatus.PENDING for shard, order_id in fresh)


def test_writes_larger_together_than_a_server_packet_still_run(drivers_storage) -> None:
    storage = drivers_storage
    # Given 300 RUNNING tasks, and an error text and a history of 60 KB each for every one: 24 MB
    # in a round trip of TOGETHER_CHUNK statements, more than MariaDB's default
    # max_allowed_packet (16 MB), though each statement fits
    made = _running_tasks(storage, 0, 300)
    engine = storage.shard_engine(0)
    with engine.connect() as connection:
        packet = int(connection.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    assert TOGETHER_CHUNK * 120_000 > packet
    # When they are written together
    update = "UPDATE {task} SET last_error = ?, history = ? WHERE order_id = ?"
    with round_trips(engine) as sent, engine.begin() as connection:
        counts = run_together(connection, [
            (statement(connection, update, task=task_table_name(shard)), ("e" * 60_000, "h" * 60_000, order_id))
            for shard, order_id in made])
    # Then every write ran, in several round trips that each fit
    assert counts == [1] * 300
    assert len([sql for sql in sent if "UPDATE" in sql]) > 1
