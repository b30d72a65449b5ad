"""Wide rows ↔ search index: every settled order of the days has its document, at its wide row's
version (only when an index is configured, ``TDC_ES_URL``).

The days' settled orders and their versions are read from the shard databases (two columns), the
documents' versions fetched from Elasticsearch in batches (``_mget``, no document bodies).  A
missing document, or one at another version, is a difference; ``--fix`` writes the order's outbox
entry again and sends it (``search.outbox``), as a finished chain would.
"""

from __future__ import annotations

import datetime as dt
import time

from sqlalchemy import select

from chain.wide_rows import ORDER_TABLE
from flows.registry import BY_NAME
from models.storage import Storage
from reconcile.diffs import Diff, LayerResult
from reconcile.settled import settled_of
from search.elastic import OrderIndex

LAYER = "index"


def configured_index(storage: Storage) -> OrderIndex | None:
    return OrderIndex.configured(storage.settings)


def settled_versions(storage: Storage, first: dt.date, last: dt.date) -> dict[str, tuple[int, dt.date]]:
    """Each settled order of the days: its wide row's version and day."""
    order, settled = ORDER_TABLE, settled_of(BY_NAME["gqsh"])
    assert settled is not None
    query = select(order.c.order_id, order.c.version, order.c.biz_date).where(settled.settled_where(first, last))

    def one(database: int) -> list[tuple[str, int, dt.date]]:
        with storage.read_engine(database).connect() as connection:
            return [(row.order_id, int(row.version), row.biz_date) for row in connection.execute(query)]
    return {order_id: (version, day) for rows in storage.each_database(one) for order_id, version, day in rows}


def compare_index(storage: Storage, index: OrderIndex, first: dt.date, last: dt.date) -> LayerResult:
    result = LayerResult(LAYER)
    started = time.perf_counter()
    wide = settled_versions(storage, first, last)
    result.seconds["wide versions"] = time.perf_counter() - started
    indexed = index.versions(sorted(wide))
    result.seconds["documents"] = time.perf_counter() - started - result.seconds["wide versions"]
    for order_id, (version, day) in sorted(wide.items()):
        found = indexed.get(order_id)
        if found is None:
            result.diffs.append(Diff(LAYER, day, order_id, "document", "*", str(version), None))
        elif found != version:
            result.diffs.append(Diff(LAYER, day, order_id, "document", "version", str(version), str(found)))
    result.counts = {"orders": len(wide), "documents": len(indexed), "orders_differing": len(result.diffs)}
    return result
