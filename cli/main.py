"""``tdc``: init, ingest, consume, cdc, demo, order show, quarantine list, failed, reconcile, bench, dims load,
ads rebuild."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time

from settings import SettingsError


def cmd_init(args: argparse.Namespace) -> int:
    from models.schema import init_storage, sizing_advice
    from models.storage import get_storage

    storage = get_storage()
    started = time.monotonic()
    print(f"creating {storage.settings.shards} task and metadata tables over 4 shard databases ...")
    report = init_storage(storage, progress=print if args.verbose else lambda _: None)
    print(f"done in {time.monotonic() - started:.1f}s: {report.created} sharded tables created, "
          f"{report.existing} already there")
    for advice in sizing_advice(storage):
        print(f"warning: {advice}", file=sys.stderr)
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    from cli.ingest import ingest_file

    return ingest_file(args.file, args.format, every_batch=args.progress)


def cmd_demo(args: argparse.Namespace) -> int:
    if args.flow != "gqsh":
        # Before anything reads the setting: intake here and the workers must route the flow.
        running = [name.strip() for name in os.environ.get("TDC_FLOWS", "gqsh").split(",") if name.strip()]
        os.environ["TDC_FLOWS"] = ",".join(dict.fromkeys([*running, args.flow]))
        from demo.flow_run import FLOW_DEMOS, run_flow_demo

        if args.flow not in FLOW_DEMOS:
            print(f"tdc demo: no demo for flow {args.flow!r}; flows with one: gqsh, {', '.join(FLOW_DEMOS)}",
                  file=sys.stderr)
            return 2
        return run_flow_demo(args.flow, entities=args.orders, seed=args.seed, workers=args.workers,
                             timeout=args.timeout)
    from demo.run import run_demo

    return run_demo(orders=args.orders, seed=args.seed, workers=args.workers, timeout=args.timeout)


def cmd_order_show(args: argparse.Namespace) -> int:
    from cli.lineage import show_order

    return show_order(args.order_id, as_json=args.json)


def cmd_quarantine_list(args: argparse.Namespace) -> int:
    from cli.lineage import list_quarantine

    return list_quarantine(limit=args.limit)


def cmd_dims_load(args: argparse.Namespace) -> int:
    from cli.warehouse import load_dimensions

    return load_dimensions(args.dimension)


def cmd_ads_rebuild(args: argparse.Namespace) -> int:
    from cli.warehouse import rebuild_aggregates

    return rebuild_aggregates(args.date)


def cmd_failed_list(args: argparse.Namespace) -> int:
    from cli.failed import list_failed

    return list_failed(args.limit)


def cmd_failed_show(args: argparse.Namespace) -> int:
    from cli.failed import show_failed

    return show_failed(args.failure, args.json)


def cmd_failed_retry(args: argparse.Namespace) -> int:
    from cli.failed import retry_failed

    return retry_failed(args.failures, args.all)


def cmd_bench_rescan(args: argparse.Namespace) -> int:
    from cli.bench import bench_rescan

    return bench_rescan()


def cmd_bench_cdc(args: argparse.Namespace) -> int:
    from cli.bench_cdc import bench_cdc
    from settings import get_settings

    return bench_cdc(args.source_url or get_settings().cdc_source_url, args.orders)


def cmd_bench_intake(args: argparse.Namespace) -> int:
    from cli.bench_intake import bench_intake

    return bench_intake(args.orders, args.format)


def cmd_bench_search(args: argparse.Namespace) -> int:
    from cli.bench_search import bench_search

    return bench_search(args.orders, args.queries, args.seed)


def cmd_bench_reconcile(args: argparse.Namespace) -> int:
    from cli.bench_reconcile import bench_reconcile

    return bench_reconcile(args.orders, args.seed)


def cmd_bench_throughput(args: argparse.Namespace) -> int:
    from cli.bench_throughput import bench_throughput

    return bench_throughput(args.orders, args.broker, args.workers, args.concurrency, args.tasks, args.timeout)


def cmd_bench_soak(args: argparse.Namespace) -> int:
    from cli.bench_soak import bench_soak

    return bench_soak(args.events, args.workers, args.concurrency, args.timeout, args.chunk_orders)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tdc", description="transaction data center")
    commands = parser.add_subparsers(dest="command", required=True)

    init = commands.add_parser("init", help="create every table (safe to run again)")
    init.add_argument("-v", "--verbose", action="store_true", help="show progress per 128 shards")
    init.set_defaults(run=cmd_init)

    ingest = commands.add_parser("ingest", help="accept JSON lines and submit their tasks")
    ingest.add_argument("--format", required=True, choices=["canal", "debezium", "business"])
    ingest.add_argument("file", help="file of JSON lines, or - for stdin")
    ingest.add_argument("--progress", action="store_true",
                        help="also print the running counts after every batch, as plain lines on stderr (progress "
                             "is shown anyway: a bar on a terminal, a line now and then otherwise)")
    ingest.set_defaults(run=cmd_ingest)

    demo = commands.add_parser("demo", help="generate an order history, process it with real workers, check")
    demo.add_argument("--flow", default="gqsh",
                      help="the flow to demonstrate (gqsh, pos, sal_order, pur_mrb, stk_inventory)")
    demo.add_argument("--orders", type=int, default=300, help="orders (documents) to generate")
    demo.add_argument("--seed", type=int, default=None)
    demo.add_argument("--workers", type=int, default=2, help="worker process concurrency")
    demo.add_argument("--timeout", type=float, default=600, help="seconds to wait for the pipeline to drain")
    demo.set_defaults(run=cmd_demo)

    order = commands.add_parser("order", help="one order").add_subparsers(dest="order_command", required=True)
    show = order.add_parser("show", help="everything tdc knows about one order")
    show.add_argument("order_id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=cmd_order_show)

    quarantined = commands.add_parser("quarantine", help="bad input").add_subparsers(
        dest="quarantine_command", required=True)
    listing = quarantined.add_parser("list", help="quarantined input, newest first")
    listing.add_argument("--limit", type=int, default=50)
    listing.set_defaults(run=cmd_quarantine_list)

    failed = commands.add_parser("failed", help="tasks that ran out of attempts").add_subparsers(
        dest="failed_command", required=True)
    failed_list = failed.add_parser("list", help="unresolved failed tasks, newest first")
    failed_list.add_argument("--limit", type=int, default=50)
    failed_list.set_defaults(run=cmd_failed_list)
    failed_show = failed.add_parser("show", help="one failed task: reason, attempts, where its data came from")
    failed_show.add_argument("failure", help="ORDER_ID/OPERATION, as `tdc failed list` shows")
    failed_show.add_argument("--json", action="store_true")
    failed_show.set_defaults(run=cmd_failed_show)
    failed_retry = failed.add_parser("retry", help="run failed tasks again with fresh attempts")
    failed_retry.add_argument("failures", nargs="*", help="ORDER_ID/OPERATION ...")
    failed_retry.add_argument("--all", action="store_true", help="every unresolved failed task")
    failed_retry.set_defaults(run=cmd_failed_retry)

    bench = commands.add_parser("bench", help="measure against the DESIGN targets").add_subparsers(
        dest="bench_command", required=True)
    bench.add_parser("rescan", help="an idle rescan pass vs as many indexed selects").set_defaults(
        run=cmd_bench_rescan)
    bench_cdc = bench.add_parser("cdc", help="the binlog tail's rate vs a bare python-mysql-replication loop")
    bench_cdc.add_argument("--source-url", help="a server with its binlog on (default TDC_CDC_SOURCE_URL, "
                           "else a throwaway MariaDB); a fresh database is created on it")
    bench_cdc.add_argument("--orders", type=int, default=500)
    bench_cdc.set_defaults(run=cmd_bench_cdc)
    bench_intake = bench.add_parser("intake", help="lines per second through intake into the configured storage")
    bench_intake.add_argument("--orders", type=int, default=1000)
    bench_intake.add_argument("--format", choices=["canal", "debezium"], default="canal")
    bench_intake.set_defaults(run=cmd_bench_intake)
    bench_search = bench.add_parser("search", help="selective queries on the SQL fallback over many orders")
    bench_search.add_argument("--orders", type=int, default=100_000)
    bench_search.add_argument("--queries", type=int, default=50)
    bench_search.add_argument("--seed", type=int, default=1)
    bench_search.set_defaults(run=cmd_bench_search)
    bench_reconcile = bench.add_parser("reconcile", help="settled orders per second reconciled, clean and damaged")
    bench_reconcile.add_argument("--orders", type=int, default=2000)
    bench_reconcile.add_argument("--seed", type=int, default=7)
    bench_reconcile.set_defaults(run=cmd_bench_reconcile)
    throughput = bench.add_parser("throughput", help="order operations per second vs Celery's empty-task rate")
    throughput.add_argument("--orders", type=int, default=500)
    throughput.add_argument("--broker", help="broker URL for both sides (default TDC_BROKER_URL)")
    throughput.add_argument("--workers", type=int, default=1, help="worker processes")
    throughput.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    throughput.add_argument("--tasks", type=int, default=5000, help="empty tasks for Celery's rate")
    throughput.add_argument("--timeout", type=float, default=900, help="seconds either side may take")
    throughput.set_defaults(run=cmd_bench_throughput)
    soak = bench.add_parser("soak", help="a million events through intake and workers, watching worker memory")
    soak.add_argument("--events", type=int, default=1_000_000, help="input lines to feed")
    soak.add_argument("--workers", type=int, default=1, help="worker processes")
    soak.add_argument("--concurrency", type=int, default=2, help="pool processes per worker")
    soak.add_argument("--timeout", type=float, default=300, help="seconds one chunk of orders may take")
    soak.add_argument("--chunk-orders", type=int, default=500, help="orders fed at a time")
    soak.set_defaults(run=cmd_bench_soak)

    dims = commands.add_parser("dims", help="dimensions in Redis").add_subparsers(dest="dims_command", required=True)
    load = dims.add_parser("load", help="reload offline dimension tables from the warehouse (T+1)")
    load.add_argument("--dimension", help="only this dimension (store, sku, ...)")
    load.set_defaults(run=cmd_dims_load)

    from cli.cdc import add_commands as add_cdc_commands
    from cli.consume import add_commands as add_consume_commands
    from cli.flow import add_commands as add_flow_commands
    from cli.outbox import add_commands as add_outbox_commands
    from cli.reconcile import add_commands as add_reconcile_commands
    from cli.search import add_commands as add_search_commands
    from cli.serve import add_commands as add_serve_commands

    add_cdc_commands(commands)
    add_consume_commands(commands, bench)
    add_flow_commands(commands)
    add_outbox_commands(commands)
    add_reconcile_commands(commands)
    add_search_commands(commands)
    add_serve_commands(commands)

    ads = commands.add_parser("ads", help="the ADS aggregates").add_subparsers(dest="ads_command", required=True)
    rebuild = ads.add_parser("rebuild", help="recompute aggregates from the wide rows")
    rebuild.add_argument("--date", help="only this business date (YYYY-MM-DD); default every day")
    rebuild.set_defaults(run=cmd_ads_rebuild)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except BrokenPipeError:
        # `tdc order show X | head` ends quietly, as other command-line tools do.  Not by letting
        # SIGPIPE kill the process: a long-running command (the tail, a consumer, the relay,
        # the server) would then die without a word when a database or broker closes a socket.
        if not _stdout_closed():
            raise
        return 128 + signal.SIGPIPE
    except SettingsError as error:
        print(f"tdc: configuration error: {error}", file=sys.stderr)
        return 2
    except FileNotFoundError as error:
        print(f"tdc: {error}", file=sys.stderr)
        return 2


def _stdout_closed() -> bool:
    """True when standard output is a pipe whose reader went away (poll says POLLERR); stdout
    then points at /dev/null, so the interpreter's own flush at exit does not complain again."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        gone = any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
    except (AttributeError, ValueError, OSError):
        return False
    if gone:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return gone


if __name__ == "__main__":
    sys.exit(main())
