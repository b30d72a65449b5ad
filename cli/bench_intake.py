"""``tdc bench intake``: lines per second through intake, as ``tdc ingest`` feeds them, into the
configured storage (no broker, no chains), and the SQL statements each line costs.

A generated history (its Canal or Debezium lines and its payment writes, displaced and with
duplicates, as the demo makes it) is ingested in batches of ``tdc ingest``'s size.  Every line
must get a verdict: the bench fails when the counts do not add up to the lines fed.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from cli.progress import progress
from demo.history import generate_history
from flows.registry import ACCEPTED
from intake.receiver import IntakeReport, accept_lines
from models.redis_store import get_redis
from models.storage import Storage, get_storage

#: Lines per accept_lines call, as ``tdc ingest`` sends them.
BATCH = 500


@contextmanager
def counted_statements(storage: Storage) -> Iterator[list[int]]:
    """Count the statements every shard engine executes inside the block."""
    seen = [0]

    def count(*_: Any) -> None:
        seen[0] += 1

    engines = {id(storage.shard_engine(d)): storage.shard_engine(d) for d in range(len(storage.settings.db_urls))}
    for engine in engines.values():
        event.listen(engine, "before_cursor_execute", count)
    try:
        yield seen
    finally:
        for engine in engines.values():
            event.remove(engine, "before_cursor_execute", count)


def measure_intake(storage: Storage, lines: list[tuple[str, str]], batch: int = BATCH,
                   advance: Callable[[int], None] = lambda _: None) -> tuple[float, IntakeReport, int]:
    """Ingest ``lines`` ((format, line) in arrival order) as ``tdc ingest`` would read one file
    per format, in batches; the seconds, the combined report and the statements executed.
    ``advance`` hears how many lines each batch held."""
    client = get_redis()
    total = IntakeReport()
    by_format: dict[str, list[str]] = {}
    for input_format, line in lines:
        by_format.setdefault(input_format, []).append(line)
    with counted_statements(storage) as statements:
        started = time.perf_counter()
        for input_format, chunk in by_format.items():
            for start in range(0, len(chunk), batch):
                total.add(accept_lines(storage, client, ACCEPTED, input_format, chunk[start:start + batch]))
                advance(len(chunk[start:start + batch]))
        elapsed = time.perf_counter() - started
    return elapsed, total, statements[0]


def bench_intake(orders: int, input_format: str) -> int:
    import worker  # noqa: F401 - starts the embedded Redis in the default setup
    from models.schema import init_storage, sizing_advice

    storage = get_storage()
    init_storage(storage)  # safe to run again
    for advice in sizing_advice(storage):
        print(f"warning: {advice}")
    history = generate_history(orders, input_format=input_format)
    lines = history.lines
    print(f"intake of {len(lines)} lines ({orders} orders; the {input_format} file, then the business file) "
          f"in batches of {BATCH}")
    with progress("intake", total=len(lines), unit="lines") as shown:
        elapsed, report, statements = measure_intake(storage, lines, advance=shown.advance)
    print(f"  {report.summary()}")
    verdicts = report.accepted + report.duplicated + report.stale + report.quarantined + report.ambiguous \
        + report.ignored + report.schema_changes
    if report.lines != len(lines) or verdicts != len(lines):
        print(f"FAILED: {len(lines)} lines fed, {report.lines} read, {verdicts} verdicts")
        return 1
    print(f"  {statements / len(lines):.1f} SQL statements per line")
    print(f"intake: {len(lines) / elapsed:,.0f} lines/s ({elapsed:.2f} s)")
    return 0
