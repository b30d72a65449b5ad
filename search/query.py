"""The search query: conditions combined with AND, newest entities first, at most ``limit``.

One object drives both paths: ``elasticsearch()`` is the request body for a flow's index (a bool
filter with term, range and nested clauses), ``search.sql`` turns the same object into a select
over the wide rows of every shard database.  The flow searched is ``flow`` (by default the one
``order_id`` names, else the first running flow that declares an index); each condition filters
on the field the flow's ``IndexDocument`` declares for it.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import TYPE_CHECKING, Any

from flows.declaration import SEARCH_CONDITIONS

if TYPE_CHECKING:
    from search.documents import SearchDocument

#: The default number of orders returned, and the most one query may ask for.
DEFAULT_LIMIT, MAX_LIMIT = 50, 10_000


def _typed(document: SearchDocument, field: str, value: Any) -> Any:
    table, name = (document.child, field.split(".", 1)[1]) if "." in field else (document.root, field)
    assert table is not None
    if getattr(table.c[name].type, "python_type", str) is int and isinstance(value, str):
        try:
            return int(value)
        except ValueError:
            raise QueryError(f"{field} {value!r} is not a whole number") from None
    return value


def newest_first(found: dict[str, Any], document: SearchDocument) -> tuple[bool, Any, Any]:
    """The sort key, used with ``reverse=True``, that puts found entities newest first (by the
    document's ``newest_by``, then its key; those without a time last) on every path."""
    newest = found.get(document.declared.newest_by) if document.declared.newest_by else None
    if isinstance(newest, str):
        newest = dt.datetime.fromisoformat(newest)
    if isinstance(newest, dt.date) and not isinstance(newest, dt.datetime):
        newest = dt.datetime.combine(newest, dt.time())
    return (newest is not None, newest or dt.datetime.min, found[document.key])


class QueryError(ValueError):
    """A condition that cannot be searched for; the message names it."""


@dataclass(frozen=True)
class OrderQuery:
    order_id: str | None = None
    store_id: str | None = None
    status: int | None = None
    member_id: str | None = None
    channel: str | None = None
    #: Orders with at least one line of this SKU.
    sku_id: str | None = None
    #: Inclusive bounds on ``pay_amount``.
    min_amount: Decimal | None = None
    max_amount: Decimal | None = None
    #: Inclusive bounds on ``biz_date``.
    date_from: dt.date | None = None
    date_to: dt.date | None = None
    limit: int = DEFAULT_LIMIT
    #: The flow searched (None: the one ``order_id`` names, else the first running flow with an index).
    flow: str | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.limit <= MAX_LIMIT:
            raise QueryError(f"limit {self.limit} is outside 1..{MAX_LIMIT}")
        if self.min_amount is not None and self.max_amount is not None and self.min_amount > self.max_amount:
            raise QueryError(f"min amount {self.min_amount} is above max amount {self.max_amount}")
        if self.date_from is not None and self.date_to is not None and self.date_from > self.date_to:
            raise QueryError(f"from {self.date_from} is after to {self.date_to}")

    @classmethod
    def parse(cls, **given: str | int | None) -> OrderQuery:
        """From command-line or form text: amounts as decimals, dates as YYYY-MM-DD, status as an
        integer; QueryError naming the condition that does not read."""
        values: dict[str, Any] = {}
        for name, value in given.items():
            if value is None or value == "":
                continue
            if name in ("min_amount", "max_amount"):
                try:
                    values[name] = Decimal(str(value))
                except InvalidOperation:
                    raise QueryError(f"{name.replace('_', ' ')} {value!r} is not an amount") from None
                if not values[name].is_finite():
                    raise QueryError(f"{name.replace('_', ' ')} {value!r} is not an amount")
            elif name in ("date_from", "date_to"):
                try:
                    values[name] = dt.date.fromisoformat(str(value))
                except ValueError:
                    raise QueryError(f"{name.split('_')[1]} {value!r} is not a date YYYY-MM-DD") from None
            elif name in ("status", "limit"):
                try:
                    values[name] = int(value)
                except ValueError:
                    raise QueryError(f"{name} {value!r} is not a whole number") from None
            elif name in cls.__dataclass_fields__:
                values[name] = str(value)
            else:
                raise QueryError(f"no search condition {name!r}")
        return cls(**values)

    def conditions(self) -> dict[str, Any]:
        """The conditions given (without the limit)."""
        return {k: v for k, v in asdict(self).items() if v is not None and k not in ("limit", "flow")}

    def document(self) -> SearchDocument:
        """The searched flow's document; QueryError for a flow that declares none, or a
        condition it does not declare."""
        from flows.declared import BY_NAME
        from flows.registry import RUNNING, flow_of
        from search.documents import indexed_flows, search_document

        if self.flow is not None:
            flow = BY_NAME.get(self.flow)
            if flow is None:
                raise QueryError(f"no flow {self.flow!r}; declared: {', '.join(BY_NAME)}")
        elif self.order_id is not None:
            try:
                flow = flow_of(self.order_id)
            except KeyError:
                raise QueryError(f"no declared flow owns the id {self.order_id!r}") from None
        else:
            running = indexed_flows(RUNNING)
            if not running:
                raise QueryError("no running flow declares an index document")
            flow = running[0]
        if flow.index is None:
            raise QueryError(f"flow {flow.name!r} declares no index document")
        document = search_document(flow)
        declared = document.declared
        for name in self.conditions():
            missing = ((name in SEARCH_CONDITIONS and name not in declared.conditions)
                       or (name in ("min_amount", "max_amount") and declared.amount is None)
                       or (name in ("date_from", "date_to") and declared.day is None))
            if missing:
                raise QueryError(f"flow {flow.name!r} has no search condition {name!r}")
        return document

    def fields(self, document: SearchDocument) -> list[tuple[str, Any]]:
        """(field, value) of each condition given but the ranges: the key first (the entity
        id without its flow's prefix), nested fields dotted (``items.sku_id``), each value as its
        column holds it (QueryError for text given for a number: Elasticsearch would refuse the
        query, a database compare it unportably)."""
        found: list[tuple[str, Any]] = []
        if self.order_id is not None:
            found.append((document.key, document.key_of(self.order_id)))
        for name in SEARCH_CONDITIONS:
            value = getattr(self, name)
            if value is not None:
                found.append((document.declared.conditions[name], value))
        return [(field, _typed(document, field, value)) for field, value in found]

    def elasticsearch(self, document: SearchDocument | None = None) -> dict[str, Any]:
        """The request body for the flow's index: filters only (no scoring), newest first."""
        document = document or self.document()
        declared = document.declared
        filters: list[dict[str, Any]] = []
        nested: list[dict[str, Any]] = []
        for name, value in self.fields(document):
            # A free-text field is matched exactly on its keyword.
            field = f"{name}.keyword" if name in declared.text else name
            if "." in name:
                nested.append({"nested": {"path": name.split(".")[0], "query": {"term": {field: value}}}})
            else:
                filters.append({"term": {field: value}})
        amount = {bound: str(value) for bound, value in (("gte", self.min_amount), ("lte", self.max_amount))
                  if value is not None}
        if amount:
            filters.append({"range": {declared.amount: amount}})
        days = {bound: value.isoformat() for bound, value in (("gte", self.date_from), ("lte", self.date_to))
                if value is not None}
        if days:
            filters.append({"range": {declared.day: days}})
        sort = ([{declared.newest_by: {"order": "desc"}}] if declared.newest_by else []) + [
            {document.key: {"order": "desc"}}]
        return {"query": {"bool": {"filter": filters + nested}}, "sort": sort, "size": self.limit}
