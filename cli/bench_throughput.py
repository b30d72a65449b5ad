"""``tdc bench throughput``: full order operations per second against Celery's own rate for empty
tasks, on the same broker and the same worker shape, in one run (DESIGN 8).

1. Empty tasks: ``--tasks`` of ``tdc.bench_noop`` (one Redis INCR each) are published with no
   worker running; the workers are started and timed until every one has run.
2. The pipeline: a generated history is ingested with no worker running (intake's rate is
   measured on the way), then the workers and beat are started and timed until every wide row,
   order line and ADS row is exactly what the history expects.  Operations are the tasks the
   history created (one per order and operation).  While they run, the bench reads only the
   workers' DONE count (one Redis hash, as the empty-task side reads one counter) and reads the
   outputs in full when it says everything is done: polling every output costs CPU the
   workers share on a small machine (on a 2-core one a quarter of a core, about a fifth
   off the rate).

Both sides are timed from the moment every worker has logged that it is ready (its pool is up
and it consumes), counting only the work done after it: a worker's start-up (imports, forking its pool:
seconds on a small machine) is the same constant on both sides and no part of a rate, and
counting it weighed it by the work done on each side (5,000 empty tasks against about 2,900
operations for 1,000 orders).  It is printed.  The last line is
``throughput: ratio R (tdc X ops/s vs no-op Y tasks/s; intake Z lines/s)``; the command fails when
an output is wrong or the pipeline does not drain.
"""

from __future__ import annotations

import os
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from cli.progress import progress
from demo.check import aggregate_differences, differences, expected_aggregates
from demo.history import generate_history
from demo.processes import running, start_beat, start_worker

if TYPE_CHECKING:
    from settings import Settings

#: Seconds between two reads of the workers' DONE count, between two full reads of the outputs
#: once the count says everything is done, and between two full reads whatever it says.
POLL, RECHECK, FALLBACK = 0.05, 0.5, 5.0
#: Short back-offs, so a wait does not dominate a short run.  The rescan runs at its configured
#: interval (30 s by default): the chain's fast path needs none, and a pass every few seconds
#: would weigh a production safety net by a tenfold in a run of seconds (a pass over 4096
#: idle tables is about a second of worker time).  Set TDC_RESCAN_INTERVAL_SECONDS to see it.
BENCH_ENVIRONMENT = {"TDC_RETRY_BASE_SECONDS": "0.5"}
#: As the demo, for benches that wait chunk after chunk: frequent rescans too.
BACKLOG_ENVIRONMENT = {**BENCH_ENVIRONMENT, "TDC_RESCAN_INTERVAL_SECONDS": "3"}


def _workers(env: dict[str, str], logs: Path, workers: int, concurrency: int) -> list:  # type: ignore[type-arg]
    return [start_worker(env, _log(logs, n), concurrency) for n in range(workers)]


def _log(logs: Path, worker: int) -> Path:
    return logs / f"bench-worker-{worker}.log"


def _log_sizes(logs: Path, workers: int) -> list[int]:
    return [_log(logs, n).stat().st_size if _log(logs, n).exists() else 0 for n in range(workers)]


def _ready(processes: list, logs: Path, sizes: list[int], timeout: float) -> float:  # type: ignore[type-arg]
    """Wait until every worker has logged that it is ready (its pool is up and it consumes:
    Celery's ``<node> ready.``) past what its log held before it started; the monotonic time."""
    started = time.monotonic()
    waiting = dict(enumerate(sizes))
    while True:
        for worker, size in list(waiting.items()):
            with open(_log(logs, worker), "rb") as log:
                log.seek(size)
                if b" ready." in log.read():
                    del waiting[worker]
        if not waiting:
            return time.monotonic()
        if time.monotonic() - started > timeout or any(p.poll() is not None for p in processes):
            raise RuntimeError(f"the workers did not start within {timeout:.0f}s; see {logs}")
        time.sleep(0.02)


