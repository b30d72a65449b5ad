"""``tdc reconcile``: compare a day or a range, optionally fix, report; exit 0 clean, 1 different, 2 errors."""

from __future__ import annotations

import argparse
import datetime as dt
import sys


def _day(text: str, option: str) -> dt.date:
    from reconcile.run import ReconcileError

    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise ReconcileError(f"{option} {text!r} is not a date YYYY-MM-DD") from None


def cmd_reconcile(args: argparse.Namespace) -> int:
    from reconcile.run import ReconcileError, parse_layers, reconcile
    from settings import get_settings

    try:
        first = _day(args.date, "--date")
        last = _day(args.to, "--to") if args.to else first
        settings = get_settings()
        layers = parse_layers(args.layers, settings.cdc_source_url is not None, settings.es_url is not None)
    except ReconcileError as error:
        print(f"tdc: {error}", file=sys.stderr)
        return 2
    import worker  # noqa: F401 - configures the Celery app the fix sends chains with
    from cli.progress import progress
    from models.redis_store import get_redis
    from models.storage import get_storage
    from tasks.submit import submit_tasks

    try:
        days = f"{first}" if first == last else f"{first}..{last}"
        with progress(f"reconcile {days}") as shown:
            outcome = reconcile(get_storage(), get_redis(), first, last, layers, fix=args.fix, submit=submit_tasks,
                                wait_seconds=args.wait, json_path=args.json, html_path=args.html,
                                progress=shown.say, deep=args.deep)
    except ReconcileError as error:
        print(f"tdc: {error}", file=sys.stderr)
        return 2
    for layer, counts in outcome.counts.items():
        compared = ", ".join(f"{name} {value}" for name, value in counts.items()
                             if name not in ("differences", "differences_after_fix"))
        print(f"{layer}: {counts['differences']} differences ({compared})")
    for diff in (outcome.diffs + outcome.new_diffs)[:args.show]:
        state = "fixed" if diff.fixed else "remaining"
        print(f"  {diff.layer} {diff.biz_date} {diff.order_id or ''} {diff.target} {diff.column}: "
              f"expected {diff.expected}, found {diff.found} [{state}]")
    if outcome.found + len(outcome.new_diffs) > args.show:
        print(f"  ... {outcome.found + len(outcome.new_diffs) - args.show} more in the report")
    print(f"run {outcome.run_id} {outcome.status}: {outcome.found} differences found, {outcome.fixed} fixed, "
          f"{outcome.remaining} remaining, in {outcome.duration_ms / 1000:.1f}s")
    print(f"report: {outcome.html_path}")
    print(f"json: {outcome.json_path}")
    return 0 if outcome.found == 0 and outcome.remaining == 0 else 1


def add_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    parser = commands.add_parser(
        "reconcile", help="compare wide rows with their source and ADS with the wide rows; --fix compensates",
        description="Compare settled orders (paid, not cancelled) of a business day or range. Exit status: "
                    "0 no difference found, 1 differences found (the report says which were fixed), 2 errors.")
    parser.add_argument("--date", required=True, help="business day YYYY-MM-DD (the first, with --to)")
    parser.add_argument("--to", help="last business day of a range (inclusive)")
    parser.add_argument("--fix", action="store_true",
                        help="send differing orders round the chain again, rebuild ADS days still off, compare again")
    parser.add_argument("--deep", action="store_true",
                        help="merge every order of the days from its stored records, not only where the sums differ")
    parser.add_argument("--wait", type=float, default=600,
                        help="seconds --fix waits for the workers to rewrite orders (default 600)")
    parser.add_argument("--layers", help="comma-separated: source (needs TDC_CDC_SOURCE_URL), wide, ads, index "
                                         "(needs TDC_ES_URL); default all that are configured")
    parser.add_argument("--json", help="write the JSON report here (default $TDC_HOME/reports/reconcile-RUN.json)")
    parser.add_argument("--html", help="write the HTML report here (default $TDC_HOME/reports/reconcile-RUN.html)")
    parser.add_argument("--show", type=int, default=20, help="differences printed (default 20; all are in the reports)")
    parser.set_defaults(run=cmd_reconcile)
