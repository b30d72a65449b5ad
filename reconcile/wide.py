"""Source ↔ wide rows: for every flow tdc runs, every wide column that comes from the source.

The source here is what tdc accepted: the stored records of each entity (its metadata), merged
from scratch by the same generators the chain runs, one operation after the other in
state-machine order (an operation the state machine refuses is left out, as the chain leaves it
out).  So a wide row a person edited or deleted, one built from older records than those stored,
or one a step wrote wrong, differs from it.  Columns looked up in dimensions (store and SKU
names, materials, stocks) and the row's bookkeeping (version, last operation, write time) are
not compared.

Fast path (default).  When the chain writes a root wide row it stores the digest of the row's and
its child rows' source columns as it made them from the records (its ``source_digest`` column).
Each shard database sums, per (flow, day, bucket of the entity id), the digests of the stored
columns and the stored digests, and counts the settled entities and those that contribute to the
ADS; the warehouse counts the entities each flow's ledger has on each day and bucket.  A bucket
whose digests agree and whose counts match the ledger's holds exactly the rows the chain wrote:
nothing is read row by row.  Every other bucket (a row edited, deleted or without a stored
digest) is compared entity by entity with a merge of the records.  ``deep``: every entity of the
days is merged from its records and compared, which also finds a row the chain wrote from records
that changed since without sending it round again.

Settled entities only (``reconcile.settled``): on their business day, counted by their flow's
aggregates.
"""

from __future__ import annotations

import datetime as dt
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import case, func, select, text

from chain.task_state import facts_of, tasks_of
from chain.wide_rows import entity_id, entity_values, merge_operations, read_wide, source_digest
from flows.machine import Illegal
from flows.registry import flow_of, machine_of
from models.digests import bucket_of, canonical, sql_bucket, sql_row_digest
from models.sharded import TaskStatus
from models.storage import Storage
from reconcile.diffs import Diff, LayerResult, as_date
from reconcile.settled import Settled, reconciled_flows, settled_of

LAYER = "wide"
#: Buckets of entity ids per flow and day: a difference costs reading 1/BUCKETS of the day's rows.
BUCKETS = 256
#: Entities per read of metadata, tasks or wide rows.
CHUNK = 500

Row = dict[str, Any]
#: (flow, day, bucket of the entity id).
BucketKey = tuple[str, dt.date, int]
Progress = Callable[[str], None]


@dataclass
class BucketSums:
    """One (flow, day, bucket): settled entities, the digests of their columns and child rows,
    and (wide side) the digests the chain stored, how many rows have none, and how many count in
    the ADS."""

    orders: int = 0
    digest: int = 0
    stored: int = 0
    unknown: int = 0
    counted: int = 0

    def add_order(self, order: Row, items: Iterable[Row], settled: Settled, dialect: str) -> None:
        self.orders += 1
        self.digest += source_digest(order, items, settled.flow, dialect)

    @property
    def as_written(self) -> bool:
        """The rows are what the chain wrote: every stored digest there and equal to the columns'."""
        return self.unknown == 0 and self.digest == self.stored


@dataclass
class Expected:
    """An entity's wide rows as its stored records make them, and the operations still on their way."""

    order: Row | None
    items: dict[Any, Row] = field(default_factory=dict)
    #: (operation, task version) the rows are made of, in state-machine order.
    operations: list[tuple[str, int]] = field(default_factory=list)
    in_flight: list[str] = field(default_factory=list)


class _NoDimensions:
    """Dimension columns are not compared: look nothing up."""

    def get(self, dimension: str, key: Any) -> dict[str, Any]:
        return {}


def _settled(order_id: str) -> Settled | None:
    return settled_of(flow_of(order_id))


def settled(order_id: str, order: Row | None, first: dt.date, last: dt.date) -> bool:
    """Entity ``order_id``'s root row ``order`` counts on a day of [first, last]."""
    found = _settled(order_id)
    return found is not None and found.settled(order, first, last)


