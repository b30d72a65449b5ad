"""``tdc search``: a flow's entities (orders, documents) by store, status, member, channel, SKU,
amount and day, newest first, as the flow's index document declares them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.storage import Storage
    from search.documents import SearchDocument

def _cell(part: str, value: Any) -> str:
    if part == "nested":
        return str(len(value or []))
    if value is None:
        return ""
    return str(value)[:19] if part == "newest_by" else str(value)


def table(orders: list[dict[str, Any]], document: SearchDocument) -> str:
    from search.documents import table_columns

    shown = table_columns(document)
    rows = [[heading for _, heading, _ in shown]] + [[_cell(part, o.get(name)) for name, _, part in shown]
                                                    for o in orders]
    widths = [max(len(row[i]) for row in rows) for i in range(len(shown))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
                     for row in rows)


def cmd_search(args: argparse.Namespace) -> int:
    if args.search_command == "init":
        return _init()
    if args.search_command == "reindex":
        return _reindex()
    from chain.wide_rows import to_json
    from models.storage import get_storage
    from search.find import find_orders
    from search.query import OrderQuery, QueryError

    try:
        query = OrderQuery.parse(order_id=args.order, store_id=args.store, status=args.status, member_id=args.member,
                                 channel=args.channel, sku_id=args.sku, min_amount=args.min_amount,
                                 max_amount=args.max_amount, date_from=args.date_from, date_to=args.date_to,
                                 limit=args.limit, flow=args.flow)
        document = query.document()
        found = find_orders(get_storage(), query)
    except QueryError as error:
        print(f"tdc: {error}", file=sys.stderr)
        return 2
    if found.notice:
        print(f"tdc: {found.notice}", file=sys.stderr)
    orders, where, took = found.orders, found.where, found.took_ms
    if args.json:
        print(json.dumps(json.loads(to_json(orders)), indent=2, ensure_ascii=False))
    else:
        print(table(orders, document))
    print(f"{len(orders)} {'orders' if document.flow.entity_prefix == '' else document.flow.name + ' entities'}"
          f"{' (the limit)' if len(orders) == query.limit else ''} from {where} "
          f"in {took:.0f} ms", file=sys.stderr)
    return 0


def _indexes():  # type: ignore[no-untyped-def]
    from search.elastic import configured_indexes
    from settings import get_settings

    settings = get_settings()
    if not settings.es_url:
        print("tdc: TDC_ES_URL is not set: there is no index to manage (search uses the wide rows)", file=sys.stderr)
        return None
    indexes = configured_indexes(settings)
    if not indexes:
        print(f"tdc: no running flow ({', '.join(settings.flows)}) declares an index document", file=sys.stderr)
        return None
    return indexes


def _init() -> int:
    indexes = _indexes()
    if indexes is None:
        return 2
    for name, index in indexes.items():
        current = index.init()
        print(f"{name}: template {index.template}, alias {index.alias} -> {current}")
    return 0


def _wide_rows(storage: Storage, document: SearchDocument) -> int:
    """How many wide rows a reindex of the flow copies (one COUNT per shard database)."""
    from sqlalchemy import func, select

    def one(database: int) -> int:
        with storage.read_engine(database).connect() as connection:
            return int(connection.execute(select(func.count()).select_from(document.root)).scalar_one())
    return sum(one(database) for database in storage.distinct_databases())


def _reindex() -> int:
    from cli.progress import progress
    from models.storage import get_storage

    indexes = _indexes()
    if indexes is None:
        return 2
    storage = get_storage()
    refused = False
    for name, index in indexes.items():
        started = time.monotonic()
        with progress(f"search reindex {name}", total=_wide_rows(storage, index.document), unit="documents") as shown:
            new, report = index.reindex(storage, progress=shown.note, copied=shown.advance)
        print(f"{name}: reindexed into {new} in {time.monotonic() - started:.1f}s: {report.indexed} documents, "
              f"{report.stale} already newer, {len(report.failed)} refused")
        for entity_id, reason in sorted(report.failed.items())[:10]:
            print(f"  refused {entity_id}: {reason}")
        refused |= bool(report.failed)
    return 1 if refused else 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "search", help="a flow's orders or documents matching every condition given, newest first",
        description="Conditions combine with AND, each on the field the flow's index document declares for "
                    "it (tdc flow show FLOW); amounts and days are inclusive. Uses the flow's Elasticsearch "
                    "index when TDC_ES_URL is set, its wide rows otherwise.")
    parser.add_argument("--flow", help="the flow searched (default: the one --order names, else the first "
                                       "running flow with an index)")
    parser.add_argument("--order", help="entity id (an order id; pos:PO0001)")
    parser.add_argument("--store", help="store id")
    parser.add_argument("--status", help="status code (tdc flow show FLOW lists each operation's)")
    parser.add_argument("--member", help="member id (a Kingdee document's customer)")
    parser.add_argument("--channel", help="channel")
    parser.add_argument("--sku", help="those with a line of this SKU (material)")
    parser.add_argument("--min-amount", help="the amount (online orders: pay_amount) at least this")
    parser.add_argument("--max-amount", help="the amount at most this")
    parser.add_argument("--from", dest="date_from", help="business day YYYY-MM-DD, from")
    parser.add_argument("--to", dest="date_to", help="business day YYYY-MM-DD, to")
    parser.add_argument("--limit", default="50", help="at most this many (default 50)")
    parser.add_argument("--json", action="store_true", help="print what is found, with its lines, as JSON")
    parser.set_defaults(run=cmd_search, search_command=None)
    manage = parser.add_subparsers(dest="search_command", required=False, metavar="{init,reindex}")
    manage.add_parser("init", help="create each running flow's index template, first index and alias (safe to "
                                   "run again)")
    manage.add_parser("reindex", help="build each running flow's new index from its wide rows and move its alias "
                                      "to it atomically")
