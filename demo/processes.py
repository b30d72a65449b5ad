"""Real worker and beat processes for the demo and the end-to-end tests, always cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

#: Seconds a process gets to stop after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 15


def _spawn(arguments: list[str], env: Mapping[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child's lifetime
    return subprocess.Popen(
        [sys.executable, "-m", "celery", "-A", "worker", *arguments],
        env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def start_worker(env: Mapping[str, str], log_path: Path, concurrency: int = 2) -> subprocess.Popen[bytes]:
    """A worker consuming every queue (no -Q), with a unique node name."""
    return _spawn(["worker", "--loglevel", "INFO", "--concurrency", str(concurrency),
                   "--hostname", f"tdc-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"],
                  env, log_path)


def start_beat(env: Mapping[str, str], log_path: Path, schedule: Path) -> subprocess.Popen[bytes]:
    return _spawn(["beat", "--loglevel", "INFO", "--schedule", str(schedule)], env, log_path)


def stop(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM each process (a warm shutdown: a worker finishes what it holds and stops its pool),
    wait, then SIGKILL its whole process group: nothing stays behind."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(process.pid, signal.SIGKILL)  # children of a worker that outlived it
        except ProcessLookupError:
            pass
        process.wait()


@contextmanager
def running(processes: list[subprocess.Popen[bytes]]) -> Iterator[list[subprocess.Popen[bytes]]]:
    try:
        yield processes
    finally:
        stop(processes)
