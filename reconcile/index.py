"""Wide rows ↔ search index: every settled entity of the days (``reconcile.settled``: the other
layers' entities), of every running flow that declares an index document, has its document in
its flow's index at its wide row's version (only when an index is configured, ``TDC_ES_URL``).

The days' settled entities and their versions are read from the shard databases (two columns), the
documents' versions fetched from Elasticsearch in batches (``_mget``, no document bodies).  A
missing document, or one at another version, is a difference; ``--fix`` writes the entity's outbox
entry again and sends it (``search.outbox``), as a finished chain would.
"""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import select

from models.storage import Storage
from reconcile.diffs import Diff, LayerResult, as_date
from reconcile.settled import settled_of
from search.documents import SearchDocument
from search.elastic import OrderIndex, configured_indexes

LAYER = "index"


def configured_index(storage: Storage) -> dict[str, OrderIndex] | None:
    """Flow name -> its index, for the running flows that declare one; None without any."""
    return configured_indexes(storage.settings) or None


def _settled(storage: Storage, document: SearchDocument, first: dt.date,
             last: dt.date) -> dict[str, tuple[int, dt.date]]:
    settled = settled_of(document.flow)
    if settled is None:
        return {}  # no business day: nothing is settled on a day
    root = document.root
    query = select(root.c[document.key], root.c.version, root.c[settled.day]).where(
        settled.settled_where(first, last))

    def one(database: int) -> list[tuple[str, int, dt.date]]:
        with storage.read_engine(database).connect() as connection:
            return [(document.flow.entity_prefix + str(key), int(version), as_date(day))
                    for key, version, day in connection.execute(query)]
    return {entity: (version, day) for rows in storage.each_database(one) for entity, version, day in rows}


def settled_versions(storage: Storage, first: dt.date, last: dt.date) -> dict[str, tuple[int, dt.date]]:
    """Each settled entity of the days, of every configured index's flow: its wide row's version
    and day."""
    found: dict[str, tuple[int, dt.date]] = {}
    for index in (configured_index(storage) or {}).values():
        found.update(_settled(storage, index.document, first, last))
    return found


def compare_index(storage: Storage, indexes: OrderIndex | dict[str, OrderIndex], first: dt.date,
                  last: dt.date) -> LayerResult:
    """Each settled entity's wide version against its document's, flow by flow."""
    result = LayerResult(LAYER)
    started = time.perf_counter()
    by_flow = {indexes.flow.name: indexes} if isinstance(indexes, OrderIndex) else indexes
    wide = {name: _settled(storage, index.document, first, last) for name, index in by_flow.items()}
    result.seconds["wide versions"] = time.perf_counter() - started
    indexed: dict[str, int] = {}
    for name, index in by_flow.items():
        indexed.update(index.versions(sorted(wide[name])))
    result.seconds["documents"] = time.perf_counter() - started - result.seconds["wide versions"]
    every = {entity: found for versions in wide.values() for entity, found in versions.items()}
    for order_id, (version, day) in sorted(every.items()):
        found = indexed.get(order_id)
        if found is None:
            result.diffs.append(Diff(LAYER, day, order_id, "document", "*", str(version), None))
        elif found != version:
            result.diffs.append(Diff(LAYER, day, order_id, "document", "version", str(version), str(found)))
    result.counts = {"orders": len(every), "documents": len(indexed), "orders_differing": len(result.diffs)}
    return result