def wide_buckets(storage: Storage, flows: Sequence[Settled], first: dt.date,
                 last: dt.date) -> dict[BucketKey, BucketSums]:
    """The wide side, summed by each shard database (all at once): no row leaves the database."""
    sums: dict[BucketKey, BucketSums] = defaultdict(BucketSums)
    parts = storage.each_database(lambda database: _database_buckets(storage, database, flows, first, last))
    for part in parts:
        for flow, (roots, children) in zip(flows, part, strict=True):
            for day, number, count, digest, stored, unknown, counted in roots:
                entry = sums[(flow.name, as_date(day), int(number))]
                entry.orders += int(count)
                entry.digest += int(digest)
                entry.stored += int(stored or 0)
                entry.unknown += int(unknown)
                entry.counted += int(counted)
            for day, number, digest in children:
                sums[(flow.name, as_date(day), int(number))].digest += int(digest)
    return dict(sums)


def _database_buckets(storage: Storage, database: int, flows: Sequence[Settled], first: dt.date,
                      last: dt.date) -> list[tuple[list[Any], list[Any]]]:
    engine = storage.read_engine(database)
    dialect = engine.dialect.name
    found = []
    with engine.connect() as connection:
        for flow in flows:
            schema = flow.schema
            root, child = schema.root, schema.child
            source_root, source_child = flow.layout.digested(dialect)
            bucket, day, where = flow.bucket(dialect, BUCKETS), root.c[flow.day], flow.settled_where(first, last)
            # (every root keeps one: flows.validation)
            stored, unknown = root.c.source_digest, case((root.c.source_digest.is_(None), 1), else_=0)
            roots = (select(day, bucket, func.count(),
                            func.sum(sql_row_digest(dialect, [(root.c[n], k) for n, k in source_root])),
                            func.sum(stored), func.sum(unknown), func.sum(case((flow.contributes(), 1), else_=0)))
                     .where(where).group_by(text("1"), text("2")))
            children: list[Any] = []
            if child is not None:
                linked = child.c[cast(str, schema.child_entity)] == root.c[schema.entity]
                children = list(connection.execute(
                    select(day, bucket, func.sum(sql_row_digest(dialect, [(child.c[n], k)
                                                                          for n, k in source_child])))
                    .select_from(child.join(root, linked)).where(where).group_by(text("1"), text("2"))))
            found.append((list(connection.execute(roots)), children))
    return found


def ledger_buckets(storage: Storage, flows: Sequence[Settled], first: dt.date, last: dt.date) -> dict[BucketKey, int]:
    """Entities each flow's ADS ledger counts per (day, bucket), summed by the warehouse."""
    engine = storage.dws_engine
    counts: dict[BucketKey, int] = {}
    with engine.connect() as connection:
        for flow in flows:
            ledger = flow.ledger
            if ledger is None:
                continue
            bucket = sql_bucket(engine.dialect.name, ledger.c.order_id, BUCKETS)
            query = (select(ledger.c.biz_date, bucket, func.count())
                     .where(ledger.c.biz_date.between(first, last) & ledger.c.contribution.is_not(None))
                     .group_by(text("1"), text("2")))
            counts.update({(flow.name, as_date(day), int(number)): int(count)
                           for day, number, count in connection.execute(query)})
    return counts


def candidate_orders(storage: Storage, first: dt.date, last: dt.date, buckets: Collection[BucketKey] | None = None,
                     flows: Sequence[Settled] | None = None) -> set[str]:
    """Entities whose root wide row is on one of the days, or that their flow's ledger counts on
    one (only those in ``buckets``, (flow, day, bucket) triples, when given)."""
    found: set[str] = set()
    if buckets is not None and not buckets:
        return found
    for flow in (flows if flows is not None else reconciled_flows(storage.settings.flows)):
        numbers = sorted({n for name, _, n in buckets if name == flow.name}) if buckets is not None else None
        if numbers is not None and not numbers:
            continue
        root = flow.schema.root
        sources = [(storage.read_engine(d), flow.entity_text(), root.c[flow.day]) for d in storage.distinct_databases()]
        if flow.ledger is not None:
            sources.append((storage.dws_engine, flow.ledger.c.order_id, flow.ledger.c.biz_date))
        for engine, order_id, biz_date in sources:
            query = select(order_id, biz_date).where(biz_date.between(first, last))
            if numbers is not None:
                query = query.where(sql_bucket(engine.dialect.name, order_id, BUCKETS).in_(numbers))
            with engine.connect() as connection:
                found.update(o for o, day in connection.execute(query)
                             if buckets is None or (flow.name, as_date(day), bucket_of(o, BUCKETS)) in buckets)
    return found


