"""Real worker and beat processes for the demo and the end-to-end tests, always cleaned up."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

#: Seconds a process gets to stop after SIGTERM before it is killed.
STOP_GRACE_SECONDS = 15


def _spawn(arguments: list[str], env: Mapping[str, str], log_path: Path,
           program: tuple[str, ...] = ("celery", "-A", "worker")) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - owned by the child's lifetime
    return subprocess.Popen(
        [sys.executable, "-m", *program, *arguments],
        env=dict(env), stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )


def start_worker(env: Mapping[str, str], log_path: Path, concurrency: int = 2) -> subprocess.Popen[bytes]:
    """A worker consuming every queue (no -Q), with a unique node name."""
    return _spawn(["worker", "--loglevel", "INFO", "--concurrency", str(concurrency),
                   "--hostname", f"tdc-{uuid.uuid4().hex[:8]}@%h", "--without-gossip", "--without-mingle"],
                  env, log_path)


def start_beat(env: Mapping[str, str], log_path: Path, schedule: Path) -> subprocess.Popen[bytes]:
    return _spawn(["beat", "--loglevel", "INFO", "--schedule", str(schedule)], env, log_path)


def start_console(env: Mapping[str, str], log_path: Path, port: int, host: str = "127.0.0.1",
                  ready_seconds: float = 60) -> subprocess.Popen[bytes]:
    """``tdc serve`` on ``host:port``, returned once it accepts connections."""
    process = _spawn(["serve", "--host", host, "--port", str(port), "--log-level", "warning"], env, log_path,
                     program=("cli.main",))
    deadline = time.monotonic() + ready_seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"tdc serve exited with {process.returncode}; see {log_path}")
        try:
            socket.create_connection((host, port), timeout=1).close()
            return process
        except OSError:
            time.sleep(0.2)
    stop([process])
    raise RuntimeError(f"tdc serve did not listen on {host}:{port} within {ready_seconds:.0f}s; see {log_path}")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


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
