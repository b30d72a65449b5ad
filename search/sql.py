"""The SQL fallback: the query run on the wide rows of every shard database at once, merged,
sorted newest first and cut to the limit, each order with its lines."""

from __future__ import annotations

from typing import Any

from sqlalchemy import exists, select
from sqlalchemy.sql.elements import ColumnElement

from chain.wide_rows import ITEM_TABLE, ORDER_TABLE, read_orders
from models.storage import Storage
from search.documents import ITEM_FIELDS, NOT_INDEXED
from search.query import OrderQuery, newest_first


def conditions(query: OrderQuery) -> list[ColumnElement[bool]]:
    order, item = ORDER_TABLE, ITEM_TABLE
    found: list[ColumnElement[bool]] = []
    for field in ("order_id", "store_id", "status", "member_id", "channel"):
        value = getattr(query, field)
        if value is not None:
            found.append(order.c[field] == value)
    if query.min_amount is not None:
        found.append(order.c.pay_amount >= query.min_amount)
    if query.max_amount is not None:
        found.append(order.c.pay_amount <= query.max_amount)
    if query.date_from is not None:
        found.append(order.c.biz_date >= query.date_from)
    if query.date_to is not None:
        found.append(order.c.biz_date <= query.date_to)
    if query.sku_id is not None:
        found.append(exists().where((item.c.order_id == order.c.order_id) & (item.c.sku_id == query.sku_id)))
    return found


def search_sql(storage: Storage, query: OrderQuery) -> list[dict[str, Any]]:
    """The orders ``query`` finds, newest first, at most ``query.limit``, each with ``items``."""
    order = ORDER_TABLE
    statement = (select(order.c.order_id, order.c.created_at).where(*conditions(query))
                 # Non-NULL times first on every backend (PostgreSQL sorts NULLs first when descending).
                 .order_by(order.c.created_at.is_(None), order.c.created_at.desc(), order.c.order_id.desc())
                 .limit(query.limit))

    def one(database: int) -> list[dict[str, Any]]:
        with storage.read_engine(database).connect() as connection:
            return [dict(row._mapping) for row in connection.execute(statement)]
    candidates = [row for rows in storage.each_database(one) for row in rows]
    chosen = sorted(candidates, key=newest_first, reverse=True)[:query.limit]
    orders, items = read_orders(storage, [row["order_id"] for row in chosen])
    lines: dict[str, list[dict[str, Any]]] = {}
    for line in sorted(items.values(), key=lambda i: i["item_id"]):
        lines.setdefault(line["order_id"], []).append({name: line[name] for name in ITEM_FIELDS})
    # A found order looks the same on both paths: its indexed fields and lines (search.documents).
    return [{k: v for k, v in orders[row["order_id"]].items() if k not in NOT_INDEXED}
            | {"items": lines.get(row["order_id"], [])} for row in chosen if row["order_id"] in orders]
