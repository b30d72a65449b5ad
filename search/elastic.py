"""The orders index in Elasticsearch, through the official client (8.x, ``compatible-with=8``).

Layout: one document per order (``_id`` = order id) in a versioned index (``tdc-orders-v1``,
``-v2``, ...) behind the alias ``tdc-orders``; the mappings come from the index template
``tdc-orders`` (``search.documents``).  Writes carry the wide row's ``version`` as an external
version, so a stale write (an older version arriving late) is refused with 409 by Elasticsearch
itself and counted, never applied.  ``reindex`` builds the next versioned index from the wide
rows and moves the alias in one atomic ``_aliases`` call, then copies again what changed while
it was building: readers never see a half-built index and no update is lost.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from elasticsearch import ApiError, Elasticsearch, NotFoundError, TransportError
from sqlalchemy import select

from chain.wide_rows import ITEM_TABLE, ORDER_TABLE
from models.storage import Storage
from search.documents import document, found_order, mappings
from search.query import OrderQuery
from settings import Settings

log = logging.getLogger(__name__)

#: The alias readers and writers use; its template has the same name, its indices add -v1, -v2, ...
ALIAS = "tdc-orders"
#: Documents per bulk request.
BULK = 500
#: How far back the catch-up after a reindex looks before the reindex started (clock skew
#: between the databases and this process).
CATCH_UP_MARGIN = dt.timedelta(minutes=5)
#: Faults to retry with back-off: the index unreachable, timing out or overloaded.
UNAVAILABLE = (TransportError, ConnectionError)


@dataclass
class BulkReport:
    indexed: int = 0
    #: Refused as older than the indexed version (409): a late write, never applied.
    stale: int = 0
    #: Order id -> the reason Elasticsearch gave.
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, other: BulkReport) -> None:
        self.indexed += other.indexed
        self.stale += other.stale
        self.failed.update(other.failed)


def connect(url: str) -> Elasticsearch:
    """A client for ``url``; retries are ours (``tasks.policy``), so the client tries once."""
    return Elasticsearch(url, request_timeout=10, max_retries=0, retry_on_timeout=False)


class OrderIndex:
    @classmethod
    def configured(cls, settings: Settings) -> OrderIndex | None:
        """The index ``TDC_ES_URL`` and ``TDC_ES_ALIAS`` name; None without an Elasticsearch."""
        return cls(connect(settings.es_url), settings.es_alias) if settings.es_url else None

    def __init__(self, client: Elasticsearch, alias: str = ALIAS):
        self.client = client
        self.alias = alias
        self.template = alias
        self.prefix = f"{alias}-v"

    def current(self) -> str | None:
        """The index the alias points at, or None before ``init``."""
        try:
            return sorted(self.client.indices.get_alias(name=self.alias).body)[-1]
        except NotFoundError:
            return None

    def init(self) -> str:
        """Create (or update) the template, and the first index behind the alias unless one is
        there; the index the alias points at.  Safe to run again."""
        self.client.indices.put_index_template(name=self.template, index_patterns=[f"{self.prefix}*"], priority=100,
                                               template={"settings": {"number_of_shards": 1},
                                                         "mappings": mappings()})
        current = self.current()
        if current is not None:
            return current
        first = f"{self.prefix}1"
        self.client.indices.create(index=first, aliases={self.alias: {}})
        return first

    def index(self, docs: Iterable[dict[str, Any]], target: str | None = None, refresh: bool = False) -> BulkReport:
        """Index ``docs`` (each with ``order_id`` and ``version``) with external versions."""
        report = BulkReport()
        batch: list[dict[str, Any]] = []
        for doc in docs:
            batch.append(doc)
            if len(batch) >= BULK:
                report.add(self._bulk(batch, target or self.alias, refresh))
                batch = []
        if batch:
            report.add(self._bulk(batch, target or self.alias, refresh))
        return report

    def _bulk(self, docs: list[dict[str, Any]], target: str, refresh: bool) -> BulkReport:
        operations: list[dict[str, Any]] = []
        for doc in docs:
            operations.append({"index": {"_index": target, "_id": doc["order_id"], "version": int(doc["version"]),
                                         "version_type": "external"}})
            operations.append(doc)
        # Through the alias only if it exists: Elasticsearch would otherwise create a plain index
        # by that name, with guessed mappings, and the alias could never be made.
        answer = self.client.bulk(operations=operations, refresh=refresh, require_alias=target == self.alias)
        report = BulkReport()
        for item in answer["items"]:
            outcome = item["index"]
            status = int(outcome.get("status", 500))
            if status < 300:
                report.indexed += 1
            elif status == 409:
                report.stale += 1
            else:
                error = outcome.get("error", {})
                report.failed[str(outcome.get("_id"))] = f"{error.get('type', status)}: {error.get('reason', '')}"
        return report

    def search(self, query: OrderQuery) -> list[dict[str, Any]]:
        body = query.elasticsearch()
        answer = self.client.search(index=self.alias, query=body["query"], sort=body["sort"], size=body["size"])
        return [found_order(hit["_source"]) for hit in answer["hits"]["hits"]]

    def versions(self, order_ids: list[str]) -> dict[str, int]:
        """The indexed version of each of ``order_ids`` that has a document."""
        found: dict[str, int] = {}
        for start in range(0, len(order_ids), BULK):
            answer = self.client.mget(index=self.alias, ids=order_ids[start:start + BULK], source=["version"])
            found.update({doc["_id"]: int(doc["_version"]) for doc in answer["docs"] if doc.get("found")})
        return found

    def refresh(self) -> None:
        self.client.indices.refresh(index=self.alias)

    def reindex(self, storage: Storage, progress: Callable[[str], None] = lambda _: None,
                chunk: int = BULK, copied: Callable[[int], None] = lambda _: None) -> tuple[str, BulkReport]:
        """Build the next versioned index from every wide row, move the alias to it atomically,
        copy again what changed meanwhile, and delete the old index; the new index and what was
        written.  ``progress`` hears what is happening, ``copied`` how many wide rows each part
        of the first copy held."""
        old = self.init()
        number = int(old.removeprefix(self.prefix)) + 1 if old.startswith(self.prefix) else 1
        new = f"{self.prefix}{number}"
        if self.client.indices.exists(index=new):
            self.client.indices.delete(index=new)  # left by a reindex that did not finish
        self.client.indices.create(index=new)
        started = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        report = BulkReport()
        for part in wide_documents(storage, chunk=chunk):
            report.add(self.index(part, target=new))
            copied(len(part))
            progress(f"{new}: {report.indexed} documents")
        self.client.indices.update_aliases(actions=[{"remove": {"index": old, "alias": self.alias}},
                                                    {"add": {"index": new, "alias": self.alias}}])
        # Writes between the copy of a row and the swap went to the old index: copy what changed
        # since the start again (external versions keep the newest either way).
        for part in wide_documents(storage, changed_since=started - CATCH_UP_MARGIN):
            report.add(self.index(part, target=new))
        self.client.indices.delete(index=old)
        self.client.indices.refresh(index=new)
        progress(f"alias {self.alias} now on {new}; {old} deleted")
        return new, report


def wide_documents(storage: Storage, order_ids: list[str] | None = None, changed_since: dt.datetime | None = None,
                   chunk: int = BULK) -> Iterable[list[dict[str, Any]]]:
    """Documents from the wide rows of every shard database, ``chunk`` at a time: all of them,
    those of ``order_ids``, or those written since ``changed_since``."""
    order, item = ORDER_TABLE, ITEM_TABLE
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            last = ""
            while True:
                query = select(order).where(order.c.order_id > last).order_by(order.c.order_id).limit(chunk)
                if order_ids is not None:
                    query = query.where(order.c.order_id.in_(order_ids))
                if changed_since is not None:
                    query = query.where(order.c.updated_at >= changed_since)
                rows = [dict(row._mapping) for row in connection.execute(query)]
                if not rows:
                    break
                last = rows[-1]["order_id"]
                lines: dict[str, list[dict[str, Any]]] = {}
                ids = [r["order_id"] for r in rows]
                for line in connection.execute(select(item).where(item.c.order_id.in_(ids))):
                    lines.setdefault(line.order_id, []).append(dict(line._mapping))
                yield [document(row, lines.get(row["order_id"], [])) for row in rows]


__all__ = ["ALIAS", "ApiError", "BulkReport", "OrderIndex", "UNAVAILABLE", "connect", "wide_documents"]
