"""Prometheus metrics of a tdc deployment: ``render_metrics`` is the body of ``GET /metrics``.

Every figure is read when Prometheus scrapes, from the databases, Redis and the broker that all
workers share, so it is right however many worker processes run on however many machines;
nothing is counted in this process.  What each part costs a scrape:

- **tables** (tasks by state, unresolved failures, quarantine): counted in the shard databases.
  One ``SELECT status, COUNT(*) ... WHERE status IN (PENDING, WAITING, RUNNING, FAILED) GROUP BY
  status`` per task table, on its ``(status, next_run_at)`` index, so the cost grows with the
  backlog and not with the DONE tasks (never counted here: ``tdc_tasks_done_total`` comes from the
  workers); 200 tables per statement (``models.driver_sql.union_all``), the databases in
  parallel; plus one COUNT of ``failed_task`` and of ``quarantine`` per database.  Measured on
  one MariaDB server over 4096 tables (a shared two-core machine): 0.15-0.5 s with nothing
  pending (1.2 s the first time, before the server had the tables open), 0.6 s with 100,000
  tasks pending beside 100,000 DONE.  The result is kept in Redis for FIGURES_SECONDS, so any
  number of Prometheus servers or console pages count at most once per window
  (``tdc_tables_age_seconds`` says how old it is).
- **redis** (step durations, end-to-end lag, DONE counts, alarms by kind, the consumers' counts
  and lag, and the cached table figures): hashes written by the workers (``chain.timings``),
  ``raise_alarm`` and ``tdc consume`` (``streams.consume.figures``), read in one pipelined round trip.
- **tails**: the rows of ``cdc_position`` (one per binlog tail) in shard database 0.
- **reconcile**: the newest finished ``reconcile_run``, on its ``started_at`` index, in the warehouse.
- **broker**: one passive declaration per queue of the tdc Celery app (``worker.app``, when this
  process has configured it or it is given), on one broker connection.

A part that cannot be read is left out, ``tdc_scrape_ok{part}`` is 0 for it, and the rest is
still served.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import Table, func, select

from chain.timings import DONE_COUNTS, LAG_BUCKETS, LAG_HISTOGRAM, STEP_BUCKETS, STEP_HISTOGRAM, STEPS, cumulative
from models.cdc import CdcPosition
from models.driver_sql import union_all
from models.orders import FailedTask, QuarantinedInput
from models.reconcile import ReconcileRun
from models.sharded import TaskStatus
from models.shards import database_for_shard, task_table_name
from models.storage import Storage
from reliability.alarms import ALARM_COUNTERS
from streams.consume.figures import CONSUMER_FIGURES, read_consumers

log = logging.getLogger(__name__)
T = TypeVar("T")

#: The text format every Prometheus 2 and 3 reads (prometheus_client's newest announces 1.0.0,
#: which only adds escaping for names outside [a-zA-Z_:][a-zA-Z0-9_:]*; tdc's are all inside).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: Seconds the table figures are kept in Redis: a scrape interval of 15-30 s sees each count
#: once or twice, and the databases are counted at most twice a minute whoever asks.
FIGURES_SECONDS = 30
#: Redis key of the cached table figures (JSON).
FIGURES_CACHE = "tdc:metrics:figures"
#: The task states counted; DONE is not (it would scan every task ever done).
BACKLOG_STATES = (TaskStatus.PENDING, TaskStatus.WAITING, TaskStatus.RUNNING, TaskStatus.FAILED)
#: How a finished reconciliation run can end (``reconcile.run``).
RECONCILE_STATUSES = ("clean", "fixed", "different", "error")
#: The parts of a scrape, each read on its own.
PARTS = ("tables", "redis", "tails", "reconcile", "broker")

_STATES = ", ".join(f"'{state}'" for state in BACKLOG_STATES)
_COUNT_STATES = "SELECT status, COUNT(*) FROM {task} WHERE status IN (" + _STATES + ") GROUP BY status"
RUNS = cast(Table, ReconcileRun.__table__)


@dataclass
class Tables:
    """What the shard databases hold that is not done, and when it was counted (epoch seconds)."""

    tasks: dict[str, int]
    failed: int
    quarantined: int
    counted_at: float


@dataclass
class Figures:
    """Everything ``/metrics`` shows, read at once; a part that could not be read is None."""

    tables: Tables | None = None
    steps: dict[str, tuple[list[tuple[float, int]], float]] = field(default_factory=dict)
    lag: tuple[list[tuple[float, int]], float] | None = None
    done: dict[str, int] = field(default_factory=dict)
    alarms: dict[str, int] = field(default_factory=dict)
    #: tail name -> (source commit time of the newest change taken in, time its position was stored).
    tails: dict[str, tuple[float, float]] | None = None
    #: The newest finished reconciliation run's row.
    reconcile: dict[str, Any] | None = None
    queues: dict[str, int] | None = None
    #: consumer name -> its figures (``streams.consume.figures``).
    consumers: dict[str, dict[str, float]] = field(default_factory=dict)
    ok: dict[str, bool] = field(default_factory=dict)


def _epoch(moment: dt.datetime) -> float:
    """A stored time (naive UTC) as epoch seconds."""
    return moment.replace(tzinfo=dt.UTC).timestamp() if moment.tzinfo is None else moment.timestamp()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _tables_of_each_database(storage: Storage) -> dict[int, list[int]]:
    """Task tables by distinct database (one URL serving several shard groups holds all of theirs)."""
    urls = storage.settings.db_urls
    first = {urls[database]: database for database in reversed(range(len(urls)))}
    tables: dict[int, list[int]] = {database: [] for database in storage.distinct_databases()}
    for shard in range(storage.settings.shards):
        tables[first[urls[database_for_shard(shard, storage.settings.shards)]]].append(shard)
    return tables


def count_tables(storage: Storage) -> Tables:
    """Count the backlog by state, the unresolved failures and the quarantined inputs, every
    shard database at once (see the module's docstring for the cost)."""
    tables = _tables_of_each_database(storage)

    def one(database: int) -> tuple[list[Any], int, int]:
        with storage.read_engine(database).connect() as connection:
            rows = union_all(connection, _COUNT_STATES, [({"task": task_table_name(s)}, ()) for s in tables[database]])
            failed = connection.execute(select(func.count()).select_from(FailedTask.__table__)
                                        .where(FailedTask.resolved_at.is_(None))).scalar_one()
            quarantined = connection.execute(select(func.count()).select_from(QuarantinedInput.__table__)).scalar_one()
        return rows, int(failed), int(quarantined)

    counts = dict.fromkeys(BACKLOG_STATES, 0)
    failed = quarantined = 0
    for rows, database_failed, database_quarantined in storage.each_database(one):
        for status, n in rows:
            counts[status] += int(n)
        failed += database_failed
        quarantined += database_quarantined
    return Tables(counts, failed, quarantined, time.time())


def _tails(storage: Storage) -> dict[str, tuple[float, float]]:
    with storage.read_engine(0).connect() as connection:
        rows = connection.execute(select(CdcPosition.name, CdcPosition.clock_ms, CdcPosition.updated_at)).all()
    return {row.name: (row.clock_ms / 1000, _epoch(row.updated_at)) for row in rows}


def _last_reconcile(storage: Storage) -> dict[str, Any] | None:
    with storage.dws_engine.connect() as connection:
        row = connection.execute(select(RUNS).where(RUNS.c.status != "running")
                                 .order_by(RUNS.c.started_at.desc(), RUNS.c.id.desc()).limit(1)).first()
    return None if row is None else dict(row._mapping)


def _queues(app: Any) -> dict[str, int]:
    from tasks.scheduled import _depth

    with app.connection_for_write() as connection:
        connection.ensure_connection(max_retries=1)
        return {queue.name: _depth(connection, queue.name) for queue in app.conf.task_queues or []}


def _read_redis(client: redis.Redis, figures: Figures) -> str | None:
    """Fill the worker-written figures in; returns the cached table figures (JSON), if any."""
    pipe = client.pipeline(transaction=False)
    for step in STEPS:
        pipe.hgetall(STEP_HISTOGRAM.format(step=step))
    pipe.hgetall(LAG_HISTOGRAM)
    pipe.hgetall(DONE_COUNTS)
    pipe.hgetall(ALARM_COUNTERS)
    pipe.get(FIGURES_CACHE)
    pipe.hgetall(CONSUMER_FIGURES)
    *steps, lag, done, alarms, cached, consumers = pipe.execute()
    figures.consumers = read_consumers(consumers)
    figures.steps = {step: cumulative(STEP_BUCKETS, fields) for step, fields in zip(STEPS, steps, strict=True)}
    figures.lag = cumulative(LAG_BUCKETS, lag)
    figures.done = {_text(k): int(v) for k, v in done.items()}
    figures.alarms = {_text(k): int(v) for k, v in alarms.items()}
    return None if cached is None else _text(cached)


def _cached_tables(storage: Storage, client: redis.Redis, cached: str | None) -> Tables:
    if cached is not None:
        return Tables(**json.loads(cached))
    tables = count_tables(storage)
    try:
        client.set(FIGURES_CACHE, json.dumps(tables.__dict__), ex=FIGURES_SECONDS)
    except redis.RedisError:
        log.warning("could not keep the table figures in Redis", exc_info=True)
    return tables


def configured_app() -> Any:
    """The tdc Celery app if this process has made it (``import worker``), else None."""
    from celery import current_app

    app = current_app._get_current_object()
    return app if app.main == "tdc" else None


def read_figures(storage: Storage, client: redis.Redis, app: Any = None) -> Figures:
    """Read every figure ``/metrics`` shows (the console can show the same); ``app``: the Celery
    app whose queues to measure (None: ``configured_app()``; queue depths are left out when there
    is none).  Never raises: a part that cannot be read is None and marked in ``ok``."""
    figures = Figures()
    app = app if app is not None else configured_app()

    def part(name: str, read: Callable[[], T]) -> T | None:
        try:
            value = read()
        except Exception:  # noqa: BLE001 - one part away must not take the others with it
            log.warning("metrics: could not read %s", name, exc_info=True)
            figures.ok[name] = False
            return None
        figures.ok[name] = True
        return value

    cached = part("redis", lambda: _read_redis(client, figures))
    figures.tables = part("tables", lambda: _cached_tables(storage, client, cached))
    figures.tails = part("tails", lambda: _tails(storage))
    figures.reconcile = part("reconcile", lambda: _last_reconcile(storage))
    if app is not None:
        figures.queues = part("broker", lambda: _queues(app))
    return figures


class FiguresCollector(Collector):
    """Prometheus families for the figures of one scrape (read when collected)."""

    def __init__(self, read: Callable[[], Figures]):
        self.read = read

    def describe(self) -> Iterator[Metric]:
        """Every family this collector exports, without samples (no I/O)."""
        return _families(Figures(), time.time())

    def collect(self) -> Iterator[Metric]:
        return _families(self.read(), time.time())


def _buckets(histogram: tuple[list[tuple[float, int]], float]) -> tuple[list[tuple[str, float]], float]:
    buckets, total = histogram
    return [(floatToGoString(bound), float(n)) for bound, n in buckets], total


def _families(figures: Figures, now: float) -> Iterator[Metric]:
    tasks = GaugeMetricFamily("tdc_tasks", "Tasks not DONE in the task tables, by state (counted at most every "
                              f"{FIGURES_SECONDS} s)", labels=["state"])
    failed = GaugeMetricFamily("tdc_failed_tasks", "Unresolved rows of the failed-task table (tdc failed list)")
    quarantined = GaugeMetricFamily("tdc_quarantined_inputs", "Inputs kept in quarantine (tdc quarantine list)")
    age = GaugeMetricFamily("tdc_tables_age_seconds", "Seconds since tdc_tasks, tdc_failed_tasks and "
                            "tdc_quarantined_inputs were counted")
    if figures.tables is not None:
        for state in BACKLOG_STATES:
            tasks.add_metric([state], figures.tables.tasks.get(state, 0))
        failed.add_metric([], figures.tables.failed)
        quarantined.add_metric([], figures.tables.quarantined)
        age.add_metric([], max(0.0, now - figures.tables.counted_at))
    yield from (tasks, failed, quarantined, age)

    steps = HistogramMetricFamily("tdc_step_duration_seconds", "Duration of one chain step batch, by step",
                                  labels=["step"])
    for step, histogram in figures.steps.items():
        buckets, total = _buckets(histogram)
        steps.add_metric([step], buckets, total)
    lag = HistogramMetricFamily("tdc_end_to_end_lag_seconds", "Seconds from a task's newest event (source commit "
                                "or occurred_at) to the chain marking it DONE")
    if figures.lag is not None:
        buckets, total = _buckets(figures.lag)
        lag.add_metric([], buckets, total)
    done = CounterMetricFamily("tdc_tasks_done", "Tasks marked DONE by the chain, by operation", labels=["operation"])
    for operation, n in sorted(figures.done.items()):
        done.add_metric([operation], n)
    alarms = CounterMetricFamily("tdc_alarms", "Alarms raised, by kind", labels=["kind"])
    for kind, n in sorted(figures.alarms.items()):
        alarms.add_metric([kind], n)
    yield from (steps, lag, done, alarms)

    yield from _tail_families(figures.tails or {})
    yield from _consumer_families(figures.consumers)
    yield from _reconcile_families(figures.reconcile)

    queues = GaugeMetricFamily("tdc_queue_messages", "Messages waiting in a tdc broker queue (not those a "
                               "worker holds)", labels=["queue"])
    for queue, n in sorted((figures.queues or {}).items()):
        queues.add_metric([queue], n)
    ok = GaugeMetricFamily("tdc_scrape_ok", "1 when this part of the scrape could be read, 0 when not",
                           labels=["part"])
    for name, read in sorted(figures.ok.items()):
        ok.add_metric([name], 1 if read else 0)
    yield from (queues, ok)


def _tail_families(tails: dict[str, tuple[float, float]]) -> Iterator[Metric]:
    lag = GaugeMetricFamily("tdc_binlog_tail_lag_seconds", "How far the binlog tail was behind the source's "
                            "commits of followed tables when it last stored its position", labels=["tail"])
    source = GaugeMetricFamily("tdc_binlog_tail_source_time_seconds", "Source commit time of the newest change "
                               "on a followed table the tail has taken in", labels=["tail"])
    stored = GaugeMetricFamily("tdc_binlog_tail_stored_time_seconds", "When the tail last stored its position",
                               labels=["tail"])
    for name, (source_time, stored_time) in sorted(tails.items()):
        lag.add_metric([name], max(0.0, stored_time - source_time) if source_time else 0.0)
        source.add_metric([name], source_time)
        stored.add_metric([name], stored_time)
    yield from (lag, source, stored)


def _consumer_families(consumers: dict[str, dict[str, float]]) -> Iterator[Metric]:
    messages = CounterMetricFamily("tdc_consumer_messages", "Messages a tdc consume process took in and "
                                   "acknowledged, by consumer", labels=["consumer"])
    lag = GaugeMetricFamily("tdc_consumer_lag", "Messages waiting in the broker for a consumer when it last "
                            "looked (-1: the broker cannot say)", labels=["consumer"])
    for name, kinds in sorted(consumers.items()):
        messages.add_metric([name], kinds.get("messages", 0))
        if "lag" in kinds:
            lag.add_metric([name], kinds["lag"])
    yield from (messages, lag)


def _reconcile_families(run: dict[str, Any] | None) -> Iterator[Metric]:
    finished = GaugeMetricFamily("tdc_reconcile_last_run_timestamp_seconds",
                                 "When the newest finished reconciliation run ended")
    status = GaugeMetricFamily("tdc_reconcile_last_run_status", "1 for how the newest finished reconciliation "
                               "run ended (clean, fixed, different, error), 0 for the others", labels=["status"])
    differences = GaugeMetricFamily("tdc_reconcile_last_run_differences", "Differences the newest finished "
                                    "reconciliation run found, fixed, and left remaining", labels=["kind"])
    duration = GaugeMetricFamily("tdc_reconcile_last_run_duration_seconds",
                                 "How long the newest finished reconciliation run took")
    if run is not None:
        finished.add_metric([], _epoch(run["finished_at"] or run["started_at"]))
        for name in RECONCILE_STATUSES:
            status.add_metric([name], 1 if run["status"] == name else 0)
        for kind in ("found", "fixed", "remaining"):
            differences.add_metric([kind], run[kind] or 0)
        duration.add_metric([], (run["duration_ms"] or 0) / 1000)
    yield from (finished, status, differences, duration)


def render_metrics(storage: Storage, client: redis.Redis, app: Any = None) -> tuple[bytes, str]:
    """The Prometheus text exposition of every figure, read now (``read_figures``), and its
    content type.  ``app``: the Celery app whose queue depths to include (None: the tdc app this
    process configured, if any).  Never raises for a
    database, Redis or broker that cannot be read (``tdc_scrape_ok``)."""
    registry = CollectorRegistry()
    registry.register(FiguresCollector(lambda: read_figures(storage, client, app)))
    return generate_latest(registry), CONTENT_TYPE


def exported_names() -> set[str]:
    """The names of every family ``render_metrics`` exports (counters without ``_total``)."""
    return {family.name for family in FiguresCollector(Figures).describe()}
