"""``tdc demo --flow NAME`` for a flow other than the online orders (``demo.run``): generate the
flow's history (``demo.flows``), feed it through the real intake, drain it with real worker
processes, and compare every wide row and ADS cell with what the history expects.

The flow must be run (``TDC_FLOWS``); ``cli.main`` adds it before anything reads the setting.
"""

from __future__ import annotations

import importlib
import time
from typing import TYPE_CHECKING, Any

from cli.progress import progress
from demo.check import aggregate_differences, differences
from demo.flows import FlowHistory
from demo.session import demo_session, demo_settings

if TYPE_CHECKING:
    from models.storage import Storage

#: Flows with a demo history: name -> the module that generates it.
FLOW_DEMOS = {"pos": "demo.flows.pos", "sal_order": "demo.flows.sal_order", "pur_mrb": "demo.flows.pur_mrb",
              "stk_inventory": "demo.flows.stk_inventory"}


def _wide(history: FlowHistory, storage: Storage) -> dict[str, dict[Any, dict[str, Any]]]:
    """What the engine wrote for the history's entities: wide table -> key -> row."""
    from chain.wide_rows import read_orders
    from flows.declared import BY_NAME
    from models.wide import schema_of

    flow = BY_NAME[history.flow]
    schema = schema_of(flow)
    roots = history.expected[schema.root.name]
    orders, items = read_orders(storage, [flow.entity_prefix + str(key) for key in roots])
    found = {schema.root.name: {row[schema.entity]: row for row in orders.values()}}
    if schema.child is not None:
        found[schema.child.name] = items
    return found


def ads_cells(history: FlowHistory, storage: Storage) -> dict[tuple[str, tuple[Any, ...]], dict[str, Any]]:
    from warehouse.aggregates import read_aggregates

    names = {table for table, _ in history.expected_ads}
    with storage.dws_engine.connect() as connection:
        return {cell: measures for cell, measures in read_aggregates(connection).items() if cell[0] in names}


def flow_problems(history: FlowHistory, before: Any, storage: Storage) -> list[str]:
    """Differences between what the engine wrote for the history and what it expects (ADS: what
    was added since ``before``)."""
    found = _wide(history, storage)
    problems: list[str] = []
    for table, rows in history.expected.items():
        problems += differences(rows, found.get(table, {}), table)
    return problems + aggregate_differences(history.expected_ads, before, ads_cells(history, storage))


def _drain(history: FlowHistory, timeout: float, processes: list[Any], before: Any, storage: Storage) -> list[str]:
    deadline = time.monotonic() + timeout
    total = sum(len(rows) for rows in history.expected.values())
    problems: list[str] = ["not drained"]
    with progress("processing", total=total, unit="rows match") as shown:
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in processes):
                shown.log("  a worker or beat process exited; see the logs under TDC_HOME/logs")
                return problems
            problems = flow_problems(history, before, storage)
            wrong = {line.split(" ", 2)[0] + " " + line.split(" ", 2)[1] for line in problems}
            shown.update(completed=max(0, total - len(wrong)), note=f"{len(problems)} differences")
            if not problems:
                return []
            time.sleep(1)
        shown.log(f"  gave up after {timeout:.0f}s")
    return problems


def run_flow_demo(flow: str, entities: int = 300, seed: int | None = None, workers: int = 2,
                  timeout: float = 600) -> int:
    from demo.run import _feed

    settings = demo_settings()
    if flow not in settings.flows:
        print(f"tdc demo: flow {flow!r} is not run (TDC_FLOWS={','.join(settings.flows)})")
        return 2

    from models.storage import get_storage

    with demo_session(settings, f"flow {flow}, {entities} entities") as session:
        module = importlib.import_module(FLOW_DEMOS[flow])
        history: FlowHistory = module.generate(entities, seed=seed, zone=settings.business_zone)
        rows = {table: len(found) for table, found in history.expected.items()}
        print(f"  generated {len(history.lines)} lines ({history.duplicated} duplicated, "
              f"{history.malformed} malformed) for {', '.join(f'{n} {t}' for t, n in rows.items())}")
        with session.workers(workers) as processes:
            before = ads_cells(history, get_storage())
            quarantined, _ = _feed(history.lines)
            problems = _drain(history, timeout, processes, before, get_storage())
        if quarantined != history.malformed:
            problems.append(f"quarantined {quarantined} lines, the generator mixed in {history.malformed}")
        print(f"summary: {', '.join(f'{n} {t} rows' for t, n in rows.items())} expected; "
              f"{len(history.expected_ads)} ADS rows checked; {quarantined} quarantined of {history.malformed} "
              "malformed")
        for problem in problems[:30]:
            print(f"  DIFFERENCE {problem}")
        if problems:
            print(f"FAILED: {len(problems)} differences")
            return 1
        print("OK: every wide row and every ADS row matches")
        return 0
