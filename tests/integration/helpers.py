"""Driving the chain in-process against real storage and Redis (no broker): the same plain
functions the Celery tasks call, so storage behaviour is tested without worker timing."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import event

from chain.inline import ChainsDidNotSettle, run_inline
from dimensions.lookup import RedisDimensions
from intake.receiver import TaskKey, accept_lines, utcnow
from reliability.leases import OrderLeases


def run_chains(storage, client, keys: set[TaskKey] | list[TaskKey], rounds: int = 50) -> None:  # type: ignore[no-untyped-def]
    """Run check -> merge -> aggregate -> finish for ``keys`` and everything they wake, then rescan until idle."""
    try:
        run_inline(storage, client, RedisDimensions(client), keys, rounds, batch=None)
    except ChainsDidNotSettle as error:
        raise AssertionError("chains did not settle") from error


def leased_keys(leases: OrderLeases, keys) -> list[dict]:  # type: ignore[no-untyped-def]
    """Chain keys for ``keys`` whose order's lease could be taken, as ``tasks.submit`` makes them."""
    keys = list(dict.fromkeys(keys))
    tokens = leases.acquire(order_id for order_id, _ in keys)
    return [{"order_id": o, "operation_type": op, "token": tokens[o]} for o, op in keys if o in tokens]


def claimed_keys(storage, leases: OrderLeases, keys, **extra) -> list[dict]:  # type: ignore[no-untyped-def]
    """``leased_keys`` whose orders are also claimed in storage, as a chain's check step leaves them."""
    from reliability.fencing import claim_order

    chain_keys = leased_keys(leases, keys)
    for key in chain_keys:
        with storage.order_transaction(key["order_id"]) as connection:
            assert claim_order(connection, key["order_id"], key["token"], utcnow())
    return [{**key, **extra} for key in chain_keys]


def ingest(storage, client, flow, input_format: str, lines: list[str]):  # type: ignore[no-untyped-def]
    return accept_lines(storage, client, flow, input_format, lines)


def process_history(storage, client, history) -> None:  # type: ignore[no-untyped-def]
    """Ingest a generated history (its change lines, then its payments) and run every chain to rest."""
    from flows.registry import ACCEPTED as ORDER_FLOW

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


@contextmanager
def round_trips(engine) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    """The statement text of every round trip ``engine`` makes inside the block."""
    sent: list[str] = []

    def seen(*args) -> None:  # type: ignore[no-untyped-def]
        sent.append(args[2])

    event.listen(engine, "before_cursor_execute", seen)
    try:
        yield sent
    finally:
        event.remove(engine, "before_cursor_execute", seen)
