"""Source database ↔ accepted records: the source database's current rows against what tdc stored.

Only with a source database (``TDC_CDC_SOURCE_URL``); it compares the flows tdc runs that follow
that database (``TDC_SOURCE_DATABASES``, or each flow's own).  A day's entities are those tdc has
on the day (wide rows, the ADS ledgers) and those the source settled in it (by a header table's
``settled_at`` column, an hour either side).  Their rows in every entity table of those flows
that the database holds are read in one consistent transaction, made into records exactly as
intake makes them from a snapshot, and compared with the stored records of the same operation,
source and key:

- a source row with no live stored record: a change tdc never received (``*``, found missing);
- a stored record whose source row is gone: a delete tdc never received (``*``, expected missing);
- a stored record with other values: per column, the source's value against the stored one.

A header is stored once per operation its status feeds; the copies of operations the status no
longer feeds are history, not differences.  Business writes (payments) are not in the source
database: the ``wide`` layer covers them.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable
from typing import Any

import pymysql
import pymysql.cursors
from pymysql.constants import FIELD_TYPE

from cdc.source import Source, row_line, source_of
from chain.task_state import facts_of
from flows import Flow, route
from flows.registry import BY_NAME, flow_of, routing
from inputs.events import BadInput
from inputs.formats import parse_line
from intake.receiver import route_of
from models.storage import Storage
from reconcile.diffs import Diff, LayerResult
from reconcile.wide import candidate_orders, wide_days

LAYER = "source"
#: Orders per IN (...) read of a source table.
CHUNK = 500
#: How far outside the business day a header's settled time is still looked at (a payment's own
#: time, which decides ``biz_date``, may fall a little after the header's).
MARGIN = dt.timedelta(hours=1)

Key = tuple[str, str, str, str]  # (order, operation, source, unique key)
#: The note of a stored row deleted at the source.
GONE = "gone at the source"
Progress = Callable[[str], None]


class SourceUnavailable(RuntimeError):
    """No source database is configured; the message says what to set."""


def configured_source(storage: Storage) -> Source:
    url = storage.settings.cdc_source_url
    if not url:
        raise SourceUnavailable("layer 'source' compares the order center's tables: set TDC_CDC_SOURCE_URL "
                                "(mysql+pymysql://user:password@host:3306/database)")
    return source_of(url)


def compared_flows(storage: Storage, source: Source) -> list[tuple[str, Flow]]:
    """Each flow tdc runs that follows the source's database: its entity prefix and what intake
    routes it by."""
    route = route_of(storage)
    flows = ((BY_NAME[name].entity_prefix, routing(BY_NAME[name])) for name in storage.settings.flows)
    return [(prefix, flow) for prefix, flow in flows if route.follows(flow, source.database)]


def held_tables(connection: pymysql.connections.Connection, database: str, flow: Flow) -> list[str]:
    """The flow's entity tables (those with an entity key) that the source database holds."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (database,))
        present = {str(row[0]) for row in cursor.fetchall()}
    return [name for name, table in flow.tables.items() if table.order_key is not None and name in present]


def source_keys(prefix: str, orders: Iterable[str]) -> list[str]:
    """The source key values of the entities of ``orders`` of the flow whose ids start ``prefix``."""
    return [order_id[len(prefix):] for order_id in orders if flow_of(order_id).entity_prefix == prefix]


def _day_bounds(storage: Storage, first: dt.date, last: dt.date, utc: bool) -> tuple[dt.datetime, dt.datetime]:
    """[first, last] in the business zone, widened by MARGIN, as the source column keeps time."""
    zone = storage.settings.business_zone
    into = dt.UTC if utc else storage.settings.source_zone
    start = dt.datetime.combine(first, dt.time(), zone) - MARGIN
    end = dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), zone) + MARGIN
    return start.astimezone(into).replace(tzinfo=None), end.astimezone(into).replace(tzinfo=None)


def settled_at_source(storage: Storage, flow: Flow, connection: pymysql.connections.Connection, database: str,
                      first: dt.date, last: dt.date, tables: list[str]) -> set[str]:
    """Entities whose header the source says was settled on (about) the days."""
    found: set[str] = set()
    for name in tables:
        table = flow.tables[name]
        if table.settled_at is None or table.order_key is None:
            continue
        low, high = _day_bounds(storage, first, last, utc=table.types[table.settled_at].name == "timestamp")
        with connection.cursor() as cursor:
            # Declared names only; the bounds are bound parameters.
            cursor.execute(f"SELECT `{table.order_key}` FROM `{database}`.`{name}` "
                           f"WHERE `{table.settled_at}` >= %s AND `{table.settled_at}` < %s", (low, high))
            found.update(table.entity_prefix + str(row[0]) for row in cursor.fetchall())
    return found


