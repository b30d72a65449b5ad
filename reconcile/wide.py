"""Source ↔ wide rows: every ``dwd_order``/``dwd_order_item`` column that comes from the source.

The source here is what tdc accepted: the stored records of each order (its metadata), merged
from scratch by the same generators the chain runs, one operation after the other in
state-machine order (an operation the state machine refuses is left out, as the chain leaves it
out).  So a wide row a person edited or deleted, one built from older records than those stored,
or one a step wrote wrong, differs from it.  Columns looked up in dimensions (store and SKU
names, city, region, category) and the row's bookkeeping (version, last operation, write time)
are not compared.

The days' orders are found from the wide rows on those days and from the ADS ledger (which
remembers the day every order last counted on, so a deleted wide row is still found).  Each
side is summed per (day, bucket of the order id): orders, items and the sums of their row
digests, the wide side by the database (``GROUP BY``).  Wide rows are read only for buckets
whose sums differ.  Settled orders only: paid, not cancelled, on their business day.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Table, func, select, text

from chain.steps import OPERATION_ORDER
from chain.task_state import facts_of, tasks_of
from chain.wide_rows import BOOKKEEPING, ITEM_TABLE, ORDER_TABLE, merge_operations, read_wide
from flows.gqsh import CANCELLED
from flows.state_machine import Illegal, blocking_reason
from models.digests import Columns, bucket_of, canonical, kind_of, row_digest, sql_bucket, sql_row_digest
from models.sharded import TaskStatus
from models.storage import Storage
from models.warehouse import AdsOrderLedger
from reconcile.diffs import Diff, LayerResult

LAYER = "wide"
#: Buckets of order ids per day: a difference costs reading the wide rows of 1/BUCKETS of the day.
BUCKETS = 256
#: Orders per read of metadata, tasks or wide rows.
CHUNK = 500
#: Dimension look-ups: the dimension, not the order's source, decides them.
DIMENSION_COLUMNS = frozenset({"store_name", "city", "region", "sku_name", "category"})
ORDER_COMPARED: Columns = [(c.name, kind_of(c)) for c in ORDER_TABLE.columns
                           if c.name not in BOOKKEEPING | DIMENSION_COLUMNS]
ITEM_COMPARED: Columns = [(c.name, kind_of(c)) for c in ITEM_TABLE.columns if c.name not in DIMENSION_COLUMNS]
LEDGER = cast(Table, AdsOrderLedger.__table__)

Row = dict[str, Any]
BucketKey = tuple[dt.date, int]
Progress = Callable[[str], None]


@dataclass
class BucketSums:
    orders: int = 0
    order_digest: int = 0
    items: int = 0
    item_digest: int = 0

    def add_order(self, order: Row, items: Iterable[Row]) -> None:
        self.orders += 1
        self.order_digest += row_digest(ORDER_COMPARED, order)
        for item in items:
            self.items += 1
            self.item_digest += row_digest(ITEM_COMPARED, item)


@dataclass
class Expected:
    """An order's wide rows as its stored records make them, and the operations still on their way."""

    order: Row | None
    items: dict[int, Row] = field(default_factory=dict)
    #: (operation, task version) the rows are made of, in state-machine order.
    operations: list[tuple[str, int]] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)


class _NoDimensions:
    """Dimension columns are not compared: look nothing up."""

    def store(self, store_id: str | None) -> dict[str, Any]:
        return {}

    def sku(self, sku_id: str | None) -> dict[str, Any]:
        return {}


def settled(order: Row | None, first: dt.date, last: dt.date) -> bool:
    """Paid, not cancelled, on a business day in [first, last]."""
    return (order is not None and order.get("paid_at") is not None and order.get("status") != CANCELLED
            and order.get("biz_date") is not None and first <= _day(order["biz_date"]) <= last)


