"""Daily housekeeping on the real MariaDB shards and Redis."""

import datetime as dt
import uuid

import pytest
from sqlalchemy import insert, select

from demo.tables import ONLINE as DEFAULT_SCHEMA
from reliability.alarms import ALARM_COUNTERS
from reliability.housekeeping import failed_digest, once_per_period, purge_snapshots
from tests.conftest import new_order_id

OrderSnapshot = DEFAULT_SCHEMA.snapshots

pytestmark = pytest.mark.integration

NOW = dt.datetime(2026, 11, 21, 2, 15)


def test_snapshots_older_than_the_retention_are_purged_and_newer_ones_kept(storage) -> None:
    # Given snapshots of one order taken 91, 89 and 1 days ago
    order_id = new_order_id("H")
    ages = {"SUBMIT": 91, "PAY": 89, "REFUND": 1}
    with storage.order_transaction(order_id) as connection:
        connection.execute(insert(OrderSnapshot), [
            dict(order_id=order_id, operation_type=op, task_version=1, order_row="{}", item_rows="[]",
                 taken_at=NOW - dt.timedelta(days=days)) for op, days in ages.items()])
    # When the purge runs twice
    first = purge_snapshots(storage, NOW, keep_days=90)
    second = purge_snapshots(storage, NOW, keep_days=90)
    # Then only the 91-day-old one went, and the second run found nothing
    with storage.engine_for_order(order_id).connect() as connection:
        left = set(connection.execute(select(OrderSnapshot.c.operation_type).where(
            OrderSnapshot.c.order_id == order_id)).scalars())
    assert left == {"PAY", "REFUND"}
    assert first >= 1 and second == 0


def test_a_daily_job_runs_once_per_period_whoever_asks(redis_client) -> None:
    job = f"test-{uuid.uuid4().hex[:8]}"
    runs: list[str] = []
    assert once_per_period(redis_client, job, "2026-11-21", 60, lambda: runs.append("a") or 1) == 1
    assert once_per_period(redis_client, job, "2026-11-21", 60, lambda: runs.append("b") or 2) is None
    assert once_per_period(redis_client, job, "2026-11-22", 60, lambda: runs.append("c") or 3) == 3
    assert runs == ["a", "c"]


def test_a_daily_job_that_fails_runs_again_on_its_retry(redis_client) -> None:
    # Given a daily job whose first try meets a transient fault
    job = f"test-{uuid.uuid4().hex[:8]}"
    tries: list[int] = []

    def work() -> str:
        tries.append(1)
        if len(tries) == 1:
            raise ConnectionError("database briefly unreachable")
        return "sent"
    with pytest.raises(ConnectionError):
        once_per_period(redis_client, job, "2026-11-21", 60, work)
    # When it is retried the same day, Then it runs and succeeds; after that, it is done for the day
    assert once_per_period(redis_client, job, "2026-11-21", 60, work) == "sent"
    assert once_per_period(redis_client, job, "2026-11-21", 60, work) is None
    assert len(tries) == 2


def test_the_failed_digest_counts_unresolved_failures_and_alarms(storage, redis_client) -> None:
    from models.orders import FailedTask

    order_id = new_order_id("G")
    with storage.order_transaction(order_id) as connection:
        connection.execute(insert(FailedTask).values(
            order_id=order_id, operation_type="PAY", reason="waiting for SUBMIT", last_error="waiting for SUBMIT",
            attempts=10, history="[]", sources="[]", failed_at=NOW))
    before = int(redis_client.hget(ALARM_COUNTERS, "failed_digest") or 0)
    digest = failed_digest(storage, redis_client, NOW)
    assert digest["unresolved"] >= 1  # type: ignore[operator]
    assert digest["by_operation"]["PAY"] >= 1  # type: ignore[index]
    assert int(redis_client.hget(ALARM_COUNTERS, "failed_digest")) == before + 1
