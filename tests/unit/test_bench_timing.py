"""``tdc bench throughput`` times both sides from the moment the workers are ready."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cli.bench_throughput import FALLBACK, RECHECK, _exact_after, _log, _log_sizes, _ready


def test_only_a_ready_line_written_after_the_start_counts(tmp_path: Path) -> None:
    # Given a worker log that holds the previous run's "ready." already
    _log(tmp_path, 0).write_text("[..: INFO/MainProcess] tdc-1@vm ready.\n")
    sizes = _log_sizes(tmp_path, 1)
    # When the new worker logs its own a moment later
    def start() -> None:
        time.sleep(0.3)
        with open(_log(tmp_path, 0), "a") as log:
            log.write("[..: INFO/MainProcess] Connected to redis://\n[..: INFO/MainProcess] tdc-2@vm ready.\n")

    began = time.monotonic()
    threading.Thread(target=start).start()
    ready_at = _ready([], tmp_path, sizes, timeout=10)
    # Then the timing starts at the new line, not at the old one
    assert ready_at - began >= 0.3


def test_a_worker_that_never_gets_ready_is_an_error_naming_the_logs(tmp_path: Path) -> None:
    _log(tmp_path, 0).write_text("")
    with pytest.raises(RuntimeError, match=f"did not start within 0s; see {tmp_path}"):
        _ready([], tmp_path, [0], timeout=0.1)


def test_every_worker_must_be_ready(tmp_path: Path) -> None:
    # Given two workers of which only the first has logged that it is ready
    _log(tmp_path, 0).write_text("x ready.\n")
    _log(tmp_path, 1).write_text("starting\n")
    # Then the bench keeps waiting (here: until its timeout)
    with pytest.raises(RuntimeError):
        _ready([], tmp_path, [0, 0], timeout=0.2)


class _Run:
    """A pipeline as the bench sees it: a DONE count that grows with time, and outputs that are
    exact from a given moment on; every full read of the outputs is counted."""

    def __init__(self, started: float, per_second: float, exact_from: float) -> None:
        self.started, self.per_second, self.exact_from = started, per_second, exact_from
        self.reads: list[float] = []

    def done(self) -> int:
        return int((time.monotonic() - self.started) * self.per_second)

    def is_exact(self) -> tuple[bool, float]:
        now = time.monotonic()
        self.reads.append(now - self.started)
        return now - self.started >= self.exact_from, now


def test_the_outputs_are_read_in_full_only_once_the_done_count_says_everything_ran() -> None:
    # Given 100 operations DONE after 0.4 s, and outputs exact from then on
    started = time.monotonic()
    run = _Run(started, per_second=250, exact_from=0.4)
    # When the bench waits for them
    done_at = _exact_after(run.done, 100, run.is_exact, started, timeout=10, alive=lambda: True)
    # Then it read the outputs once, when the count said so, and times the run to that read
    assert len(run.reads) == 1 and run.reads[0] >= 0.4
    assert done_at is not None and 0.4 <= done_at - started < 0.4 + 0.2


def test_a_count_that_runs_ahead_of_the_outputs_never_decides_the_result() -> None:
    # Given a count that says everything ran at once (a task counted twice) but outputs exact
    # only after 1.2 s
    started = time.monotonic()
    run = _Run(started, per_second=10_000, exact_from=1.2)
    done_at = _exact_after(run.done, 100, run.is_exact, started, timeout=10, alive=lambda: True)
    # Then the bench read again, at most every RECHECK seconds, until they were exact
    assert done_at is not None and done_at - started >= 1.2
    assert 2 <= len(run.reads) <= 1.2 / RECHECK + 2


def test_a_count_that_never_arrives_still_ends_on_exact_outputs() -> None:
    # Given a DONE count Redis lost (it stays 0) and outputs exact from the start
    started = time.monotonic() - FALLBACK  # (as if FALLBACK seconds had passed)
    run = _Run(started, per_second=0, exact_from=0)
    # Then the fallback read finds them
    assert _exact_after(run.done, 100, run.is_exact, started, timeout=FALLBACK + 10, alive=lambda: True) is not None
    assert len(run.reads) == 1


def test_a_worker_that_exits_or_a_timeout_ends_the_wait_without_a_time() -> None:
    started = time.monotonic()
    run = _Run(started, per_second=0, exact_from=100)
    assert _exact_after(run.done, 100, run.is_exact, started, timeout=10, alive=lambda: False) is None
    assert _exact_after(run.done, 100, run.is_exact, started, timeout=0.1, alive=lambda: True) is None
    assert run.reads == []
