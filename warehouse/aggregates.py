"""The ADS aggregates in the warehouse, retract-correct and exactly-once in effect.

For a batch of orders: read their wide rows from the shard databases, then in one warehouse
transaction lock their ledger rows (in key order), take back what each order contributed
last and add what it contributes now (only when its wide row is newer than what the ledger
applied), write the ledger, and drop aggregate rows left holding nothing.  Duplicates,
replays and re-runs find the ledger at the same version and change nothing; concurrent
writers on the same order serialise on its ledger row, and every aggregate row is only ever
incremented in place, so writers on the same store and day never lose each other's update.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

from sqlalchemy import Connection, Table, and_, bindparam, delete, func, select, tuple_, update

from chain.wide_rows import READ_CHUNK, entity_id, read_wide
from flows.ads import DECLARED, declared_aggregates, rebuilt_by_day
from flows.declaration import FlowDeclaration
from flows.declared import DECLARATIONS
from flows.registry import flow_of
from models.storage import Storage
from models.warehouse import ADS_TABLES, LEDGERS
from models.wide import schema_of
from models.writes import upsert
from reliability.transient import retry_on_contention
from warehouse.contributions import AGGREGATES, Cells, Contribution, contribution_of, delta

log = logging.getLogger(__name__)

#: |amount| below half a cent is zero (SQLite keeps decimals as floating point).
HALF_CENT = 0.005

#: order_id -> (dwd_order.version, its contribution now); version 0 when there is no wide row.
WideState = dict[str, tuple[int, Contribution | None]]
T = TypeVar("T")


@dataclass
class AggregateReport:
    #: Orders whose ledger moved to a newer wide row.
    applied: int = 0
    #: Orders the ledger already held at this version or a newer one.
    current: int = 0
    #: Aggregate rows incremented.
    cells: int = 0
    #: Orders left alone: the ledger has seen a newer chain's token for them.
    fenced: set[str] = field(default_factory=set)

    def add(self, other: AggregateReport) -> None:
        self.applied += other.applied
        self.current += other.current
        self.cells += other.cells
        self.fenced |= other.fenced


def wide_state(storage: Storage, order_ids: Iterable[str]) -> WideState:
    """Each entity's wide-row version and contribution, read from its shard database."""
    ids = list(dict.fromkeys(order_ids))
    state: WideState = {}
    for database, shards in storage.orders_by_database(ids).items():
        with storage.read_engine(database).connect() as connection:
            orders, items = read_wide(connection, list(shards))
        state.update((o, (orders[o]["version"] if o in orders else 0,
                          contribution_of(flow_of(o), orders.get(o), items.get(o, {}).values()))) for o in shards)
    return {o: state[o] for o in ids}


def _write_cells(connection: Connection, cells: Cells) -> None:
    """Increment every cell in place (in key order, so writers lock rows in the same order),
    then delete the touched rows that hold nothing any more."""
    by_table: dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]] = defaultdict(list)
    for (name, key), values in cells.items():
        by_table[name].append((key, values))
    for name in AGGREGATES:  # tables in a fixed order too
        if name not in by_table:
            continue
        keys, measures = AGGREGATES[name]
        table = ADS_TABLES[name]
        entries = sorted(by_table[name], key=lambda entry: entry[0])
        rows = [dict(zip(keys, key, strict=True)) | {m: values.get(m, 0) for m in measures} for key, values in entries]

        def increment(new: Any, table: Table = table, measures: tuple[str, ...] = measures) -> dict[str, Any]:
            return {m: table.c[m] + new[m] for m in measures}
        upsert(connection, table, keys, rows, increment)
        empty = and_(*(func.abs(table.c[m]) < HALF_CENT for m in measures))
        touched = [key for key, _ in entries]
        for start in range(0, len(touched), READ_CHUNK):
            chunk = touched[start : start + READ_CHUNK]
            connection.execute(delete(table).where(tuple_(*(table.c[k] for k in keys)).in_(chunk)).where(empty))


def _claim_ledger(connection: Connection, ledger: Table, order_ids: list[str], now: dt.datetime) -> None:
    """Make sure each entity has a ledger row and lock it (insert, or a no-op update that takes
    the row lock), in key order."""
    rows = [dict(order_id=o, wide_version=0, biz_date=None, contribution=None, updated_at=now) for o in order_ids]
    upsert(connection, ledger, ("order_id",), rows, lambda new: {"wide_version": ledger.c.wide_version})


