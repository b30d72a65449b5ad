"""The search query: conditions combined with AND, newest orders first, at most ``limit``.

One object drives both paths: ``elasticsearch()`` is the request body for the index (a bool
filter with term, range and nested clauses), ``search.sql`` turns the same object into a select
over the wide rows of every shard database.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

#: The default number of orders returned, and the most one query may ask for.
DEFAULT_LIMIT, MAX_LIMIT = 50, 10_000
#: Newest first: the order's creation time, then its id (so equal times come out the same way
#: from every path).
SORT = (("created_at", "desc"), ("order_id", "desc"))


def newest_first(order: dict[str, Any]) -> tuple[bool, dt.datetime, str]:
    """The sort key, used with ``reverse=True``, that puts found orders in SORT order (orders
    without a creation time last) on every path."""
    created = order.get("created_at")
    if isinstance(created, str):
        created = dt.datetime.fromisoformat(created)
    return (created is not None, created or dt.datetime.min, str(order["order_id"]))


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
        return {k: v for k, v in asdict(self).items() if v is not None and k != "limit"}

    def elasticsearch(self) -> dict[str, Any]:
        """The request body for the orders index: filters only (no scoring), newest first."""
        filters: list[dict[str, Any]] = []
        for field in ("order_id", "store_id", "status", "member_id", "channel"):
            value = getattr(self, field)
            if value is not None:
                filters.append({"term": {field: value}})
        amount = {bound: str(value) for bound, value in (("gte", self.min_amount), ("lte", self.max_amount))
                  if value is not None}
        if amount:
            filters.append({"range": {"pay_amount": amount}})
        days = {bound: value.isoformat() for bound, value in (("gte", self.date_from), ("lte", self.date_to))
                if value is not None}
        if days:
            filters.append({"range": {"biz_date": days}})
        if self.sku_id is not None:
            filters.append({"nested": {"path": "items", "query": {"term": {"items.sku_id": self.sku_id}}}})
        return {"query": {"bool": {"filter": filters}}, "sort": [{field: {"order": way}} for field, way in SORT],
                "size": self.limit}
