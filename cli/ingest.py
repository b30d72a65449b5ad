"""``tdc ingest``: JSON lines from a file or stdin, in batches, through intake; chains submitted."""

from __future__ import annotations

import os
import stat
import sys
from collections.abc import Iterator
from typing import TextIO

from cli.progress import progress

#: Lines accepted per intake transaction: large enough to share commit cost, small enough
#: that an interrupted ingest loses little work and progress is visible.
INGEST_BATCH = 500


def batches(stream: TextIO, size: int) -> Iterator[tuple[list[str], int]]:
    """Lines of ``stream`` without their newline, ``size`` at a time, with the bytes they took."""
    batch: list[str] = []
    read = 0
    for line in stream:
        batch.append(line.rstrip("\n"))
        read += len(line) if line.isascii() else len(line.encode("utf-8"))
        if len(batch) >= size:
            yield batch, read
            batch, read = [], 0
    if batch:
        yield batch, read


def _size(stream: TextIO) -> int | None:
    """Bytes of the stream when it is a regular file (a file named, or stdin redirected from
    one); None for a pipe or a terminal."""
    try:
        status = os.fstat(stream.fileno())
    except (OSError, ValueError):
        return None
    return status.st_size if stat.S_ISREG(status.st_mode) else None


def ingest_file(path: str, input_format: str, every_batch: bool) -> int:
    """Ingest ``path`` (``-`` for stdin); prints the summary on stdout.  Progress goes to stderr:
    a bar on a terminal, a line now and then otherwise, and with ``every_batch`` the running
    counts after every batch is committed and its chains submitted (plain lines, for scripts
    that watch them)."""
    import worker  # noqa: F401 - configures the Celery app the chains are sent with
    from flows.registry import ACCEPTED
    from intake.receiver import IntakeReport, accept_lines
    from models.redis_store import get_redis
    from models.storage import get_storage
    from tasks.submit import submit_tasks

    total = IntakeReport()
    submitted = 0
    stream = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
    with stream, progress(f"ingest {'stdin' if path == '-' else path}", total=_size(stream), unit="bytes") as shown:
        for batch, read in batches(stream, INGEST_BATCH):
            report = accept_lines(get_storage(), get_redis(), ACCEPTED, input_format, batch)
            submitted += submit_tasks(report.touched)
            total.add(report)
            shown.advance(read, note=f"{total.lines:,} lines, {total.accepted:,} accepted, "
                                     f"{total.quarantined:,} quarantined")
            if every_batch:
                shown.log(f"  {total.summary()}")
        if shown.total:
            shown.update(completed=shown.total)  # lines ending \r\n were read as one byte shorter
    print(f"{total.summary()}; {submitted} tasks submitted")
    for reason, count in sorted(total.reasons.items(), key=lambda kv: -kv[1])[:10]:
        print(f"  quarantined {count}x: {reason}")
    return 0