def _by_ledger(ids: Iterable[str]) -> list[tuple[Table, list[str]]]:
    """Entity ids by the ledger of their flow, ledgers in a fixed order (so writers lock alike)."""
    groups: dict[str, list[str]] = defaultdict(list)
    for order_id in ids:
        groups[flow_of(order_id).name].append(order_id)
    return [(LEDGERS[name], groups[name]) for name in sorted(groups) if name in LEDGERS]


def apply_contributions(connection: Connection, wide: WideState, now: dt.datetime,
                        rebuilt_day: dt.date | None = None,
                        tokens: Mapping[str, int] | None = None) -> AggregateReport:
    """Apply (new - old) for every order in ``wide`` in the caller's warehouse transaction.

    ``rebuilt_day``: the aggregates of that day were just emptied, so ledger entries on it
    count as nothing applied and are added again.
    ``tokens``: the fencing token each order's chain holds; an order whose ledger has seen a
    larger one is left alone (``report.fenced``), the others record theirs.
    """
    report = AggregateReport()
    changes: list[tuple[Contribution | None, Contribution | None]] = []
    writes: list[tuple[Table, list[dict[str, Any]]]] = []
    for ledger_table, ids in _by_ledger(sorted(wide)):
        writes.append((ledger_table, _read_ledger(connection, ledger_table, ids, wide, now, rebuilt_day, tokens,
                                                  report, changes)))
    cells = delta(changes)
    _write_cells(connection, cells)
    for ledger_table, rows in writes:
        if rows:
            connection.execute(update(ledger_table).where(ledger_table.c.order_id == bindparam("key")).values(
                wide_version=bindparam("to_version"), biz_date=bindparam("to_day"),
                contribution=bindparam("to_contribution"), fence=bindparam("to_fence"),
                updated_at=bindparam("at")), rows)
        report.applied += len(rows)
    report.cells += len(cells)
    return report


def _read_ledger(connection: Connection, table: Table, ids: list[str], wide: WideState, now: dt.datetime,
                 rebuilt_day: dt.date | None, tokens: Mapping[str, int] | None, report: AggregateReport,
                 changes: list[tuple[Contribution | None, Contribution | None]]) -> list[dict[str, Any]]:
    """One flow's part of ``apply_contributions``: lock its entities' ledger rows, add their
    (old, new) pairs to ``changes``; the ledger writes that go with them."""
    if rebuilt_day is None:
        # Without locks first: replays and re-runs, the common repeat, end here.
        applied = {row.order_id: row.wide_version for row in connection.execute(
            select(table.c.order_id, table.c.wide_version).where(table.c.order_id.in_(ids)))}
        report.current += sum(1 for o in ids if applied.get(o, 0) >= wide[o][0])
        ids = [o for o in ids if applied.get(o, 0) < wide[o][0]]
    if not ids:
        return []
    _claim_ledger(connection, table, ids, now)
    ledger = {row.order_id: row for row in connection.execute(select(table).where(table.c.order_id.in_(ids)))}
    writes: list[dict[str, Any]] = []
    for order_id in ids:
        version, new = wide[order_id]
        row = ledger[order_id]
        fence = row.fence or 0
        if tokens is not None:
            if fence > tokens[order_id]:
                report.fenced.add(order_id)
                continue
            fence = tokens[order_id]
        old = Contribution.from_json(row.contribution) if row.contribution else None
        forgotten = rebuilt_day is not None and row.biz_date == rebuilt_day
        if row.wide_version > version or (row.wide_version == version and not forgotten):
            # Another writer applied this version or a newer one while we read; keep theirs
            # (on a rebuilt day, add theirs again).
            if not forgotten:
                report.current += 1
                continue
            version, new = row.wide_version, old
        changes.append((None if forgotten else old, new))
        writes.append(dict(key=order_id, to_version=version, to_day=new.day if new else None,
                           to_contribution=new.to_json() if new else None, to_fence=fence, at=now))
    return writes


