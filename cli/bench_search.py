"""``tdc bench search``: selective queries on the SQL fallback over many orders (goal: under 1 s
each over 100,000 orders on MariaDB shard databases).

Search reads the wide rows only, so the bench writes them directly: ``--orders`` synthetic settled
orders (ids ``BENCHSEARCH…``, 1-4 lines each, 50 stores, 500 SKUs, 30 days), unless that many are
there from an earlier run.  Then it runs random queries mixing store, status, amount range, SKU,
member, channel and days, checks each answer against the same conditions applied in Python to
what it wrote, and reports the latencies.
"""

from __future__ import annotations

import datetime as dt
import random
import statistics
import time
from decimal import Decimal
from typing import Any

from sqlalchemy import func, insert, select

from cli.progress import Progress, progress
from demo.tables import ITEM_TABLE, ORDER_TABLE
from models.storage import Storage, get_storage
from search.query import OrderQuery
from search.sql import search_sql

PREFIX = "BENCHSEARCH"
GOAL_SECONDS = 1.0
CHANNELS = ("app", "mini", "pos", "web")
STATUSES = (20, 30, 40)
FIRST_DAY = dt.date(2026, 10, 1)


def _orders(count: int, seed: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rng = random.Random(seed)
    orders, items = [], []
    for number in range(count):
        order_id = f"{PREFIX}{number:09d}"
        day = FIRST_DAY + dt.timedelta(days=rng.randrange(30))
        created = dt.datetime.combine(day, dt.time()) + dt.timedelta(seconds=rng.randrange(86_400))
        lines = [(rng.randrange(500), rng.randint(1, 3), Decimal(rng.randint(100, 20_000)) / 100)
                 for _ in range(rng.randint(1, 4))]
        total = sum((quantity * price for _, quantity, price in lines), Decimal("0.00"))
        orders.append(dict(order_id=order_id, store_id=f"S{rng.randrange(50):03d}",
                           member_id=f"M{rng.randrange(20_000):05d}", channel=rng.choice(CHANNELS),
                           status=rng.choice(STATUSES), item_count=len(lines),
                           total_amount=total, discount_amount=Decimal("0.00"), pay_amount=total, paid_at=created,
                           refund_amount=Decimal("0.00"), refund_count=0, created_at=created, biz_date=day, version=1,
                           updated_at=created))
        for line, (sku, quantity, price) in enumerate(lines):
            items.append(dict(item_id=number * 10 + line, order_id=order_id, store_id=orders[-1]["store_id"],
                              biz_date=day, sku_id=f"K{sku:04d}", quantity=quantity, unit_price=price,
                              amount=quantity * price, refund_quantity=0, refund_amount=Decimal("0.00"), status=20))
    return orders, items


def _existing(storage: Storage) -> int:
    def one(database: int) -> int:
        with storage.read_engine(database).connect() as connection:
            return int(connection.execute(select(func.count()).where(
                ORDER_TABLE.c.order_id.like(f"{PREFIX}%"))).scalar_one())
    return sum(storage.each_database(one))


def _write(storage: Storage, orders: list[dict[str, Any]], items: list[dict[str, Any]], shown: Progress) -> None:
    lines: dict[str, list[dict[str, Any]]] = {}
    for item in items:
        lines.setdefault(item["order_id"], []).append(item)
    by_database: dict[int, list[dict[str, Any]]] = {}
    for order in orders:
        by_database.setdefault(storage.database_of(order["order_id"]), []).append(order)
    for database, chosen in by_database.items():
        for start in range(0, len(chosen), 5000):
            part = chosen[start:start + 5000]
            with storage.shard_engine(database).begin() as connection:
                connection.execute(insert(ORDER_TABLE), part)
                connection.execute(insert(ITEM_TABLE), [i for o in part for i in lines[o["order_id"]]])
            shown.advance(len(part))


def _matches(query: OrderQuery, order: dict[str, Any], skus: set[str]) -> bool:
    return all([
        query.store_id in (None, order["store_id"]), query.status in (None, order["status"]),
        query.member_id in (None, order["member_id"]), query.channel in (None, order["channel"]),
        query.sku_id is None or query.sku_id in skus,
        query.min_amount is None or order["pay_amount"] >= query.min_amount,
        query.max_amount is None or order["pay_amount"] <= query.max_amount,
        query.date_from is None or order["biz_date"] >= query.date_from,
        query.date_to is None or order["biz_date"] <= query.date_to])


def _queries(rng: random.Random, count: int) -> list[OrderQuery]:
    shapes = [
        lambda: OrderQuery(store_id=f"S{rng.randrange(50):03d}", status=rng.choice(STATUSES),
                           min_amount=Decimal(rng.randint(50, 200)), max_amount=Decimal(rng.randint(300, 600))),
        lambda: OrderQuery(sku_id=f"K{rng.randrange(500):04d}",
                           date_from=FIRST_DAY + dt.timedelta(days=rng.randrange(20)),
                           date_to=FIRST_DAY + dt.timedelta(days=29)),
        lambda: OrderQuery(member_id=f"M{rng.randrange(20_000):05d}"),
        lambda: OrderQuery(store_id=f"S{rng.randrange(50):03d}", sku_id=f"K{rng.randrange(500):04d}"),
        lambda: OrderQuery(store_id=f"S{rng.randrange(50):03d}", channel=rng.choice(CHANNELS),
                           date_from=FIRST_DAY + dt.timedelta(days=rng.randrange(30)),
                           date_to=FIRST_DAY + dt.timedelta(days=29)),
    ]
    return [shapes[n % len(shapes)]() for n in range(count)]


def _wrong(query: OrderQuery, found: list[dict[str, Any]], wanted: list[dict[str, Any]],
           skus: dict[str, set[str]]) -> str | None:
    """What is wrong with ``found`` as the answer to ``query`` over the bench's orders, if anything."""
    expected = sorted((o for o in wanted if _matches(query, o, skus[o["order_id"]])),
                      key=lambda o: (o["created_at"], o["order_id"]), reverse=True)[:query.limit]
    # (other orders in the same databases may come first; the bench's own must be in order and,
    # below the limit, complete)
    ids = [o["order_id"] for o in found if o["order_id"].startswith(PREFIX)]
    want = [o["order_id"] for o in expected]
    if ids != want[:len(ids)] or (len(found) < query.limit and ids != want):
        return f"FAILED: {query} found {ids[:5]}..., expected {want[:5]}..."
    return None


def bench_search(orders: int, queries: int, seed: int) -> int:
    from models.schema import init_storage

    storage = get_storage()
    init_storage(storage)
    wanted, lines = _orders(orders, seed)
    have = _existing(storage)
    if have != orders:
        if have:
            print(f"FAILED: {have} synthetic orders ({PREFIX}...) are there from a run with another --orders; "
                  "use that number or a fresh database")
            return 1
        started = time.perf_counter()
        with progress("setup", total=orders, unit="orders written") as shown:
            _write(storage, wanted, lines, shown)
        print(f"setup: {orders} orders and {len(lines)} lines written in {time.perf_counter() - started:.1f}s")
    skus: dict[str, set[str]] = {}
    for line in lines:
        skus.setdefault(line["order_id"], set()).add(line["sku_id"])
    rng = random.Random(seed + 1)
    times: list[float] = []
    wrong: str | None = None
    with progress("search bench", total=queries, unit="queries") as shown:
        for query in _queries(rng, queries):
            started = time.perf_counter()
            found = search_sql(storage, query)
            times.append(time.perf_counter() - started)
            shown.advance()
            wrong = _wrong(query, found, wanted, skus)
            if wrong:
                break
    if wrong:
        print(wrong)
        return 1
    slowest = max(times)
    verdict = "meets" if slowest < GOAL_SECONDS else "OVER"
    median = statistics.median(times) * 1000
    print(f"search: {queries} selective queries over {orders:,} orders: median {median:.0f} ms, "
          f"slowest {slowest * 1000:.0f} ms ({verdict} the goal of {GOAL_SECONDS * 1000:.0f} ms)")
    return 0
