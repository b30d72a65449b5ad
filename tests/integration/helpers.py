"""Driving the chain in-process against real storage and Redis (no broker): the same plain
functions the Celery tasks call, so storage behaviour is tested without worker timing."""

from __future__ import annotations

import os
import subprocess
import sys

from chain.steps import aggregate_orders, check_tasks, finish_tasks, merge_orders
from intake.receiver import TaskKey, accept_lines, utcnow
from pipeline.dimensions import RedisDimensions
from reliability.leases import TaskLocks
from reliability.rescan import due_tasks


def run_chains(storage, client, keys: set[TaskKey] | list[TaskKey], rounds: int = 50) -> None:  # type: ignore[no-untyped-def]
    """Run check -> merge -> aggregate -> finish for ``keys`` and everything they wake, then rescan until idle."""
    settings = storage.settings
    locks = TaskLocks(client, settings.lock_seconds)
    queue = list(keys)
    for _ in range(rounds):
        if not queue:
            queue = due_tasks(storage, 0, 1, utcnow(), 1000)
            if not queue:
                return
        owned = locks.acquire(queue)
        batch = [{"order_id": o, "operation_type": op, "token": t} for (o, op), t in owned.items()]
        ready, again = check_tasks(storage, locks, settings, batch)
        merged = merge_orders(storage, locks, settings, RedisDimensions(client), ready)
        aggregated = aggregate_orders(storage, locks, settings, merged)
        queue = again + finish_tasks(storage, locks, aggregated)
    raise AssertionError("chains did not settle")


def ingest(storage, client, flow, input_format: str, lines: list[str]):  # type: ignore[no-untyped-def]
    return accept_lines(storage, client, flow, input_format, lines)


def process_history(storage, client, history) -> None:  # type: ignore[no-untyped-def]
    """Ingest a generated history (its change lines, then its payments) and run every chain to rest."""
    from flows.gqsh import ORDER_FLOW

    formats = dict.fromkeys(f for f, _ in history.lines)
    for fmt in formats:
        batch = [line for f, line in history.lines if f == fmt]
        run_chains(storage, client, ingest(storage, client, ORDER_FLOW, fmt, batch).touched)
    run_chains(storage, client, [])


def run_tdc(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    """``tdc ARGUMENTS`` in its own process with ``env`` over this one's environment."""
    return subprocess.run([sys.executable, "-m", "cli.main", *arguments], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=300)


def tdc_output(env: dict[str, str], *arguments: str) -> str:
    """The output of a ``tdc`` command that must succeed."""
    result = run_tdc(env, *arguments)
    assert result.returncode == 0, result.stderr
    return result.stdout