def _noop_rate(env: dict[str, str], logs: Path, tasks: int, workers: int, concurrency: int,
               timeout: float) -> tuple[float, float]:
    """Empty tasks per second once the workers are ready, and the seconds they took to start."""
    from models.redis_store import get_redis
    from tasks.bench import noop

    client = get_redis()
    counter = f"tdc:bench:noop:{uuid.uuid4().hex[:8]}"
    for _ in range(tasks):
        noop.apply_async(args=(counter,))
    launched, sizes = time.monotonic(), _log_sizes(logs, workers)
    with running(_workers(env, logs, workers, concurrency)) as processes, \
            progress("empty tasks", total=tasks, unit="tasks run") as shown:
        started = _ready(processes, logs, sizes, timeout)
        before = int(client.get(counter) or 0)
        while (done := int(client.get(counter) or 0)) < tasks:
            if time.monotonic() - started > timeout or any(p.poll() is not None for p in processes):
                raise RuntimeError(f"empty tasks did not all run within {timeout:.0f}s "
                                   f"({done} of {tasks}); see {logs}")
            shown.update(completed=done)
            time.sleep(0.05)
        elapsed = time.monotonic() - started
        shown.update(completed=tasks)
    client.delete(counter)
    return (tasks - before) / elapsed, started - launched


def _outputs_differ(history, before) -> tuple[list[str], float]:  # type: ignore[no-untyped-def]
    """The differences between the outputs and what ``history`` must produce, and the monotonic
    time at which the outputs compared were read (they were that way then)."""
    from chain.wide_rows import read_orders
    from models.storage import get_storage

    orders, items = read_orders(get_storage(), history.order_ids)
    after = _aggregates()
    read_at = time.monotonic()
    problems = differences(history.expected_orders, orders, "dwd_order")
    problems += differences(history.expected_items, items, "dwd_order_item")
    expected = expected_aggregates(history.expected_orders, history.expected_items)
    return problems + aggregate_differences(expected, before, after), read_at


def _done_count(client) -> int:  # type: ignore[no-untyped-def]
    """Tasks marked DONE so far, by every worker (the figure ``/metrics`` reads)."""
    from chain.timings import DONE_COUNTS

    return sum(int(n) for n in client.hvals(DONE_COUNTS))


def _exact_after(done_count: Callable[[], int], operations: int, is_exact: Callable[[], tuple[bool, float]],
                 started: float, timeout: float, alive: Callable[[], bool],
                 advance: Callable[[int], object] = lambda _: None) -> float | None:
    """Wait until the outputs are exact; the monotonic time they were read exact, None on a
    timeout or when ``alive()`` says a process exited.

    The outputs are read in full (``is_exact``: every wide row, line and ADS cell, costly, on
    the same CPUs as the workers) only when ``done_count()`` has reached ``operations``, then at most
    every ``RECHECK`` seconds; and every ``FALLBACK`` seconds whatever the count says (a count
    Redis lost, or one that counts a task twice, never decides the result).  In between it reads
    one Redis hash, as the empty-task side reads one counter."""
    last_check = started
    signalled = False
    while True:
        now = time.monotonic()
        done = done_count()
        advance(done)
        due = (done >= operations and (not signalled or now - last_check >= RECHECK)) or now - last_check >= FALLBACK
        if due:
            signalled = signalled or done >= operations
            last_check = now
            exact, read_at = is_exact()
            if exact:
                return read_at
        if now - started > timeout or not alive():
            return None
        time.sleep(POLL)


def _is_exact(history, before) -> tuple[bool, float]:  # type: ignore[no-untyped-def]
    problems, read_at = _outputs_differ(history, before)
    return not problems, read_at


def _aggregates():  # type: ignore[no-untyped-def]
    from demo.check import ORDER_ADS
    from models.storage import get_storage
    from warehouse.aggregates import read_aggregates

    with get_storage().dws_engine.connect() as connection:
        return read_aggregates(connection, tables=ORDER_ADS)


def _done_operations(storage, keys) -> int:  # type: ignore[no-untyped-def]
    """How many of the (order, operation) ``keys`` are DONE."""
    from chain.task_state import tasks_of
    from models.sharded import TaskStatus

    wanted, done = set(keys), 0
    for database, shards in storage.orders_by_database({order_id for order_id, _ in wanted}).items():
        with storage.read_engine(database).connect() as connection:
            done += sum(1 for order_id, tasks in tasks_of(connection, shards).items()
                        for operation, task in tasks.items()
                        if (order_id, operation) in wanted and task.status == TaskStatus.DONE)
    return done