def source_records(storage: Storage, flow: Flow, connection: pymysql.connections.Connection, database: str,
                   orders: list[str], tables: list[str]) -> tuple[dict[Key, dict[str, Any]], set[tuple[str, str, str]],
                                                            list[Diff]]:
    """The records intake would make of the entities' current source rows in ``tables``: by key,
    the (entity, source, unique key) of every row, and a difference for each row intake would
    refuse."""
    records: dict[Key, dict[str, Any]] = {}
    present: set[tuple[str, str, str]] = set()
    refused: list[Diff] = []
    route_ = route_of(storage)
    for name in tables:
        table = flow.tables[name]
        order_key, keys = table.order_key, source_keys(table.entity_prefix, orders)
        for start in range(0, len(keys), CHUNK):
            chunk = keys[start:start + CHUNK]
            with connection.cursor(pymysql.cursors.DictCursor) as cursor:
                cursor.execute(f"SELECT * FROM `{database}`.`{name}` WHERE `{order_key}` IN "
                               f"({', '.join(['%s'] * len(chunk))})", tuple(chunk))
                utc = frozenset(d[0] for d in cursor.description or () if d[1] == FIELD_TYPE.TIMESTAMP)
                rows = cursor.fetchall()
            for row in rows:
                line = row_line("r", database, name, None, row, "reconcile.000001", 4, 0, 0, utc=utc)
                try:
                    routed = [route(flow, item, "debezium", route_) for item in parse_line("debezium", line)]
                except BadInput as error:
                    refused.append(Diff(LAYER, None, table.entity_prefix + str(row.get(order_key)), f"{name} row", "*",
                                        "row", None,
                                       note=f"intake would refuse it: {error.reason}"))
                    continue
                for part in routed:
                    for record in part.records:
                        records[(record.order_id, record.operation_type, record.source, record.unique_key)] = \
                            record.content
                        present.add((record.order_id, record.source, record.unique_key))
    return records, present, refused


def stored_records(storage: Storage, sources: set[str],
                   orders: Iterable[str]) -> dict[Key, tuple[str, dict[str, Any]]]:
    """The stored records of ``orders`` from ``sources``: key -> (kind, content)."""
    stored: dict[Key, tuple[str, dict[str, Any]]] = {}
    for database, shards in storage.orders_by_database(orders).items():
        ids = sorted(shards)
        for start in range(0, len(ids), CHUNK):
            chunk = {order_id: shards[order_id] for order_id in ids[start:start + CHUNK]}
            with storage.read_engine(database).connect() as connection:
                for _, rows in facts_of(connection, chunk).values():
                    for row in rows:
                        if row.source in sources:
                            stored[(row.order_id, row.operation_type, row.source, row.unique_key)] = (
                                row.kind, json.loads(row.content))
    return stored


def _shown(value: Any) -> str | None:
    return None if value is None else str(value)


def compare_source(storage: Storage, first: dt.date, last: dt.date,
                   progress: Progress = lambda _: None) -> LayerResult:
    """Compare the days' entities' source rows with their stored records."""
    source = configured_source(storage)
    result = LayerResult(LAYER)
    started = time.perf_counter()
    connection = source.connect()
    expected: dict[Key, dict[str, Any]] = {}
    present: set[tuple[str, str, str]] = set()
    refused: list[Diff] = []
    compared: set[str] = set()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET SESSION time_zone = '+00:00'")  # TIMESTAMP columns read in UTC, as the snapshot
            cursor.execute("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY")
        flows = [(flow, held_tables(connection, source.database, flow)) for _, flow in compared_flows(storage, source)]
        orders = candidate_orders(storage, first, last)
        for flow, tables in flows:
            orders |= settled_at_source(storage, flow, connection, source.database, first, last, tables)
        progress(f"source: reading the source rows of {len(orders)} entities")
        for flow, tables in flows:
            records, rows, bad = source_records(storage, flow, connection, source.database, sorted(orders), tables)
            expected.update(records)
            present |= rows
            refused += bad
            compared.update(tables)
        connection.commit()
    finally:
        connection.close()
    result.seconds["source rows"] = time.perf_counter() - started
    stored = stored_records(storage, compared, orders)
    result.seconds["records"] = time.perf_counter() - started - result.seconds["source rows"]
    diffs = list(refused)
    live = {(o, s, k) for (o, _, s, k), (kind, _) in stored.items() if kind != "delete"}
    for key in sorted(expected.keys() | stored.keys()):
        order_id, operation, name, unique_key = key
        target = f"{name} {unique_key}"
        want = expected.get(key)
        kind, have = stored.get(key, ("", None))
        if want is not None and (have is None or kind == "delete"):
            diffs.append(Diff(LAYER, None, order_id, target, "*", "row", None, note=f"for {operation}"))
        elif want is None and have is not None and kind != "delete" and (order_id, name, unique_key) not in present:
            if (order_id, name, unique_key) in live:
                live.discard((order_id, name, unique_key))  # one difference per row gone, not per operation
                diffs.append(Diff(LAYER, None, order_id, target, "*", None, "row", note=GONE))
        elif want is not None and have is not None:
            for column in sorted(want.keys() | have.keys()):
                if want.get(column) != have.get(column):
                    diffs.append(Diff(LAYER, None, order_id, target, column, _shown(want.get(column)),
                                      _shown(have.get(column)), note=f"for {operation}"))
    days = wide_days(storage, {d.order_id for d in diffs if d.order_id is not None})
    for diff in diffs:
        diff.biz_date = days.get(diff.order_id or "")
    result.diffs = diffs
    result.counts = {"orders": len(orders), "source_rows": len(present), "records": len(stored),
                     "orders_differing": len({d.order_id for d in diffs})}
    return result