def _day(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def wide_buckets(storage: Storage, first: dt.date, last: dt.date) -> dict[BucketKey, BucketSums]:
    """The wide side, summed by each shard database: no row leaves the database."""
    sums: dict[BucketKey, BucketSums] = defaultdict(BucketSums)
    order, item = ORDER_TABLE, ITEM_TABLE
    where = (order.c.biz_date.between(first, last) & order.c.paid_at.is_not(None)
             & (order.c.status != CANCELLED))
    for database in storage.distinct_databases():
        engine = storage.read_engine(database)
        dialect = engine.dialect.name
        bucket = sql_bucket(dialect, order.c.order_id, BUCKETS)
        orders = (select(order.c.biz_date, bucket, func.count(),
                         func.sum(sql_row_digest(dialect, [(order.c[n], k) for n, k in ORDER_COMPARED])))
                  .where(where).group_by(text("1"), text("2")))
        items = (select(order.c.biz_date, bucket, func.count(),
                        func.sum(sql_row_digest(dialect, [(item.c[n], k) for n, k in ITEM_COMPARED])))
                 .select_from(item.join(order, item.c.order_id == order.c.order_id))
                 .where(where).group_by(text("1"), text("2")))
        with engine.connect() as connection:
            for day, number, count, total in connection.execute(orders):
                entry = sums[(_day(day), int(number))]
                entry.orders += int(count)
                entry.order_digest += int(total)
            for day, number, count, total in connection.execute(items):
                entry = sums[(_day(day), int(number))]
                entry.items += int(count)
                entry.item_digest += int(total)
    return dict(sums)


def candidate_orders(storage: Storage, first: dt.date, last: dt.date) -> set[str]:
    """Orders whose wide row is on one of the days, or that the ADS ledger counts on one."""
    found: set[str] = set()
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            found.update(connection.execute(select(ORDER_TABLE.c.order_id).where(
                ORDER_TABLE.c.biz_date.between(first, last))).scalars())
    with storage.dws_engine.connect() as connection:
        found.update(connection.execute(select(LEDGER.c.order_id).where(
            LEDGER.c.biz_date.between(first, last))).scalars())
    return found


def _by_database(storage: Storage, order_ids: Iterable[str]) -> dict[int, list[str]]:
    groups: dict[int, list[str]] = defaultdict(list)
    for order_id in sorted(order_ids):
        groups[storage.database_of(order_id)].append(order_id)
    return groups


def applicable(tasks: Iterable[str]) -> list[str]:
    """The operations of ``tasks`` the state machine lets run, in its order (as the chain would)."""
    done: list[str] = []
    for operation in sorted(tasks, key=OPERATION_ORDER.__getitem__):
        try:
            if blocking_reason(operation, done, done) is None:
                done.append(operation)
        except Illegal:
            continue
    return done


def expected_orders(storage: Storage, order_ids: Iterable[str]) -> dict[str, Expected]:
    """Each order's wide rows made from scratch from its stored records."""
    expected: dict[str, Expected] = {}
    now = dt.datetime(2000, 1, 1)
    dims = _NoDimensions()
    for database, ids in _by_database(storage, order_ids).items():
        for start in range(0, len(ids), CHUNK):
            shards = {order_id: storage.shard_of(order_id) for order_id in ids[start:start + CHUNK]}
            with storage.read_engine(database).connect() as connection:
                tasks = tasks_of(connection, shards)
                facts = facts_of(connection, shards)
            for order_id in shards:
                operations = [(op, tasks[order_id][op].version) for op in applicable(tasks[order_id])]
                in_flight = [op for op, task in tasks[order_id].items()
                             if task.status != TaskStatus.DONE or task.done_version < task.version]
                if not operations:
                    expected[order_id] = Expected(None, in_flight=in_flight)
                    continue
                merge = merge_operations(None, {}, facts[order_id][0], operations, dims, now,
                                         storage.settings.business_zone)
                expected[order_id] = Expected(merge.order, merge.items, operations, in_flight)
    return expected


def read_wide_orders(storage: Storage, order_ids: Iterable[str]) -> dict[str, tuple[Row | None, dict[int, Row]]]:
    found: dict[str, tuple[Row | None, dict[int, Row]]] = {}
    for database, ids in _by_database(storage, order_ids).items():
        with storage.read_engine(database).connect() as connection:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                orders, items = read_wide(connection, chunk)
                found.update({o: (orders.get(o), items.get(o, {})) for o in chunk})
    return found


def row_differences(order_id: str, bucket: str, want: Expected, have: Row | None,
                    have_items: dict[int, Row]) -> list[Diff]:
    """Column by column, the order row and each line, expected against found."""
    day = _day(want.order["biz_date"]) if want.order and want.order.get("biz_date") else (
        _day(have["biz_date"]) if have and have.get("biz_date") else None)
    note = f"still on its way: {', '.join(want.in_flight)}" if want.in_flight else None

    def diff(target: str, column: str, expected: str | None, found: str | None) -> Diff:
        return Diff(LAYER, day, order_id, target, column, expected, found, bucket, note)

    diffs: list[Diff] = []
    if want.order is None and have is None:
        return diffs
    if want.order is None:
        return [diff("dwd_order", "*", None, "row without source records")]
    if have is None:
        diffs.append(diff("dwd_order", "*", "row", None))
    else:
        for name, kind in ORDER_COMPARED:
            expected, found = canonical(kind, want.order.get(name)), canonical(kind, have.get(name))
            if expected != found:
                diffs.append(diff("dwd_order", name, expected, found))
    for item_id in sorted(want.items.keys() | have_items.keys()):
        target = f"dwd_order_item {item_id}"
        wanted, stored = want.items.get(item_id), have_items.get(item_id)
        if wanted is None or stored is None:
            diffs.append(diff(target, "*", "row" if wanted else None, "row" if stored else None))
            continue
        for name, kind in ITEM_COMPARED:
            expected, found = canonical(kind, wanted.get(name)), canonical(kind, stored.get(name))
            if expected != found:
                diffs.append(diff(target, name, expected, found))
    return diffs


def compare_wide(storage: Storage, first: dt.date, last: dt.date,
                 progress: Progress = lambda _: None) -> tuple[LayerResult, dict[str, Expected]]:
    """Compare the days' wide rows with their stored records; the result, and what each order
    with a difference should be (for the fix)."""
    result = LayerResult(LAYER)
    candidates = candidate_orders(storage, first, last)
    progress(f"wide: {len(candidates)} orders on {first}..{last}; merging their records")
    expected = expected_orders(storage, candidates)
    want: dict[BucketKey, BucketSums] = defaultdict(BucketSums)
    buckets_of: dict[int, list[str]] = defaultdict(list)
    for order_id, entry in expected.items():
        buckets_of[bucket_of(order_id, BUCKETS)].append(order_id)
        if settled(entry.order, first, last):
            assert entry.order is not None
            want[(_day(entry.order["biz_date"]), bucket_of(order_id, BUCKETS))].add_order(
                entry.order, entry.items.values())
    have = wide_buckets(storage, first, last)
    differing = sorted(key for key in want.keys() | have.keys() if want.get(key) != have.get(key))
    result.counts = {"orders": sum(s.orders for s in want.values()), "buckets": len(want.keys() | have.keys()),
                     "buckets_differing": len(differing)}
    progress(f"wide: {result.counts['buckets']} buckets compared, {len(differing)} differ")
    suspects = sorted({o for _, number in differing for o in buckets_of[number]})
    stored = read_wide_orders(storage, suspects)
    result.rows_read = len(suspects)
    diffs: dict[str, list[Diff]] = {}
    for order_id in suspects:
        order, items = stored[order_id]
        entry = expected[order_id]
        if not (settled(entry.order, first, last) or settled(order, first, last)):
            continue  # neither side counts it on these days
        diffs[order_id] = row_differences(order_id, str(bucket_of(order_id, BUCKETS)), entry, order, items)
    result.diffs = [d for order_id in sorted(diffs) for d in diffs[order_id]]
    result.counts["orders_differing"] = sum(1 for found in diffs.values() if found)
    return result, {order_id: expected[order_id] for order_id, found in diffs.items() if found}
