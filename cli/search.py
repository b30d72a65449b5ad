"""``tdc search``: orders by store, status, member, channel, SKU, amount and day, newest first."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models.storage import Storage

#: Columns of the readable table, with their headings.
COLUMNS = (("order_id", "order"), ("biz_date", "day"), ("store_id", "store"), ("status", "status"),
           ("member_id", "member"), ("channel", "channel"), ("pay_amount", "paid"), ("items", "lines"),
           ("created_at", "created"))


def _cell(name: str, value: Any) -> str:
    if name == "items":
        return str(len(value or []))
    if value is None:
        return ""
    return str(value)[:19] if name == "created_at" else str(value)


def table(orders: list[dict[str, Any]]) -> str:
    rows = [[heading for _, heading in COLUMNS]] + [[_cell(name, o.get(name)) for name, _ in COLUMNS] for o in orders]
    widths = [max(len(row[i]) for row in rows) for i in range(len(COLUMNS))]
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
                                 limit=args.limit)
    except QueryError as error:
        print(f"tdc: {error}", file=sys.stderr)
        return 2
    found = find_orders(get_storage(), query)
    if found.notice:
        print(f"tdc: {found.notice}", file=sys.stderr)
    orders, where, took = found.orders, found.where, found.took_ms
    if args.json:
        print(json.dumps(json.loads(to_json(orders)), indent=2, ensure_ascii=False))
    else:
        print(table(orders))
    print(f"{len(orders)} orders{' (the limit)' if len(orders) == query.limit else ''} from {where} "
          f"in {took:.0f} ms", file=sys.stderr)
    return 0


def _index():  # type: ignore[no-untyped-def]
    from search.elastic import OrderIndex
    from settings import get_settings

    index = OrderIndex.configured(get_settings())
    if index is None:
        print("tdc: TDC_ES_URL is not set: there is no index to manage (search uses the wide rows)", file=sys.stderr)
    return index


def _init() -> int:
    index = _index()
    if index is None:
        return 2
    current = index.init()
    print(f"template {index.template}, alias {index.alias} -> {current}")
    return 0


def _wide_rows(storage: Storage) -> int:
    """How many wide rows a reindex copies (one COUNT per shard database)."""
    from sqlalchemy import func, select

    from chain.wide_rows import ORDER_TABLE

    def one(database: int) -> int:
        with storage.read_engine(database).connect() as connection:
            return int(connection.execute(select(func.count()).select_from(ORDER_TABLE)).scalar_one())
    return sum(one(database) for database in storage.distinct_databases())


def _reindex() -> int:
    from cli.progress import progress
    from models.storage import get_storage

    index = _index()
    if index is None:
        return 2
    started = time.monotonic()
    storage = get_storage()
    with progress("search reindex", total=_wide_rows(storage), unit="orders") as shown:
        new, report = index.reindex(storage, progress=shown.note, copied=shown.advance)
    print(f"reindexed into {new} in {time.monotonic() - started:.1f}s: {report.indexed} documents, "
          f"{report.stale} already newer, {len(report.failed)} refused")
    for order_id, reason in sorted(report.failed.items())[:10]:
        print(f"  refused {order_id}: {reason}")
    return 1 if report.failed else 0


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "search", help="orders matching every condition given, newest first",
        description="Conditions combine with AND. Amounts apply to pay_amount and are inclusive; dates apply "
                    "to biz_date and are inclusive. Uses Elasticsearch when TDC_ES_URL is set, the wide rows "
                    "otherwise.")
    parser.add_argument("--order", help="order id")
    parser.add_argument("--store", help="store id")
    parser.add_argument("--status", help="order status (10 submitted, 20 paid, 30 delivered, 40 completed, "
                                         "50 cancelled)")
    parser.add_argument("--member", help="member id")
    parser.add_argument("--channel", help="channel")
    parser.add_argument("--sku", help="orders with a line of this SKU")
    parser.add_argument("--min-amount", help="pay_amount at least this")
    parser.add_argument("--max-amount", help="pay_amount at most this")
    parser.add_argument("--from", dest="date_from", help="business day YYYY-MM-DD, from")
    parser.add_argument("--to", dest="date_to", help="business day YYYY-MM-DD, to")
    parser.add_argument("--limit", default="50", help="at most this many orders (default 50)")
    parser.add_argument("--json", action="store_true", help="print the orders, with their lines, as JSON")
    parser.set_defaults(run=cmd_search, search_command=None)
    manage = parser.add_subparsers(dest="search_command", required=False, metavar="{init,reindex}")
    manage.add_parser("init", help="create the index template, the first index and the alias (safe to run again)")
    manage.add_parser("reindex", help="build a new index from the wide rows and move the alias to it atomically")
