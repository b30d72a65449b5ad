"""Sending index documents from the outbox: the entities (of every flow that declares an index)
whose wide row changed since Elasticsearch last had them (``models.orders.IndexOutbox``, written
with the wide row); each goes to its flow's index.

An entry is deleted only once Elasticsearch holds its version or a newer one (a 409 means newer):
the delete compares versions, so a row changed again meanwhile keeps its entry.  Elasticsearch
unreachable: the entries stay, pushed back with a growing delay, and the error goes to the
caller's retry.  A document Elasticsearch refuses (a mapping error) stays too, with its reason,
and is counted; nothing here ever holds up the wide rows or the ADS.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from typing import Any, cast

from sqlalchemy import Table, and_, bindparam, delete, false, or_, select, true, update

from flows.declared import BY_NAME, DECLARATIONS
from flows.registry import flow_of
from intake.receiver import utcnow
from models.orders import IndexOutbox
from models.storage import Storage
from models.writes import upsert
from search.elastic import UNAVAILABLE, BulkReport, OrderIndex, wide_documents

OUTBOX = cast(Table, IndexOutbox.__table__)
#: Entries sent per call.
BATCH = 500
#: Delay after the first failure, doubling up to the cap.
RETRY_SECONDS, RETRY_CAP_SECONDS = 5.0, 600.0


def of_flows(flows: Iterable[str] | None) -> Any:
    """A condition on the outbox: entries of the entities of ``flows`` (None: every flow), by
    their ids' prefixes (an entry of a flow no longer indexed here must not hold up the others)."""
    if flows is None:
        return true()
    declared = [BY_NAME[name] for name in flows]
    prefixes = [flow.entity_prefix for flow in DECLARATIONS if flow.entity_prefix]
    chosen = [OUTBOX.c.order_id.startswith(flow.entity_prefix, autoescape=True) if flow.entity_prefix
              else and_(*(~OUTBOX.c.order_id.startswith(p, autoescape=True) for p in prefixes))
              for flow in declared]
    return or_(*chosen) if chosen else false()


def due_orders(storage: Storage, limit: int = BATCH, now: dt.datetime | None = None,
               flows: Iterable[str] | None = None) -> list[str]:
    """Entities (of ``flows``; None: every flow) whose entry is due, oldest first, from every
    shard database."""
    now = now or utcnow()
    wanted = of_flows(flows)
    found: list[tuple[dt.datetime, str]] = []
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            found += [(row.due_at, row.order_id) for row in connection.execute(
                select(OUTBOX.c.order_id, OUTBOX.c.due_at).where((OUTBOX.c.due_at <= now) & wanted)
                .order_by(OUTBOX.c.due_at).limit(limit))]
    return [order_id for _, order_id in sorted(found)[:limit]]


def oldest_due(storage: Storage, flows: Iterable[str] | None = None) -> dt.datetime | None:
    """When the longest-waiting entry (of ``flows``; None: every flow) became due (None: nothing
    waits)."""
    wanted = of_flows(flows)
    oldest: list[dt.datetime] = []
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            first = connection.execute(select(OUTBOX.c.due_at).where(wanted).order_by(OUTBOX.c.due_at)
                                       .limit(1)).scalar()
            if first is not None:
                oldest.append(first)
    return min(oldest) if oldest else None


