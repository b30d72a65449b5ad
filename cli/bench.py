"""``tdc bench rescan``: the cost of one idle rescan pass against its DESIGN budget.

DESIGN 8: an idle pass over all task tables costs no more than twice as many indexed
single-table selects.  Both are timed here, on the same databases, in one run.
"""

from __future__ import annotations

import time

from cli.progress import progress
from intake.receiver import utcnow
from models.shards import database_for_shard, task_table_name
from models.storage import get_storage
from reliability.rescan import due_tasks

#: Passes of each measurement; the best is reported (the others absorb cache warm-up).
ROUNDS = 3


def _rescan_pass() -> tuple[float, int]:
    storage = get_storage()
    settings = storage.settings
    started = time.perf_counter()
    due = 0
    for job in range(settings.rescan_shards):
        due += len(due_tasks(storage, job, settings.rescan_shards, utcnow(), settings.rescan_batch))
    return time.perf_counter() - started, due


def _indexed_selects() -> float:
    storage = get_storage()
    shards = storage.settings.shards
    started = time.perf_counter()
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            for shard in range(shards):
                if storage.settings.db_urls[database_for_shard(shard, shards)] != storage.settings.db_urls[database]:
                    continue
                mark = "?" if connection.dialect.paramstyle == "qmark" else "%s"
                connection.exec_driver_sql(f"SELECT id FROM {task_table_name(shard)} WHERE id = {mark}", (0,)).first()
    return time.perf_counter() - started


def bench_rescan() -> int:
    settings = get_storage().settings
    print(f"rescan pass over {settings.shards} task tables in {settings.rescan_shards} jobs "
          f"({len(get_storage().distinct_databases())} distinct databases)")
    passes: list[tuple[float, int]] = []
    timings: list[float] = []
    with progress("rescan bench", total=2 * ROUNDS, unit="rounds") as shown:
        for _ in range(ROUNDS):
            passes.append(_rescan_pass())
            shown.advance(note="rescan passes")
        for _ in range(ROUNDS):
            timings.append(_indexed_selects())
            shown.advance(note="indexed selects")
    selects = min(timings)
    best, due = min(passes)
    print(f"  rescan pass:               {best * 1000:8.1f} ms  ({due} due tasks found)")
    print(f"  {settings.shards} indexed selects:     {selects * 1000:8.1f} ms")
    ratio = best / selects if selects else float("inf")
    verdict = "within" if ratio <= 2 else "OVER"
    print(f"  ratio: {ratio:.2f} ({verdict} the DESIGN budget of 2.0)")
    return 0