def _pipeline_rate(env: dict[str, str], logs: Path, home: Path, orders: int, workers: int, concurrency: int,
                   timeout: float) -> tuple[float, float, int, list[str]]:
    from cli.bench_intake import measure_intake
    from models.redis_store import get_redis
    from models.storage import get_storage
    from tasks.submit import submit_tasks

    history = generate_history(orders)
    before = _aggregates()
    with progress("intake", total=len(history.lines), unit="lines") as shown:
        seconds, report, _ = measure_intake(get_storage(), history.lines, advance=shown.advance)
    submit_tasks(report.touched)
    operations = len(report.touched)
    client = get_redis()
    done_before = _done_count(client)
    sizes = _log_sizes(logs, workers)
    with running(_workers(env, logs, workers, concurrency)
                 + [start_beat(env, logs / "bench-beat.log", home / "bench-beat-schedule")]) as processes, \
            progress("pipeline", total=operations, unit="tasks DONE") as shown:
        started = _ready(processes, logs, sizes, timeout)
        # (Typically none: a step of hundreds of keys takes longer than that.)
        operations -= _done_operations(get_storage(), report.touched)
        done_at = _exact_after(lambda: _done_count(client) - done_before, len(report.touched),
                               lambda: _is_exact(history, before), started, timeout,
                               alive=lambda: all(p.poll() is None for p in processes),
                               advance=lambda done: shown.update(completed=min(done, len(report.touched))))
        if done_at is None:
            problems, _ = _outputs_differ(history, before)
            return 0.0, len(history.lines) / seconds, operations, problems or [
                f"a worker or beat exited; see {logs}"]
        elapsed = done_at - started
    return operations / elapsed, len(history.lines) / seconds, operations, []


@contextmanager
def bench_setup(broker: str | None = None, environment: dict[str, str] = BENCH_ENVIRONMENT) -> Iterator[Settings]:
    """What a bench that runs real workers needs, for its duration: ``environment``'s defaults
    (short back-offs), ``broker`` if given, the embedded Redis when
    configured, the Celery app configured and storage initialised; yields the settings."""
    for name, value in environment.items():
        os.environ.setdefault(name, value)
    if broker:
        os.environ["TDC_BROKER_URL"] = broker
    from settings import get_settings

    get_settings.cache_clear()
    settings = get_settings()
    from models.embedded import ensure_embedded_redis, stop_embedded_redis
    from models.schema import init_storage
    from models.storage import get_storage

    started_redis = ensure_embedded_redis(settings) if settings.embedded_redis else False
    try:
        import worker  # noqa: F401 - configures the Celery app before anything is published

        init_storage(get_storage())
        yield settings
    finally:
        if started_redis:
            stop_embedded_redis(settings)


def bench_throughput(orders: int, broker: str | None, workers: int, concurrency: int, tasks: int,
                     timeout: float) -> int:
    with bench_setup(broker) as settings:
        logs = settings.home / "logs"
        env = dict(os.environ)
        print(f"throughput on {settings.broker_url.split('@')[-1]}: {workers} worker(s) x {concurrency} processes")
        noop_rate, startup = _noop_rate(env, logs, tasks, workers, concurrency, timeout)
        print(f"  workers ready {startup:.1f}s after their start (not timed, on either side)")
        print(f"  empty tasks: {tasks} in {tasks / noop_rate:.1f}s = {noop_rate:,.0f} tasks/s")
        rate, intake_rate, operations, problems = _pipeline_rate(env, logs, settings.home, orders, workers,
                                                                 concurrency, timeout)
        if problems:
            for problem in problems[:20]:
                print(f"  DIFFERENCE {problem}")
            print(f"FAILED: the pipeline did not produce exact outputs within {timeout:.0f}s", file=sys.stderr)
            return 1
        print(f"  pipeline: {operations} operations of {orders} orders exact in {operations / rate:.1f}s")
        print(f"throughput: ratio {rate / noop_rate:.2f} (tdc {rate:,.0f} ops/s vs no-op {noop_rate:,.0f} tasks/s; "
              f"intake {intake_rate:,.0f} lines/s)")
        return 0
