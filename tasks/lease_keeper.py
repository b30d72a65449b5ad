"""Keeping the order leases of chain messages: long while the broker holds them, short while a
worker (or a submitter) does.

A chain's lease is the long queued one only once a message carrying it has been published: the
broker holds it then, and does not lose it.  From the moment a worker reserves the message until
it is acknowledged, the worker's consumer renews the short running lease every third of
``TDC_LEASE_SECONDS``; a step's own keeper does the same while it runs.  A submitter or a step
that dies before its next message is published leaves a running lease, which lapses quickly.
So a worker killed with messages in hand (prefetched ones included,
which a Redis broker hides for its whole visibility timeout) stops renewing, and its orders are
taken over a lease later, while a backlog in the broker never makes the rescan take over chains
that are merely waiting their turn.
"""

from __future__ import annotations

import logging
from types import SimpleNamespace
from typing import Any

from celery import bootsteps
from celery.signals import after_task_publish, task_received
from celery.worker import state

from chain.keys import has_token, well_formed
from models.redis_store import get_redis
from reliability.leases import OrderLeases
from settings import get_settings

log = logging.getLogger(__name__)

#: The chain steps whose messages carry order keys with fencing tokens.
CHAIN_STEPS = frozenset({"tdc.check", "tdc.merge", "tdc.aggregate", "tdc.finish"})


def held_orders(requests: Any) -> dict[str, int]:
    """order -> token of every chain key in ``requests`` (worker requests: reserved or active)."""
    owned: dict[str, int] = {}
    for request in requests:
        if request.task_name not in CHAIN_STEPS:
            continue
        keys = (request.kwargs or {}).get("keys")
        if keys is None and request.args:
            keys = request.args[0]
        for key in keys if isinstance(keys, list) else []:
            if well_formed(key) and has_token(key):
                owned[key["order_id"]] = key["token"]
    return owned


def renew(requests: Any) -> None:
    """Renew the running lease of every order in ``requests``; never fails the consumer."""
    try:
        owned = held_orders(requests)
        if owned:
            OrderLeases(get_redis(), get_settings()).renew(owned)
    except Exception:  # noqa: BLE001 - a missed renewal is retried in a third of a lease
        log.exception("could not renew the leases of the chain messages this worker holds")


@after_task_publish.connect
def _on_published(sender: str | None = None, body: Any = None, **_: Any) -> None:
    """A chain message is in the broker: its orders get the queued lease (protocol 2 bodies are
    ``(args, kwargs, embed)``)."""
    if sender not in CHAIN_STEPS or not isinstance(body, tuple | list) or len(body) < 2:
        return
    try:
        owned = held_orders([SimpleNamespace(task_name=sender, args=body[0], kwargs=body[1])])
        if owned:
            OrderLeases(get_redis(), get_settings()).renew(owned, queued=True)
    except Exception:  # noqa: BLE001 - the running lease stays; a long wait in the queue may be taken over
        log.exception("could not give %s's orders the queued lease", sender)


@task_received.connect
def _on_received(request: Any = None, **_: Any) -> None:
    """A message just reserved: from now on its orders cost a lease, not a queued lease, if we die."""
    if request is not None:
        renew([request])


class KeepHeldLeases(bootsteps.StartStopStep):
    """Consumer bootstep: every third of a lease, renew the orders of every reserved or running
    chain message (on the consumer's timer, in its event loop: the requests it reads are only
    changed there)."""

    requires = {"celery.worker.consumer.tasks:Tasks"}

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self.timer_entry: Any = None

    def start(self, consumer: Any) -> None:
        interval = get_settings().lease_seconds / 3
        self.timer_entry = consumer.timer.call_repeatedly(interval, self.tick, priority=10)

    def tick(self) -> None:
        renew(list(state.reserved_requests))

    def stop(self, consumer: Any) -> None:
        if self.timer_entry is not None:
            self.timer_entry.cancel()
            self.timer_entry = None
