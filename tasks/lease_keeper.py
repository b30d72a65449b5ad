"""Keeping the order leases of chain messages: long while the broker holds them, short while a
worker (or a submitter) does.

A chain's lease becomes the long queued one just before a message carrying it is published, so
that it is in place before any worker can receive the message (set after publishing, it would race
the receiving worker: it could stretch the lease of a step already running to the queued one, or
bring back a lease the chain already released, and hold the order for nobody for half an hour).
If the publish fails, the lease goes back to the running one when the step ends (a submitter
releases it).  From the moment a worker reserves the message until it is acknowledged, the
worker's consumer renews the short running lease every third of ``TDC_LEASE_SECONDS``; a step's
own keeper does the same while it runs.  These renewals never bring back a lease that is gone:
the chain may have released it.  A submitter or a step that dies before its next message is
published leaves a running lease, which lapses quickly (one that dies in the moment between
setting the queued lease and publishing, or a worker that dies between taking a message and
saying so, leaves a queued lease for nobody: the rescan takes it over once the chain queues are
empty, ``tasks.scheduled.rescan_slice``).  So a worker killed with messages in hand
(prefetched ones included, which a Redis broker hides for its whole visibility timeout) stops
renewing, and its orders are taken over a lease later, while a backlog in the broker never makes
the rescan take over chains that are merely waiting their turn.
"""

from __future__ import annotations

import logging
import threading
from types import SimpleNamespace
from typing import Any

from celery import bootsteps
from celery.signals import after_task_publish, before_task_publish, task_postrun, task_received
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
    """Renew the running lease of every order in ``requests`` (a lease already gone stays gone);
    never fails the consumer."""
    try:
        owned = held_orders(requests)
        if owned:
            OrderLeases(get_redis(), get_settings()).renew(owned, revive=False)
    except Exception:  # noqa: BLE001 - a missed renewal is retried in a third of a lease
        log.exception("could not renew the leases of the chain messages this worker holds")


#: The orders of the chain message this thread is publishing, until the broker has it.
_publishing = threading.local()


def _owned_by(sender: str | None, body: Any) -> dict[str, int]:
    """order -> token of a chain message's body (protocol 2: ``(args, kwargs, embed)``)."""
    if sender not in CHAIN_STEPS or not isinstance(body, tuple | list) or len(body) < 2:
        return {}
    return held_orders([SimpleNamespace(task_name=sender, args=body[0], kwargs=body[1])])


def _set_lease(owned: dict[str, int], queued: bool) -> None:
    try:
        OrderLeases(get_redis(), get_settings()).renew(owned, queued=queued, revive=False)
    except Exception:  # noqa: BLE001 - the lease stays as it was: a running one lapses quickly
        log.exception("could not give the %s lease to %d orders", "queued" if queued else "running", len(owned))


@before_task_publish.connect
def _on_publishing(sender: str | None = None, body: Any = None, **_: Any) -> None:
    """A chain message is about to go into the broker: its orders get the queued lease now, before
    any worker can receive it."""
    owned = _owned_by(sender, body)
    _publishing.owned = owned
    if owned:
        _set_lease(owned, queued=True)


@after_task_publish.connect
def _on_published(**_: Any) -> None:
    """The broker has the message: its queued lease stands."""
    _publishing.owned = {}


def give_back_unpublished() -> None:
    """The chain message this thread began to publish never reached the broker: its orders go
    back to the running lease, so the rescan takes them over a lease from now, not half an hour."""
    owned = getattr(_publishing, "owned", {})
    _publishing.owned = {}
    if owned:
        _set_lease(owned, queued=False)


@task_postrun.connect
def _after_step(**_: Any) -> None:
    """A step's next message is published before the step ends (``task_postrun``): if that
    publish failed, give its orders back the running lease."""
    give_back_unpublished()


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
