"""Answer an ``OrderQuery`` from its flow's index when Elasticsearch is configured and answers,
and from the flow's wide rows otherwise; the command line and the console both search through here."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from models.storage import Storage
from search.query import OrderQuery
from search.sql import search_sql


@dataclass
class Found:
    orders: list[dict[str, Any]]
    #: Where the answer came from, for people ("Elasticsearch", "the wide rows of 4 ...").
    where: str
    took_ms: float
    #: Why Elasticsearch was not used although it is configured, else None.
    notice: str | None = None


def shown_url(url: str) -> str:
    """``url`` without its user and password."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}{f':{parts.port}' if parts.port else ''}{parts.path}"


def find_orders(storage: Storage, query: OrderQuery) -> Found:
    """The entities ``query`` finds, from its flow's index or else its wide rows; QueryError for a
    condition the flow does not declare."""
    started = time.perf_counter()
    settings = storage.settings
    document = query.document()
    notice = None
    if settings.es_url:
        from elasticsearch import NotFoundError

        from search.elastic import UNAVAILABLE, OrderIndex, connect

        alias = document.alias(settings)
        try:
            orders = OrderIndex(connect(settings.es_url), alias, document.flow).search(query)
            return Found(orders, "Elasticsearch", (time.perf_counter() - started) * 1000)
        except NotFoundError:
            notice = (f"Elasticsearch at {shown_url(settings.es_url)} has no {alias!r} index yet (run "
                      "`tdc search init`, then `tdc search reindex`); answering from the wide rows")
        except UNAVAILABLE as error:
            notice = (f"Elasticsearch at {shown_url(settings.es_url)} cannot be reached ({type(error).__name__}); "
                      "answering from the wide rows")
    orders = search_sql(storage, query)
    where = (f"the wide rows of {len(storage.distinct_databases())} shard databases (SQL fallback"
             + ("" if settings.es_url else ": TDC_ES_URL is not set") + ")")
    return Found(orders, where, (time.perf_counter() - started) * 1000, notice)
