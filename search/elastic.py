"""A flow's index in Elasticsearch, through the official client (8.x, ``compatible-with=8``).

Layout: one document per entity (``_id`` = entity id) in a versioned index (``tdc-orders-v1``,
``-v2``, ...) behind the alias the flow declares (``tdc-orders``); the mappings come from the
index template of the same name (``search.documents``).  Each flow that declares an index
document has its own (``configured_indexes``).  Writes carry the wide row's ``version`` as an external
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

from elasticsearch import Elasticsearch, NotFoundError, TransportError
from sqlalchemy import select

from chain.wide_rows import read_wide
from flows.declaration import FlowDeclaration
from flows.declared import BY_NAME
from flows.registry import flow_of
from models.storage import Storage
from search.documents import SearchDocument, bare_flow, indexed_flows, search_document
from search.query import OrderQuery
from settings import Settings

log = logging.getLogger(__name__)

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
    #: Entity id -> the reason Elasticsearch gave.
    failed: dict[str, str] = field(default_factory=dict)

    def add(self, other: BulkReport) -> None:
        self.indexed += other.indexed
        self.stale += other.stale
        self.failed.update(other.failed)


def connect(url: str) -> Elasticsearch:
    """A client for ``url``; retries are ours (``tasks.policy``), so the client tries once."""
    return Elasticsearch(url, request_timeout=10, max_retries=0, retry_on_timeout=False)


def configured_indexes(settings: Settings) -> dict[str, OrderIndex]:
    """Flow name -> the index of each running flow (``TDC_FLOWS``) that declares one, under its
    alias (``SearchDocument.alias``); empty without an Elasticsearch (``TDC_ES_URL``)."""
    if not settings.es_url:
        return {}
    client = connect(settings.es_url)
    return {flow.name: OrderIndex(client, search_document(flow).alias(settings), flow)
            for flow in indexed_flows(BY_NAME[name] for name in settings.flows if name in BY_NAME)}


class OrderIndex:
    """One flow's index (the flow without an entity prefix when none is named)."""

    def __init__(self, client: Elasticsearch, alias: str | None = None, flow: FlowDeclaration | None = None):
        self.client = client
        self.flow = flow or bare_flow()
        self.document: SearchDocument = search_document(self.flow)
        self.alias = alias or self.document.alias()
        self.template = self.alias
        self.prefix = f"{self.alias}-v"

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
                                                         "mappings": self.document.mappings()})
        current = self.current()
        if current is not None:
            return current
        first = f"{self.prefix}1"
        self.client.indices.create(index=first, aliases={self.alias: {}})
        return first

    def index(self, docs: Iterable[dict[str, Any]], target: str | None = None, refresh: bool = False) -> BulkReport:
        """Index ``docs`` (each with the root's key and ``version``) with external versions."""
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
            operations.append({"index": {"_index": target, "_id": self.document.entity_id(doc),
                                         "version": int(doc["version"]),
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
        """The documents ``query`` finds (the query's flow must be this index's)."""
        body = query.elasticsearch(self.document)
        answer = self.client.search(index=self.alias, query=body["query"], sort=body["sort"], size=body["size"])
        return [self.document.found(hit["_source"]) for hit in answer["hits"]["hits"]]

    def versions(self, order_ids: list[str]) -> dict[str, int]:
        """The indexed version of each of ``order_ids`` (entity ids) that has a document."""
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
        for part in wide_documents(storage, chunk=chunk, flow=self.flow):
            report.add(self.index(part, target=new))
            copied(len(part))
            progress(f"{new}: {report.indexed} documents")
        self.client.indices.update_aliases(actions=[{"remove": {"index": old, "alias": self.alias}},
                                                    {"add": {"index": new, "alias": self.alias}}])
        # Writes between the copy of a row and the swap went to the old index: copy what changed
        # since the start again (external versions keep the newest either way).
        for part in wide_documents(storage, changed_since=started - CATCH_UP_MARGIN, flow=self.flow):
            report.add(self.index(part, target=new))
        self.client.indices.delete(index=old)
        self.client.indices.refresh(index=new)
        progress(f"alias {self.alias} now on {new}; {old} deleted")
        return new, report


def wide_documents(storage: Storage, order_ids: list[str] | None = None, changed_since: dt.datetime | None = None,
                   chunk: int = BULK, flow: FlowDeclaration | None = None) -> Iterable[list[dict[str, Any]]]:
    """Documents from the wide rows of every shard database, ``chunk`` at a time, one flow's at a
    time: those of ``order_ids`` (entity ids, of any flows), or all of ``flow``'s (the flow
    without an entity prefix when none is named), or those written since ``changed_since``."""
    if order_ids is not None:
        by_flow: dict[str, list[str]] = {}
        for order_id in order_ids:
            by_flow.setdefault(flow_of(order_id).name, []).append(order_id)
        for name, ids in by_flow.items():
            if BY_NAME[name].index is not None:
                yield from _documents_of(storage, search_document(BY_NAME[name]), ids, changed_since, chunk)
        return
    yield from _documents_of(storage, search_document(flow or bare_flow()), None, changed_since, chunk)


def _documents_of(storage: Storage, document: SearchDocument, order_ids: list[str] | None,
                  changed_since: dt.datetime | None, chunk: int) -> Iterable[list[dict[str, Any]]]:
    root, key = document.root, document.root.c[document.key]
    databases = (storage.orders_by_database(order_ids) if order_ids is not None
                 else dict.fromkeys(storage.distinct_databases()))
    for database, shards in databases.items():
        keys = None if shards is None else [document.key_of(order_id) for order_id in shards]
        with storage.read_engine(database).connect() as connection:
            last: Any = None
            while True:
                query = select(key).order_by(key).limit(chunk)
                if last is not None:
                    query = query.where(key > last)
                if keys is not None:
                    query = query.where(key.in_(keys))
                if changed_since is not None:
                    query = query.where(root.c.updated_at >= changed_since)
                found = list(connection.execute(query).scalars())
                if not found:
                    break
                last = found[-1]
                ids = [document.flow.entity_prefix + str(k) for k in found]
                rows, children = read_wide(connection, ids)
                yield [document.document(rows[i], children.get(i, {}).values()) for i in ids if i in rows]


__all__ = ["BulkReport", "OrderIndex", "UNAVAILABLE", "configured_indexes", "connect",
           "wide_documents"]