def wide_days(storage: Storage, order_ids: Iterable[str]) -> dict[str, dt.date]:
    """The business day of each entity that has a root wide row with one."""
    days: dict[str, dt.date] = {}
    for database, shards_of in storage.orders_by_database(order_ids).items():
        by_flow: dict[str, tuple[Settled, list[str]]] = {}
        for order_id in shards_of:
            found = _settled(order_id)
            if found is not None:
                by_flow.setdefault(found.name, (found, []))[1].append(order_id)
        with storage.read_engine(database).connect() as connection:
            for flow, ids in by_flow.values():
                root, key = flow.schema.root, flow.schema.root.c[flow.schema.entity]
                for start in range(0, len(ids), CHUNK):
                    values = entity_values(flow.layout, ids[start:start + CHUNK])
                    days.update((entity_id(flow.flow, entity), as_date(day)) for entity, day in connection.execute(
                        select(key, root.c[flow.day]).where(key.in_(values) & root.c[flow.day].is_not(None))))
    return days


def _expected_key(order_id: str, entry: Expected) -> BucketKey | None:
    found = _settled(order_id)
    if found is None or entry.order is None or entry.order.get(found.day) is None:
        return None
    return (found.name, as_date(entry.order[found.day]), bucket_of(order_id, BUCKETS))


def applicable(order_id: str, tasks: Iterable[str]) -> list[str]:
    """The operations of ``tasks`` the entity's state machine lets run, in its order (as the chain
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
    """Each entity's wide rows made from scratch from its stored records."""
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


def read_wide_orders(storage: Storage, order_ids: Iterable[str]) -> dict[str, tuple[Row | None, dict[Any, Row]]]:
    found: dict[str, tuple[Row | None, dict[Any, Row]]] = {}
    for database, shards_of in storage.orders_by_database(order_ids).items():
        ids = list(shards_of)
        with storage.read_engine(database).connect() as connection:
            for start in range(0, len(ids), CHUNK):
                chunk = ids[start:start + CHUNK]
                orders, items = read_wide(connection, chunk)
                found.update({o: (orders.get(o), items.get(o, {})) for o in chunk})
    return found


def root_table(order_id: str) -> str:
    """The name of the root wide table of entity ``order_id`` (a difference's target)."""
    found = settled_of(flow_of(order_id))
    return found.schema.root.name if found is not None else "root"


def row_differences(order_id: str, bucket: str, want: Expected, have: Row | None,
                    have_items: dict[Any, Row], dialect: str) -> list[Diff]:
    """Column by column, the root row and each child row, expected against found (the columns'
    kinds as a database of ``dialect`` keeps them)."""
    flow = _settled(order_id)
    assert flow is not None
    schema = flow.schema
    source_root, source_child = flow.layout.digested(dialect)
    day = as_date(want.order[flow.day]) if want.order and want.order.get(flow.day) else (
        as_date(have[flow.day]) if have and have.get(flow.day) else None)
    note = f"still on its way: {', '.join(want.in_flight)}" if want.in_flight else None

    def diff(target: str, column: str, expected: str | None, found: str | None) -> Diff:
        return Diff(LAYER, day, order_id, target, column, expected, found, bucket, note)

    diffs: list[Diff] = []
    root = schema.root.name
    if want.order is None and have is None:
        return diffs
    if want.order is None:
        return [diff(root, "*", None, "row without source records")]
    if have is None:
        diffs.append(diff(root, "*", "row", None))
    else:
        for name, kind in source_root:
            expected, found = canonical(kind, want.order.get(name)), canonical(kind, have.get(name))
            if expected != found:
                diffs.append(diff(root, name, expected, found))
    child = schema.child.name if schema.child is not None else "child"
    for item_id in sorted(want.items.keys() | have_items.keys()):
        target = f"{child} {item_id}"
        wanted, stored = want.items.get(item_id), have_items.get(item_id)
        if wanted is None or stored is None:
            diffs.append(diff(target, "*", "row" if wanted else None, "row" if stored else None))
            continue
        for name, kind in source_child:
            expected, found = canonical(kind, wanted.get(name)), canonical(kind, stored.get(name))
            if expected != found:
                diffs.append(diff(target, name, expected, found))
    return diffs


