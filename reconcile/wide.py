"""Source ↔ wide rows: every ``dwd_order``/``dwd_order_item`` column that comes from the source.

The source here is what tdc accepted: the stored records of each order (its metadata), merged
from scratch by the same generators the chain runs, one operation after the other in
state-machine order (an operation the state machine refuses is left out, as the chain leaves it
out).  So a wide row a person edited or deleted, one built from older records than those stored,
or one a step wrote wrong, differs from it.  Columns looked up in dimensions (store and SKU
names, city, region, category) and the row's bookkeeping (version, last operation, write time)
are not compared.

Fast path (default).  When the chain writes a wide row it stores the digest of the row's and its
lines' source columns as it made them from the records (``dwd_order.source_digest``).  Each
shard database sums, per (day, bucket of the order id), the digests of the stored columns and
the stored digests, and counts the settled orders; the warehouse counts the orders its ADS
ledger has on each day and bucket.  A bucket whose digests agree and whose counts match the
ledger's holds exactly the rows the chain wrote: nothing is read row by row.  Every other bucket
(a row edited, deleted or without a stored digest) is compared order by order with a merge of
the records.  ``deep``: every order of the days is merged from its records and compared, which
also finds a row the chain wrote from records that changed since without sending it round again.

Settled orders only: paid, not cancelled, on their business day.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import case, func, select, text

from chain.task_state import facts_of, tasks_of
from chain.wide_rows import (
    ITEM_TABLE,
    ORDER_TABLE,
    SOURCE_ITEM_COLUMNS,
    SOURCE_ORDER_COLUMNS,
    merge_operations,
    read_wide,
    source_digest,
)
from flows.declared.gqsh import CANCELLED, PAID
from flows.machine import Illegal
from flows.registry import machine_of
from models.digests import bucket_of, canonical, sql_bucket, sql_row_digest
from models.sharded import TaskStatus
from models.storage import Storage
from models.warehouse import DEFAULT_LEDGER
from reconcile.diffs import Diff, LayerResult, as_date

LAYER = "wide"
#: Buckets of order ids per day: a difference costs reading the wide rows of 1/BUCKETS of the day.
BUCKETS = 256
#: Orders per read of metadata, tasks or wide rows.
CHUNK = 500
LEDGER = DEFAULT_LEDGER

Row = dict[str, Any]
BucketKey = tuple[dt.date, int]
Progress = Callable[[str], None]


@dataclass
class BucketSums:
    """One (day, bucket): settled orders, the digests of their columns and lines, and (wide side)
    the digests the chain stored, how many rows have none, and how many count in the ADS."""

    orders: int = 0
    digest: int = 0
    stored: int = 0
    unknown: int = 0
    counted: int = 0

    def add_order(self, order: Row, items: Iterable[Row]) -> None:
        self.orders += 1
        self.digest += source_digest(order, items)

    @property
    def as_written(self) -> bool:
        """The rows are what the chain wrote: every stored digest there and equal to the columns'."""
        return self.unknown == 0 and self.digest == self.stored


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

    def get(self, dimension: str, key: Any) -> dict[str, Any]:
        return {}


def settled(order: Row | None, first: dt.date, last: dt.date) -> bool:
    """Paid, not cancelled, on a business day in [first, last]."""
    return (order is not None and order.get("paid_at") is not None and order.get("status") != CANCELLED
            and order.get("biz_date") is not None and first <= as_date(order["biz_date"]) <= last)


def settled_where(first: dt.date, last: dt.date) -> Any:
    """``settled`` as a condition on ``dwd_order``."""
    order = ORDER_TABLE
    return order.c.biz_date.between(first, last) & order.c.paid_at.is_not(None) & (order.c.status != CANCELLED)


def wide_buckets(storage: Storage, first: dt.date, last: dt.date) -> dict[BucketKey, BucketSums]:
    """The wide side, summed by each shard database (all at once): no row leaves the database.

    Lines are summed from their own copies of the order's day and status, without a join: a line
    whose copy disagrees with its order only makes its bucket differ, and be read row by row."""
    sums: dict[BucketKey, BucketSums] = defaultdict(BucketSums)
    parts = storage.each_database(lambda database: _database_buckets(storage, database, first, last))
    for orders, lines in parts:
        for day, number, count, digest, stored, unknown, counted in orders:
            entry = sums[(as_date(day), int(number))]
            entry.orders += int(count)
            entry.digest += int(digest)
            entry.stored += int(stored or 0)
            entry.unknown += int(unknown)
            entry.counted += int(counted)
        for day, number, digest in lines:
            sums[(as_date(day), int(number))].digest += int(digest)
    return dict(sums)


