"""``tdc bench throughput`` times both sides from the moment the workers are ready."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from cli.bench_throughput import _log, _log_sizes, _ready


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