def send(storage: Storage, indexes: OrderIndex | Mapping[str, OrderIndex], order_ids: Iterable[str]) -> BulkReport:
    """Index the current wide rows of the entities of ``order_ids`` that have an outbox entry,
    each in its flow's index of ``indexes`` (flow name -> index, or one index: its flow's entities
    only; the others are left waiting), and settle their entries; the bulk report.  Raises what
    UNAVAILABLE names (the entries of the flow being sent pushed back)."""
    by_flow = {indexes.flow.name: indexes} if isinstance(indexes, OrderIndex) else dict(indexes)
    waiting: dict[str, tuple[int, int]] = {}  # entity -> (version, attempts)
    mine = [order_id for order_id in order_ids if flow_of(order_id).name in by_flow]
    for database, shards in storage.orders_by_database(mine).items():
        ids = list(shards)
        with storage.read_engine(database).connect() as connection:
            waiting.update({row.order_id: (row.version, row.attempts) for row in connection.execute(
                select(OUTBOX.c.order_id, OUTBOX.c.version, OUTBOX.c.attempts).where(OUTBOX.c.order_id.in_(ids)))})
    report = BulkReport()
    groups: dict[str, list[str]] = {}
    for order_id in sorted(waiting):
        groups.setdefault(flow_of(order_id).name, []).append(order_id)
    for name, ids in groups.items():
        report.add(_send_flow(storage, by_flow[name], ids, {o: waiting[o] for o in ids}))
    return report


def _send_flow(storage: Storage, index: OrderIndex, ids: list[str], waiting: dict[str, tuple[int, int]]) -> BulkReport:
    docs = [doc for part in wide_documents(storage, order_ids=ids) for doc in part]
    try:
        report = index.index(docs)
    except UNAVAILABLE as error:
        _push_back(storage, {o: f"{type(error).__name__}: {error}"[:1000] for o in waiting}, waiting)
        raise
    sent = {entity: int(doc["version"]) for doc in docs
            if (entity := index.document.entity_id(doc)) not in report.failed}
    # An entry without a wide row has nothing to send.
    sent.update({order_id: waiting[order_id][0] for order_id in waiting if order_id not in sent
                 and order_id not in report.failed})
    _settle(storage, sent)
    if report.failed:
        _push_back(storage, report.failed, waiting)
    return report


def enqueue(storage: Storage, versions: dict[str, int]) -> None:
    """Write (or rewrite) the outbox entries of ``versions`` (order -> wide version), due now."""
    now = utcnow()
    for database, shards in storage.orders_by_database(versions).items():
        ids = list(shards)
        with storage.shard_engine(database).begin() as connection:
            upsert(connection, OUTBOX, ("order_id",), [
                dict(order_id=o, version=versions[o], due_at=now, attempts=0, last_error=None) for o in ids],
                # The inserted values, not literals: a bound value after ON DUPLICATE KEY UPDATE
                # makes PyMySQL's executemany fail ("format requires a mapping") for several rows.
                lambda new: {"version": new.version, "due_at": new.due_at, "attempts": new.attempts,
                             "last_error": new.last_error})


def _settle(storage: Storage, sent: dict[str, int]) -> None:
    """Delete the entries Elasticsearch now holds (their version or a newer one)."""
    for database, shards in storage.orders_by_database(sent).items():
        ids = list(shards)
        with storage.shard_engine(database).begin() as connection:
            connection.execute(delete(OUTBOX).where(and_(OUTBOX.c.order_id == bindparam("key"),
                                                         OUTBOX.c.version <= bindparam("sent"))),
                               [{"key": order_id, "sent": sent[order_id]} for order_id in ids])


def _push_back(storage: Storage, reasons: dict[str, str], waiting: dict[str, tuple[int, int]]) -> None:
    now = utcnow()
    for database, shards in storage.orders_by_database(reasons).items():
        ids = list(shards)
        rows = [{"key": order_id, "tries": waiting[order_id][1] + 1, "reason": reasons[order_id][:1000],
                 "due": now + dt.timedelta(seconds=min(RETRY_CAP_SECONDS, RETRY_SECONDS * 2 ** waiting[order_id][1]))}
                for order_id in ids if order_id in waiting]
        with storage.shard_engine(database).begin() as connection:
            connection.execute(update(OUTBOX).where(OUTBOX.c.order_id == bindparam("key")).values(
                attempts=bindparam("tries"), last_error=bindparam("reason"), due_at=bindparam("due")), rows)