def compare_wide(storage: Storage, first: dt.date, last: dt.date, progress: Progress = lambda _: None,
                 deep: bool = False) -> tuple[LayerResult, dict[str, Expected]]:
    """Compare the days' wide rows of every flow tdc runs with their stored records; the result,
    and what each entity with a difference should be (for the fix)."""
    result = LayerResult(LAYER)
    clock = time.perf_counter()
    flows = reconciled_flows(storage.settings.flows)
    dialect = storage.read_engine(storage.distinct_databases()[0]).dialect.name

    def lap(phase: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        result.seconds[phase] = result.seconds.get(phase, 0.0) + now - clock
        clock = now

    with ThreadPoolExecutor(max_workers=1) as pool:  # the warehouse counts while the shards sum
        counting = pool.submit(ledger_buckets, storage, flows, first, last) if not deep else None
        have = wide_buckets(storage, flows, first, last)
        ledger = counting.result() if counting is not None else {}
    lap("sums")
    if deep:
        candidates = candidate_orders(storage, first, last, flows=flows)
        progress(f"wide: {len(candidates)} entities on {first}..{last}; merging all their records (deep)")
        expected = expected_orders(storage, candidates)
        lap("records")
        want: dict[BucketKey, BucketSums] = defaultdict(BucketSums)
        for order_id, entry in expected.items():
            key = _expected_key(order_id, entry)
            if key is not None and settled(order_id, entry.order, first, last):
                assert entry.order is not None
                flow = _settled(order_id)
                assert flow is not None
                want[key].add_order(entry.order, entry.items.values(), flow, dialect)
        differing = {key for key in want.keys() | have.keys()
                     if (want[key].orders, want[key].digest) != (have.get(key, BucketSums()).orders,
                                                                 have.get(key, BucketSums()).digest)}
        compared = len(want.keys() | have.keys())
    else:
        differing = {key for key in have.keys() | ledger.keys()
                     if not have.get(key, BucketSums()).as_written
                     or have.get(key, BucketSums()).counted != ledger.get(key, 0)}
        compared = len(have.keys() | ledger.keys())
        candidates = candidate_orders(storage, first, last, differing, flows)
        expected = expected_orders(storage, candidates)
        lap("records")
    result.counts = {"orders": sum(s.orders for s in have.values()), "buckets": compared,
                     "buckets_differing": len(differing)}
    progress(f"wide: {compared} buckets compared, {len(differing)} differ")
    if deep:  # only the entities of the buckets that differ are read row by row
        days = wide_days(storage, candidates)
        suspects = sorted(o for o in candidates if o not in days
                          or (flow_of(o).name, days[o], bucket_of(o, BUCKETS)) in differing
                          or _expected_key(o, expected[o]) in differing)
    else:
        suspects = sorted(candidates)
    stored = read_wide_orders(storage, suspects)
    result.rows_read = len(suspects)
    diffs: dict[str, list[Diff]] = {}
    for order_id in suspects:
        order, items = stored[order_id]
        entry = expected[order_id]
        if not (settled(order_id, entry.order, first, last) or settled(order_id, order, first, last)):
            continue  # neither side counts it on these days
        diffs[order_id] = row_differences(order_id, str(bucket_of(order_id, BUCKETS)), entry, order, items, dialect)
    result.diffs = [d for order_id in sorted(diffs) for d in diffs[order_id]]
    result.counts["orders_differing"] = sum(1 for found in diffs.values() if found)
    lap("rows")
    return result, {order_id: expected[order_id] for order_id, found in diffs.items() if found}