def _database_buckets(storage: Storage, database: int, first: dt.date,
                      last: dt.date) -> tuple[list[Any], list[Any]]:
    order, item = ORDER_TABLE, ITEM_TABLE
    engine = storage.read_engine(database)
    dialect = engine.dialect.name
    bucket = sql_bucket(dialect, order.c.order_id, BUCKETS)
    orders = (select(order.c.biz_date, bucket, func.count(),
                         func.sum(sql_row_digest(dialect, [(order.c[n], k) for n, k in SOURCE_ORDER_COLUMNS])),
                         func.sum(order.c.source_digest),
                         func.sum(case((order.c.source_digest.is_(None), 1), else_=0)),
                         func.sum(case((order.c.store_id.is_not(None), 1), else_=0)))
              .where(settled_where(first, last)).group_by(text("1"), text("2")))
    lines = (select(item.c.biz_date, sql_bucket(dialect, item.c.order_id, BUCKETS),
                    func.sum(sql_row_digest(dialect, [(item.c[n], k) for n, k in SOURCE_ITEM_COLUMNS])))
             .where(item.c.biz_date.between(first, last) & (item.c.status >= PAID) & (item.c.status != CANCELLED))
             .group_by(text("1"), text("2")))
    with engine.connect() as connection:
        return list(connection.execute(orders)), list(connection.execute(lines))


def ledger_buckets(storage: Storage, first: dt.date, last: dt.date) -> dict[BucketKey, int]:
    """Orders the ADS ledger counts per (day, bucket), summed by the warehouse."""
    engine = storage.dws_engine
    bucket = sql_bucket(engine.dialect.name, LEDGER.c.order_id, BUCKETS)
    query = (select(LEDGER.c.biz_date, bucket, func.count())
             .where(LEDGER.c.biz_date.between(first, last) & LEDGER.c.contribution.is_not(None))
             .group_by(text("1"), text("2")))
    with engine.connect() as connection:
        return {(as_date(day), int(number)): int(count) for day, number, count in connection.execute(query)}


def candidate_orders(storage: Storage, first: dt.date, last: dt.date,
                     buckets: Collection[BucketKey] | None = None) -> set[str]:
    """Orders whose wide row is on one of the days, or that the ADS ledger counts on one (only
    those in ``buckets``, (day, bucket) pairs, when given)."""
    found: set[str] = set()
    if buckets is not None and not buckets:
        return found
    numbers = sorted({number for _, number in buckets}) if buckets is not None else None
    sources = [(storage.read_engine(d), ORDER_TABLE.c.order_id, ORDER_TABLE.c.biz_date)
               for d in storage.distinct_databases()]
    sources.append((storage.dws_engine, LEDGER.c.order_id, LEDGER.c.biz_date))
    for engine, order_id, biz_date in sources:
        query = select(order_id, biz_date).where(biz_date.between(first, last))
        if numbers is not None:
            query = query.where(sql_bucket(engine.dialect.name, order_id, BUCKETS).in_(numbers))
        with engine.connect() as connection:
            found.update(o for o, day in connection.execute(query)
                         if buckets is None or (as_date(day), bucket_of(o, BUCKETS)) in buckets)
    return found


def wide_days(storage: Storage, order_ids: Iterable[str]) -> dict[str, dt.date]:
    """The business day of each order that has a wide row with one."""
    days: dict[str, dt.date] = {}
    for database, shards_of in storage.orders_by_database(order_ids).items():
        ids = list(shards_of)
        with storage.read_engine(database).connect() as connection:
            for start in range(0, len(ids), CHUNK):
                days.update((order_id, as_date(day)) for order_id, day in connection.execute(
                    select(ORDER_TABLE.c.order_id, ORDER_TABLE.c.biz_date).where(
                        ORDER_TABLE.c.order_id.in_(ids[start:start + CHUNK]) & ORDER_TABLE.c.biz_date.is_not(None))))
    return days


def _expected_key(entry: Expected) -> BucketKey | None:
    if entry.order is None or entry.order.get("biz_date") is None:
        return None
    return (as_date(entry.order["biz_date"]), bucket_of(entry.order["order_id"], BUCKETS))


def applicable(order_id: str, tasks: Iterable[str]) -> list[str]:
    """The operations of ``tasks`` the order's state machine lets run, in its order (as the chain
    would)."""
    machine = machine_of(order_id)
    done: list[str] = []
    for operation in sorted(tasks, key=machine.rank):
        try:
            if machine.blocking_reason(operation, done, done) is None:
                done.append(operation)
        except Illegal:
            continue
    return done


