"""Index documents: sent right after a chain finishes, and from the outbox by beat for whatever
that missed (Elasticsearch down, a publish lost).  Never part of the chain: an index outage
delays search, not the wide rows or the ADS."""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from celery import shared_task

from intake.receiver import utcnow
from models.redis_store import get_redis
from models.storage import get_storage
from reliability.alarms import raise_alarm
from reliability.counters import count
from reliability.transient import TRANSIENT_ERRORS
from search.elastic import UNAVAILABLE, OrderIndex, configured_indexes
from search.outbox import due_orders, oldest_due, send
from settings import get_settings
from tasks.policy import retrying

log = logging.getLogger(__name__)

#: Counted in Redis: documents refused as older than the indexed version, and refused as invalid.
STALE, REFUSED = "index_stale", "index_refused"
#: An entry due this long raises an alarm: search has been behind the wide rows for that long.
LAG_ALARM = dt.timedelta(minutes=15)


#: (url, alias) of each index this process has made sure of (template, index, alias).
_READY: set[tuple[str | None, str]] = set()


def _indexes() -> dict[str, OrderIndex]:
    """Flow name -> the index of each running flow that declares one, created on first use in
    this process (``tdc search init`` ahead of time is not required)."""
    settings = get_settings()
    indexes = configured_indexes(settings)
    for index in indexes.values():
        if (settings.es_url, index.alias) not in _READY:
            index.init()
            _READY.add((settings.es_url, index.alias))
    return indexes


def _send(indexes: dict[str, OrderIndex], order_ids: list[str]) -> dict[str, Any]:
    report = send(get_storage(), indexes, order_ids)
    client = get_redis()
    count(client, STALE, report.stale)
    if report.failed:
        count(client, REFUSED, len(report.failed))
        raise_alarm(client, "index_refused", f"Elasticsearch refused {len(report.failed)} documents; they "
                    "stay in the outbox", examples=dict(sorted(report.failed.items())[:3]))
    return {"indexed": report.indexed, "stale": report.stale, "refused": len(report.failed)}


_RETRYING = {**retrying(), "autoretry_for": TRANSIENT_ERRORS + UNAVAILABLE}


@shared_task(name="tdc.index", **_RETRYING)
def index_orders(order_ids: list[str]) -> dict[str, Any]:
    """Send the documents of ``order_ids`` (those with an outbox entry)."""
    indexes = _indexes()
    return _send(indexes, order_ids) if indexes else {"indexed": 0}


@shared_task(name="tdc.index_pending", **_RETRYING)
def index_pending() -> dict[str, Any]:
    """Send what the outbox holds that is due; alarm when search has fallen far behind."""
    indexes = _indexes()
    if not indexes:
        return {"indexed": 0}
    storage = get_storage()
    oldest = oldest_due(storage, indexes)
    if oldest is not None and utcnow() - oldest > LAG_ALARM:
        raise_alarm(get_redis(), "index_lagging", f"an order has waited since {oldest:%Y-%m-%d %H:%M:%S} UTC for its "
                    "index document; search answers from older documents meanwhile")
    return _send(indexes, due_orders(storage, flows=indexes))


def after_chain(order_ids: list[str]) -> None:
    """Ask for the documents of a finished chain's orders; when the broker refuses, the outbox
    scan sends them."""
    if not get_settings().es_url or not order_ids:
        return
    try:
        index_orders.delay(sorted(set(order_ids)))
    except TRANSIENT_ERRORS:
        log.warning("could not ask for %d index documents; the outbox scan will send them", len(order_ids))
