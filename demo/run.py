"""``tdc demo``: generate, ingest through the real path, drain with real workers, compare."""

from __future__ import annotations

import time
from itertools import groupby

from chain.wide_rows import read_orders
from cli.progress import progress
from demo.check import ORDER_ADS, aggregate_differences, differences, expected_aggregates, matching_orders
from demo.history import generate_history
from demo.session import demo_session, demo_settings
from settings import get_settings

#: Lines per intake call while feeding the history.
FEED_BATCH = 200


def _feed(history_lines: list[tuple[str, str]]) -> tuple[int, int]:
    from flows.registry import ACCEPTED
    from intake.receiver import IntakeReport, accept_lines
    from models.redis_store import get_redis
    from models.storage import get_storage
    from tasks.submit import submit_tasks

    total = IntakeReport()
    with progress("feeding", total=len(history_lines), unit="lines") as shown:
        for start in range(0, len(history_lines), FEED_BATCH):
            batch = history_lines[start : start + FEED_BATCH]
            for input_format, group in groupby(batch, key=lambda entry: entry[0]):
                report = accept_lines(get_storage(), get_redis(), ACCEPTED, input_format, [line for _, line in group])
                submit_tasks(report.touched)
                total.add(report)
            shown.advance(len(batch))
    print(f"  fed {total.summary()}")
    return total.quarantined, total.accepted


def run_demo(orders: int = 300, seed: int | None = None, workers: int = 2, timeout: float = 600) -> int:
    with demo_session(demo_settings(), f"{orders} orders") as session:
        history = generate_history(orders, seed=seed)
        print(f"  generated {len(history.lines)} lines for {orders} orders "
              f"({history.duplicated} duplicated, {history.malformed} malformed)")
        with session.workers(workers) as processes:
            before = _aggregates()
            quarantined, _ = _feed(history.lines)
            ok = _drain(history, timeout, processes, before)
        result = _report(history, quarantined, ok, before)
        return result or _reconcile(history)


def _aggregates():  # type: ignore[no-untyped-def]
    from models.storage import get_storage
    from warehouse.aggregates import read_aggregates

    with get_storage().dws_engine.connect() as connection:
        return read_aggregates(connection, tables=ORDER_ADS)


def _drain(history, timeout: float, processes, before) -> bool:  # type: ignore[no-untyped-def]
    from models.storage import get_storage

    deadline = time.monotonic() + timeout
    total = len(history.expected_orders)
    expected = expected_aggregates(history.expected_orders, history.expected_items)
    matched = -1
    with progress("processing", total=total, unit="orders match") as shown:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes):
                shown.log("  a worker or beat process exited; see the logs under TDC_HOME/logs")
                return False
            orders, items = read_orders(get_storage(), history.order_ids)
            matched = matching_orders(history.expected_orders, history.expected_items, orders, items)
            ads = len(aggregate_differences(expected, before, _aggregates()))
            shown.update(completed=matched, note=f"{ads} ADS rows to go")
            if matched == total and ads == 0:
                return True
            time.sleep(1)
        shown.log(f"  gave up after {timeout:.0f}s with {matched}/{total} orders matching")
    return False


def _reconcile(history) -> int:  # type: ignore[no-untyped-def]
    """Reconcile the demo's business days, as beat does every morning, and show the report."""
    from models.redis_store import get_redis
    from models.storage import get_storage
    from reconcile.run import reconcile

    days = history.business_days(get_settings().business_zone)
    if days is None:
        return 0
    outcome = reconcile(get_storage(), get_redis(), *days)
    compared = outcome.counts.get("wide", {}).get("orders", 0)
    print(f"reconciliation: {days[0]}..{days[-1]}, {compared} settled orders and "
          f"{outcome.counts.get('ads', {}).get('cells', 0)} ADS cells compared in {outcome.duration_ms / 1000:.1f}s: "
          f"{outcome.found} differences")
    print(f"  report: {outcome.html_path}")
    if outcome.found:
        for diff in outcome.diffs[:10]:
            print(f"  DIFFERENCE {diff.layer} {diff.order_id or ''} {diff.target} {diff.column}: "
                  f"expected {diff.expected}, found {diff.found}")
        print("FAILED: the reconciliation found differences the demo's own check did not")
        return 1
    return 0


def _report(history, quarantined: int, drained: bool, before) -> int:  # type: ignore[no-untyped-def]
    from models.storage import get_storage

    orders, items = read_orders(get_storage(), history.order_ids)
    problems = differences(history.expected_orders, orders, "dwd_order")
    problems += differences(history.expected_items, items, "dwd_order_item")
    expected = expected_aggregates(history.expected_orders, history.expected_items)
    problems += aggregate_differences(expected, before, _aggregates())
    if quarantined != history.malformed:
        problems.append(f"quarantined {quarantined} lines, the generator mixed in {history.malformed}")
    print(f"summary: {len(history.expected_orders)} orders expected, {len(orders)} in dwd_order; "
          f"{len(history.expected_items)} lines expected, {len(items)} in dwd_order_item; "
          f"{quarantined} quarantined of {history.malformed} malformed; "
          f"{len(expected)} ADS rows checked in ads_order_sales, ads_order_item_sales, ads_order_sales_sum")
    for problem in problems[:30]:
        print(f"  DIFFERENCE {problem}")
    if problems or not drained:
        print(f"FAILED: {len(problems)} differences")
        return 1
    print("OK: every order and every ADS row matches")
    return 0