def expected_orders(storage: Storage, order_ids: Iterable[str]) -> dict[str, Expected]:
    """Each order's wide rows made from scratch from its stored records."""
    expected: dict[str, Expected] = {}
    # The write time is bookkeeping, never compared: any fixed value will do.
    written = dt.datetime(2000, 1, 1)
    dims = _NoDimensions()
    for database, shards_of in storage.orders_by_database(order_ids).items():
        ids = list(shards_of)
        for start in range(0, len(ids), CHUNK):
            shards = {order_id: storage.shard_of(order_id) for order_id in ids[start:start + CHUNK]}
            with storage.read_engine(database).connect() as connection:
                tasks = tasks_of(connection, shards)
                facts = facts_of(connection, shards)
            for order_id in shards:
                operations = [(op, tasks[order_id][op].version) for op in applicable(order_id, tasks[order_id])]
                in_flight = [op for op, task in tasks[order_id].items()
                             if task.status != TaskStatus.DONE or task.done_version < task.version]
                if not operations:
                    expected[order_id] = Expected(None, in_flight=in_flight)
                    continue
                merge = merge_operations(None, {}, facts[order_id][0], operations, dims, written,
                                         storage.settings.business_zone)
                expected[order_id] = Expected(merge.order, merge.items, operations, in_flight)
    return expected


def read_wide_orders(storage: Storage, order_ids: Iterable[str]) -> dict[str, tuple[Row | None, dict[int, Row]]]:
    found: dict[str, tuple[Row | None, dict[int, Row]]] = {}
    for database, shards_of in storage.orders_by_database(order_ids).items():
        ids = list(shards_of)
        with storage.read_engine(database).connect() as connection:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                orders, items = read_wide(connection, chunk)
                found.update({o: (orders.get(o), items.get(o, {})) for o in chunk})
    return found


def row_differences(order_id: str, bucket: str, want: Expected, have: Row | None,
                    have_items: dict[int, Row]) -> list[Diff]:
    """Column by column, the order row and each line, expected against found."""
    day = as_date(want.order["biz_date"]) if want.order and want.order.get("biz_date") else (
        as_date(have["biz_date"]) if have and have.get("biz_date") else None)
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
        for name, kind in SOURCE_ORDER_COLUMNS:
            expected, found = canonical(kind, want.order.get(name)), canonical(kind, have.get(name))
            if expected != found:
                diffs.append(diff("dwd_order", name, expected, found))
    for item_id in sorted(want.items.keys() | have_items.keys()):
        target = f"dwd_order_item {item_id}"
        wanted, stored = want.items.get(item_id), have_items.get(item_id)
        if wanted is None or stored is None:
            diffs.append(diff(target, "*", "row" if wanted else None, "row" if stored else None))
            continue
        for name, kind in SOURCE_ITEM_COLUMNS:
            expected, found = canonical(kind, wanted.get(name)), canonical(kind, stored.get(name))
            if expected != found:
                diffs.append(diff(target, name, expected, found))
    return diffs


def compare_wide(storage: Storage, first: dt.date, last: dt.date, progress: Progress = lambda _: None,
                 deep: bool = False) -> tuple[LayerResult, dict[str, Expected]]:
    """Compare the days' wide rows with their stored records; the result, and what each order
    with a difference should be (for the fix)."""
    result = LayerResult(LAYER)
    clock = time.perf_counter()

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[phase] = result.seconds.get(phase, 0.0) + now - clock
        clock = now

    with ThreadPoolExecutor(max_workers=1) as pool:  # the warehouse counts while the shards sum
        counting = pool.submit(ledger_buckets, storage, first, last) if not deep else None
        have = wide_buckets(storage, first, last)
        ledger = counting.result() if counting is not None else {}
    lap("sums")
    if deep:
        candidates = candidate_orders(storage, first, last)
        progress(f"wide: {len(candidates)} orders on {first}..{last}; merging all their records (deep)")
        expected = expected_orders(storage, candidates)
        lap("records")
        want: dict[BucketKey, BucketSums] = defaultdict(BucketSums)
        for order_id, entry in expected.items():
            if settled(entry.order, first, last):
                assert entry.order is not None
                want[(as_date(entry.order["biz_date"]), bucket_of(order_id, BUCKETS))].add_order(
                    entry.order, entry.items.values())
        differing = {key for key in want.keys() | have.keys()
                     if (want[key].orders, want[key].digest) != (have.get(key, BucketSums()).orders,
                                                                 have.get(key, BucketSums()).digest)}
        compared = len(want.keys() | have.keys())
    else:
        differing = {key for key in have.keys() | ledger.keys()
                     if not have.get(key, BucketSums()).as_written
                     or have.get(key, BucketSums()).counted != ledger.get(key, 0)}
        compared = len(have.keys() | ledger.keys())
        candidates = candidate_orders(storage, first, last, differing)
        expected = expected_orders(storage, candidates)
        lap("records")
    result.counts = {"orders": sum(s.orders for s in have.values()), "buckets": compared,
                     "buckets_differing": len(differing)}
    progress(f"wide: {compared} buckets compared, {len(differing)} differ")
    if deep:  # only the orders of the buckets that differ are read row by row
        days = wide_days(storage, candidates)
        suspects = sorted(o for o in candidates if o not in days or (days[o], bucket_of(o, BUCKETS)) in differing
                          or _expected_key(expected[o]) in differing)
    else:
        suspects = sorted(candidates)
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
    lap("rows")
    return result, {order_id: expected[order_id] for order_id, found in diffs.items() if found}
