"""The rescan's hand-made per-table selects on SQLite (the embedded default) and MariaDB: what
is due and what is not, by status and time."""

import datetime as dt

import pytest
from sqlalchemy import update

from intake.receiver import bump_task
from models.sharded import TaskStatus, task_table
from reliability.rescan import due_in_table, due_tasks
from tests.conftest import new_order_id

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 21, 12, 0, 0, 250000)


@pytest.fixture
def sqlite_storage(tmp_path):  # type: ignore[no-untyped-def]
    from models.schema import init_storage
    from models.storage import Storage
    from settings import load_settings

    store = Storage(load_settings({"TDC_HOME": str(tmp_path), "TDC_SHARDS": "64",
                                   "TDC_REDIS_URL": "redis://127.0.0.1:1/0"}))
    init_storage(store)
    yield store
    store.dispose()


@pytest.mark.parametrize("backend", ["sqlite", "mariadb"])
def test_due_tasks_are_pending_waiting_past_back_off_or_running_past_lease(request, backend: str) -> None:
    storage = request.getfixturevalue("sqlite_storage" if backend == "sqlite" else "storage")
    states = {"PENDING": (TaskStatus.PENDING, -1), "WAITING": (TaskStatus.WAITING, -1),
              "RUNNING": (TaskStatus.RUNNING, -1), "LATER": (TaskStatus.WAITING, +1),
              "LEASED": (TaskStatus.RUNNING, +1), "DONE": (TaskStatus.DONE, -1), "FAILED": (TaskStatus.FAILED, -1)}
    order_id = new_order_id("R")
    shard = storage.shard_of(order_id)
    table = task_table(shard)
    with storage.order_transaction(order_id) as connection:
        for operation, (status, seconds) in states.items():
            bump_task(connection, shard, order_id, operation, NOW)
            connection.execute(update(table).where((table.c.order_id == order_id)
                                                   & (table.c.operation_type == operation)).values(
                status=status, next_run_at=NOW + dt.timedelta(seconds=seconds)))
    with storage.read_engine_for_order(order_id).connect() as connection:
        due = {op for o, op in due_in_table(connection, shard, NOW, 100) if o == order_id}
        assert len(due_in_table(connection, shard, NOW, 1)) == 1
    assert due == {"PENDING", "WAITING", "RUNNING"}
    jobs = storage.settings.rescan_shards
    found = {op for o, op in due_tasks(storage, shard % jobs, jobs, NOW, 100) if o == order_id}
    assert found == due