def apply_orders(storage: Storage, orders: Iterable[str] | Mapping[str, int]) -> AggregateReport:
    """Bring the aggregates up to date with the wide rows of ``orders``: order ids, or order id
    -> the fencing token of the chain doing it (see ``apply_contributions``)."""
    tokens = orders if isinstance(orders, Mapping) else None
    wide = wide_state(storage, orders)

    def work() -> AggregateReport:
        with storage.dws_engine.begin() as connection:
            return apply_contributions(connection, wide, _now(), tokens=tokens)
    return retry_on_contention(work)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _by_day() -> list[FlowDeclaration]:
    """The flows whose aggregates are all kept by business day: those a day rebuild covers."""
    return [flow for flow in DECLARATIONS if rebuilt_by_day(flow)]


def _entities_on(storage: Storage, day: dt.date) -> list[str]:
    """The entities whose root wide row is on ``day`` (their contributions say which count)."""
    found: list[str] = []
    for flow in _by_day():
        root, column = schema_of(flow).root, _day_column(flow)
        for database in storage.distinct_databases():
            with storage.read_engine(database).connect() as connection:
                found += [entity_id(flow, key) for key in connection.execute(
                    select(root.c[schema_of(flow).entity]).where(root.c[column] == day)).scalars()]
    return found


def _day_column(flow: FlowDeclaration) -> str:
    return next(d.day for d in declared_aggregates(flow) if d.day is not None)


def rebuild_day(storage: Storage, day: dt.date) -> AggregateReport:
    """Recompute one day of every aggregate kept by business day from the wide rows, replacing
    what is there (an aggregate without a day key, such as a stock balance, is left alone).

    Runs as one warehouse transaction; incremental writers for the day wait on it and then
    apply on top of the rebuilt rows."""
    wide = wide_state(storage, _entities_on(storage, day))
    flows = _by_day()

    def work() -> AggregateReport:
        with storage.dws_engine.begin() as connection:
            # Entities the ledgers have on this day whose wide row moved elsewhere (or went away).
            on_day = [o for flow in flows for o in connection.execute(
                select(LEDGERS[flow.name].c.order_id).where(LEDGERS[flow.name].c.biz_date == day)).scalars()]
            state = dict(wide)
            state.update(wide_state(storage, [o for o in on_day if o not in wide]))
            for flow in flows:
                for declared in declared_aggregates(flow):
                    table = ADS_TABLES[declared.name]
                    connection.execute(delete(table).where(table.c[cast(str, declared.day)] == day))
            return apply_contributions(connection, state, _now(), rebuilt_day=day)
    return retry_on_contention(work)


def days_to_rebuild(storage: Storage) -> list[dt.date]:
    """Every day some day-kept aggregate, ledger entry or wide row is on."""
    days: set[dt.date] = set()
    flows = _by_day()
    with storage.dws_engine.connect() as connection:
        for flow in flows:
            columns = [ADS_TABLES[d.name].c[cast(str, d.day)] for d in declared_aggregates(flow)]
            for column in [*columns, LEDGERS[flow.name].c.biz_date]:
                days.update(d for d in connection.execute(select(column).distinct()).scalars() if d)
    for flow in flows:
        root = schema_of(flow).root
        for database in storage.distinct_databases():
            with storage.read_engine(database).connect() as connection:
                days.update(as_day(d) for d in connection.execute(
                    select(root.c[_day_column(flow)]).distinct()).scalars() if d)
    return sorted(days)


def as_day(value: Any) -> dt.date:
    return value.date() if isinstance(value, dt.datetime) else value


def read_aggregates(connection: Connection, days: Iterable[dt.date] | None = None,
                    tables: Iterable[str] | None = None) -> Cells:
    """The aggregate rows as cells (optionally only on ``days``, only of ``tables``), for comparisons."""
    cells: Cells = {}
    wanted = set(tables) if tables is not None else set(AGGREGATES)
    for name, (keys, measures) in AGGREGATES.items():
        if name not in wanted:
            continue
        table = ADS_TABLES[name]
        query = select(table)
        if days is not None:
            day = DECLARED[name].day
            if day is None:
                continue  # not kept by day
            query = query.where(table.c[day].in_(list(days)))
        for row in connection.execute(query):
            cells[(name, tuple(row._mapping[k] for k in keys))] = {m: row._mapping[m] for m in measures}
    return cells
