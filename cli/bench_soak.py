"""``tdc bench soak``: many events through intake and real workers, watching worker memory
(DESIGN 8: worker memory stays flat over a million events).

Generated histories are fed in chunks (ingested, their chains submitted, then waited for until
every wide row and order line of the chunk is exact, so the workers are never far behind and a
wrong output stops the run).  The resident memory of every worker process (pool children
included) is summed after the chunks that pass 10%, 50% and 100% of the events; growth is
measured from the 10% sample, after warm-up (imports, connection pools, caches filling).
Workers run with neither ``worker_max_tasks_per_child`` nor ``worker_max_memory_per_child``
set by tdc, so a leak shows here instead of being hidden by recycling.

The last line is ``soak: N events; worker RSS A MB at 10%, B MB at 50%, C MB at 100%; growth G%``;
the command fails when an output is wrong, the pipeline stalls, or growth reaches 10%.
"""

from __future__ import annotations

import os
import sys
import time
from subprocess import Popen

import psutil

from cli.bench_throughput import BACKLOG_ENVIRONMENT, bench_setup
from cli.progress import progress
from demo.check import matching_orders
from demo.history import generate_history
from demo.processes import running, start_beat, start_worker

#: Orders per fed chunk (about nine lines each).
CHUNK_ORDERS = 500
#: Growth of worker memory after warm-up that fails the run.
GROWTH_LIMIT = 0.10
MARKS = (0.1, 0.5, 1.0)


def worker_rss(processes: list[Popen[bytes]]) -> int:
    """Resident bytes of the worker processes and all their children."""
    total = 0
    for process in processes:
        try:
            parent = psutil.Process(process.pid)
            for member in [parent, *parent.children(recursive=True)]:
                total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


def _wait_exact(history, processes: list[Popen[bytes]], timeout: float) -> bool:  # type: ignore[no-untyped-def]
    from chain.wide_rows import read_orders
    from models.storage import get_storage

    started = time.monotonic()
    while time.monotonic() - started < timeout:
        orders, items = read_orders(get_storage(), history.order_ids)
        if matching_orders(history.expected_orders, history.expected_items, orders, items) == len(
                history.expected_orders):
            return True
        if any(p.poll() is not None for p in processes):
            return False
        time.sleep(0.2)
    return False


def bench_soak(events: int, workers: int, concurrency: int, timeout: float, chunk: int = CHUNK_ORDERS) -> int:
    with bench_setup(environment=BACKLOG_ENVIRONMENT) as settings:
        from cli.bench_intake import measure_intake
        from models.storage import get_storage
        from tasks.submit import submit_tasks

        logs = settings.home / "logs"
        env = dict(os.environ)
        pool = [start_worker(env, logs / f"soak-worker-{n}.log", concurrency) for n in range(workers)]
        print(f"soak: {events:,} events through {workers} worker(s) x {concurrency} processes "
              f"on {settings.broker_url.split('@')[-1]}")
        samples: dict[float, int] = {}
        fed, started = 0, time.monotonic()
        with running(pool + [start_beat(env, logs / "soak-beat.log", settings.home / "soak-beat-schedule")]), \
                progress("soak", total=events, unit="events") as shown:
            while fed < events:
                history = generate_history(chunk, malformed=0)
                _, report, _ = measure_intake(get_storage(), history.lines)
                submit_tasks(report.touched)
                if not _wait_exact(history, pool, timeout):
                    shown.log(f"FAILED: a chunk of {chunk} orders was not exact within {timeout:.0f}s; see {logs}")
                    return 1
                fed += len(history.lines)
                shown.update(completed=fed, total=max(events, fed))  # the last chunk may go past
                for mark in MARKS:
                    if mark not in samples and fed >= mark * events:
                        samples[mark] = worker_rss(pool)
                        elapsed = time.monotonic() - started
                        shown.result(f"  {fed:,} events ({mark:.0%}) in {elapsed:.0f}s: worker RSS "
                                     f"{samples[mark] / 2**20:,.1f} MB")
        growth = (samples[1.0] - samples[0.1]) / samples[0.1]
        print(f"soak: {fed:,} events; worker RSS " + ", ".join(
            f"{samples[m] / 2**20:,.1f} MB at {m:.0%}" for m in MARKS) + f"; growth {growth:+.1%}")
        if growth >= GROWTH_LIMIT:
            print(f"FAILED: worker memory grew {growth:.1%} after warm-up (goal: under {GROWTH_LIMIT:.0%})",
                  file=sys.stderr)
            return 1
        return 0
