"""One reconciliation run: compare the layers, fix what may be fixed, compare again, keep it all.

The run is stored (``reconcile_run``) as soon as it starts, with every difference it found
(``reconcile_diff``) and every action it took (``reconcile_action``) once it ends; its JSON and
HTML reports are written next to it.  A run that raises is kept with status ``error``.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import redis
from sqlalchemy import Table, insert, select, update

from cdc.snapshot import take_snapshot
from intake.receiver import TaskKey, utcnow
from models.reconcile import ReconcileAction, ReconcileDiff, ReconcileRun
from models.redis_store import get_redis
from models.storage import Storage
from reconcile import ads, index, source, wide
from reconcile.diffs import Diff, LayerResult
from reconcile.fix import chain_keys, rerun_orders, task_versions, wait_for
from reliability.alarms import raise_alarm
from search.elastic import UNAVAILABLE
from search.outbox import enqueue, send
from warehouse.aggregates import rebuild_day

RUNS = cast(Table, ReconcileRun.__table__)
DIFFS = cast(Table, ReconcileDiff.__table__)
ACTIONS = cast(Table, ReconcileAction.__table__)
#: The layers, in the order they are compared and fixed.
LAYERS = (source.LAYER, wide.LAYER, ads.LAYER, index.LAYER)
#: The tail position name a fix's snapshot reads under (it never hands a position over).
RECONCILE_POSITION = "reconcile"
#: Runs the trend shows.
TREND_RUNS = 30
#: Differences kept per run in storage and in the reports (the counts are always whole).
KEPT_DIFFS = 10_000

Progress = Callable[[str], None]
Submit = Callable[[list[TaskKey]], object]


class ReconcileError(ValueError):
    """The run was asked for something it cannot do; the message says what."""


def parse_layers(text: str | None, has_source: bool, has_index: bool = False) -> list[str]:
    """``source,wide,ads,index`` as layer names, in comparing order; the default is every layer
    that is configured: ``source`` needs a source database (``has_source``), ``index`` a search
    index (``has_index``).  ReconcileError for an unknown layer, or one not configured."""
    configured = {source.LAYER: has_source, index.LAYER: has_index}
    if not text:
        return [layer for layer in LAYERS if configured.get(layer, True)]
    chosen: list[str] = []
    for layer in (part.strip() for part in text.split(",") if part.strip()):
        if layer == index.LAYER and not has_index:
            raise ReconcileError("layer 'index' compares the search index: set TDC_ES_URL")
        if layer not in LAYERS:
            raise ReconcileError(f"unknown layer {layer!r}; the layers are {', '.join(LAYERS)}")
        if layer == source.LAYER and not has_source:
            raise ReconcileError("layer 'source' compares the order center's tables: set TDC_CDC_SOURCE_URL")
        if layer not in chosen:
            chosen.append(layer)
    return [layer for layer in LAYERS if layer in chosen]


@dataclass
class Action:
    layer: str
    action: str
    order_id: str | None
    biz_date: dt.date | None
    detail: str
    result: str

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "action": self.action, "order_id": self.order_id,
                "biz_date": self.biz_date.isoformat() if self.biz_date else None, "detail": self.detail,
                "result": self.result}


@dataclass
class Outcome:
    run_id: int
    first: dt.date
    last: dt.date
    layers: list[str]
    fix: bool
    started_at: dt.datetime
    deep: bool = False
    status: str = "running"
    diffs: list[Diff] = field(default_factory=list)
    #: Differences the comparison after the fix found that the first one did not.
    new_diffs: list[Diff] = field(default_factory=list)
    actions: list[Action] = field(default_factory=list)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    #: Seconds per layer and phase of the first comparison.
    seconds: dict[str, dict[str, float]] = field(default_factory=dict)
    duration_ms: int = 0
    json_path: str | None = None
    html_path: str | None = None

    @property
    def found(self) -> int:
        return len(self.diffs)

    @property
    def fixed(self) -> int:
        return sum(1 for d in self.diffs if d.fixed)

    @property
    def remaining(self) -> int:
        return self.found - self.fixed + len(self.new_diffs)


def compare(storage: Storage, first: dt.date, last: dt.date, layers: Iterable[str],
            progress: Progress = lambda _: None,
            deep: bool = False) -> tuple[dict[str, LayerResult], dict[str, wide.Expected]]:
    """Every chosen layer over [first, last] (the layers side by side); what each order with a
    wide-row difference should be."""
    chosen = list(layers)
    with ThreadPoolExecutor(max_workers=len(chosen)) as pool:
        running = {layer: pool.submit(_compare_layer, storage, layer, first, last, progress, deep)
                   for layer in chosen}
        done = {layer: future.result() for layer, future in running.items()}
    results = {layer: done[layer][0] for layer in chosen}
    expected = done[wide.LAYER][1] if wide.LAYER in done else {}
    for layer in chosen:
        progress(f"{layer}: {len(results[layer].diffs)} differences")
    return results, expected


def _compare_layer(storage: Storage, layer: str, first: dt.date, last: dt.date, progress: Progress,
                   deep: bool) -> tuple[LayerResult, dict[str, wide.Expected]]:
    if layer == wide.LAYER:
        return wide.compare_wide(storage, first, last, progress, deep)
    if layer == source.LAYER:
        return source.compare_source(storage, first, last, progress), {}
    if layer == index.LAYER:
        configured = index.configured_index(storage)
        if configured is None:
            raise ReconcileError("layer 'index' compares the search index: set TDC_ES_URL")
        return index.compare_index(storage, configured, first, last), {}
    return ads.compare_ads(storage, first, last), {}


def _start(storage: Storage, first: dt.date, last: dt.date, layers: list[str], fix: bool, now: dt.datetime) -> int:
    with storage.dws_engine.begin() as connection:
        key = connection.execute(insert(RUNS).values(
            started_at=now, date_from=first, date_to=last, layers=",".join(layers), fix=fix, status="running",
            found=0, fixed=0, remaining=0)).inserted_primary_key
        assert key is not None
        return int(key[0])


def _fix(storage: Storage, client: redis.Redis | None, outcome: Outcome, results: dict[str, LayerResult],
         expected: dict[str, wide.Expected], submit: Submit, wait_seconds: float, progress: Progress) -> None:
    reingested = _fix_source(storage, client, outcome, results, submit, wait_seconds, progress)
    operations = _fix_wide(storage, outcome, results, expected, submit, wait_seconds, progress)
    _fix_index(storage, outcome, results, progress)
    if ads.LAYER in results:
        # Once the wide rows are right, some ADS cells are too: rebuild only the days still off.
        still = (ads.compare_ads(storage, outcome.first, outcome.last)
                 if results[ads.LAYER].diffs or operations or reingested else results[ads.LAYER])
        for day in sorted({d.biz_date for d in still.diffs if d.biz_date is not None}):
            progress(f"fix: rebuilding the ADS of {day} from the wide rows")
            report = rebuild_day(storage, day)
            outcome.actions.append(Action(ads.LAYER, "rebuild", None, day,
                                          f"{report.applied} orders counted again, {report.cells} cells written",
                                          "done"))


def _fix_index(storage: Storage, outcome: Outcome, results: dict[str, LayerResult], progress: Progress) -> None:
    """Send the documents of the orders the index lacks or holds at another version, now (after
    the other fixes, so the documents are of the rows as fixed)."""
    if index.LAYER not in results or not results[index.LAYER].diffs:
        return
    configured = index.configured_index(storage)
    assert configured is not None
    found = results[index.LAYER].diffs
    orders = sorted({d.order_id for d in found if d.order_id is not None})
    progress(f"fix: sending {len(orders)} index documents again")
    current = index.settled_versions(storage, outcome.first, outcome.last)
    enqueue(storage, {o: current[o][0] for o in orders if o in current})
    try:
        report = send(storage, configured, orders)
        failed = report.failed
    except UNAVAILABLE as error:
        failed = dict.fromkeys(orders, f"Elasticsearch unreachable: {type(error).__name__}")
    for one in configured.values():
        one.refresh()
    days = {d.order_id: d.biz_date for d in found}
    for order_id in orders:
        result = "failed" if order_id in failed else "done"
        outcome.actions.append(Action(index.LAYER, "resend", order_id, days.get(order_id),
                                      "document sent again" + (f": {failed[order_id]}" if order_id in failed else ""),
                                      result))


def _fix_source(storage: Storage, client: redis.Redis | None, outcome: Outcome, results: dict[str, LayerResult],
                submit: Submit, wait_seconds: float, progress: Progress) -> set[str]:
    """Take the source rows of the orders whose records differ in again, as a snapshot does:
    intake stores what changed as corrections and sends those orders round.  The orders taken in."""
    found = results[source.LAYER].diffs if source.LAYER in results else []
    gone = [d for d in found if d.note == source.GONE]
    for diff in gone:
        outcome.actions.append(Action(source.LAYER, "none", diff.order_id, diff.biz_date,
                                      f"{diff.target} was deleted at the source: a snapshot cannot replay a delete; "
                                      "send the delete event (Canal or Debezium) through tdc ingest", "skipped"))
    orders = sorted({d.order_id for d in found if d.note != source.GONE and d.order_id is not None})
    if not orders:
        return set()
    progress(f"fix: taking the source rows of {len(orders)} orders in again")
    taken: set[TaskKey] = set()

    def collect(keys: Iterable[TaskKey]) -> int:
        taken.update(keys)
        return 0
    configured = source.configured_source(storage)
    reports = []
    connection = configured.connect()
    try:
        flows = [(prefix, flow, source.held_tables(connection, configured.database, flow))
                 for prefix, flow in source.compared_flows(storage, configured)]
    finally:
        connection.close()
    for prefix, flow, tables in flows:
        keys = source.source_keys(prefix, orders)
        if keys and tables:
            reports.append(take_snapshot(storage, client or get_redis(), flow, configured, RECONCILE_POSITION,
                                         collect, tables=tables, orders=keys, hand_over=False))
    submit(sorted(taken))
    versions = task_versions(storage, taken)
    results_by_order = wait_for(storage, versions, wait_seconds, progress)
    days = {d.order_id: d.biz_date for d in found}
    for order_id in orders:
        corrected = sorted(op for o, op in taken if o == order_id)
        detail = (f"source rows taken in again: {', '.join(corrected)} corrected and run again" if corrected
                  else "source rows taken in again: nothing newer than what is stored")
        outcome.actions.append(Action(source.LAYER, "reingest", order_id, days.get(order_id), detail,
                                      results_by_order.get(order_id, "done")))
    for report in reports:
        progress(f"fix: {report.intake.summary()}")
    return set(orders)


def _fix_wide(storage: Storage, outcome: Outcome, results: dict[str, LayerResult], expected: dict[str, wide.Expected],
              submit: Submit, wait_seconds: float, progress: Progress) -> dict[str, list[str]]:
    """Send the orders whose wide rows differ round the chain again; the operations sent."""
    wide_diffs = results[wide.LAYER].diffs if wide.LAYER in results else []
    by_order: dict[str, list[Diff]] = {}
    for diff in wide_diffs:
        assert diff.order_id is not None
        by_order.setdefault(diff.order_id, []).append(diff)
    operations = {o: [op for op, _ in expected[o].operations] for o in by_order if expected[o].order is not None}
    for order_id in sorted(set(by_order) - set(operations)):
        outcome.actions.append(Action(wide.LAYER, "none", order_id, by_order[order_id][0].biz_date,
                                      "the order has no stored records to rebuild its rows from; left as found",
                                      "skipped"))
    if operations:
        gone = {o for o, found in by_order.items()
                if any(d.target == wide.root_table(o) and d.column == "*" and d.found is None for d in found)}
        progress(f"fix: sending {len(operations)} orders round the chain again")
        versions = rerun_orders(storage, operations, gone)
        submit(chain_keys(versions))
        results_by_order = wait_for(storage, versions, wait_seconds, progress)
        for order_id, result in sorted(results_by_order.items()):
            detail = f"operations {', '.join(operations[order_id])} run again"
            if order_id in gone:
                detail += "; ADS ledger version set back to 0 (its wide row was gone)"
            outcome.actions.append(Action(wide.LAYER, "rerun", order_id, by_order[order_id][0].biz_date, detail,
                                          result))
    return operations


def reconcile(storage: Storage, client: redis.Redis | None, first: dt.date, last: dt.date,
              layers: list[str] | None = None, fix: bool = False, submit: Submit | None = None,
              wait_seconds: float = 600, json_path: str | Path | None = None, html_path: str | Path | None = None,
              progress: Progress = lambda _: None, alarm: bool = True, deep: bool = False) -> Outcome:
    """Compare [first, last]; with ``fix``, compensate, wait up to ``wait_seconds`` for the chains
    (``submit`` sends them: ``tasks.submit.submit_tasks`` from a command) and compare again.  Stores the
    run and writes its reports (by default under ``$TDC_HOME/reports``).  ``alarm``: raise an alarm
    when differences remain at the end (the daily run leaves that to its confirmation).  ``deep``:
    merge every order of the days from its records (``reconcile.wide``), not only where the sums
    differ."""
    if last < first:
        raise ReconcileError(f"the range ends ({last}) before it starts ({first})")
    layers = layers or parse_layers(None, storage.settings.cdc_source_url is not None,
                                    storage.settings.es_url is not None)
    started = time.monotonic()
    now = utcnow()
    outcome = Outcome(_start(storage, first, last, layers, fix, now), first, last, layers, fix, now, deep)
    try:
        results, expected = compare(storage, first, last, layers, progress, deep)
        outcome.diffs = [d for result in results.values() for d in result.diffs]
        outcome.counts = {layer: dict(result.counts, differences=len(result.diffs), rows_read=result.rows_read)
                          for layer, result in results.items()}
        outcome.seconds = {layer: result.seconds for layer, result in results.items()}
        if fix and outcome.diffs:
            if submit is None:
                raise ReconcileError("--fix needs a way to send chains (submit)")
            _fix(storage, client, outcome, results, expected, submit, wait_seconds, progress)
            after, _ = compare(storage, first, last, layers, progress, deep)
            left = {d.identity for result in after.values() for d in result.diffs}
            for diff in outcome.diffs:
                diff.fixed = diff.identity not in left
            seen = {d.identity for d in outcome.diffs}
            outcome.new_diffs = [d for result in after.values() for d in result.diffs if d.identity not in seen]
            for layer, result in after.items():
                outcome.counts[layer]["differences_after_fix"] = len(result.diffs)
        outcome.status = ("clean" if not outcome.found else "fixed" if not outcome.remaining else "different")
    except Exception as error:
        outcome.status = "error"
        _finish(storage, outcome, started, error=f"{type(error).__name__}: {error}")
        raise
    _finish(storage, outcome, started)
    from reconcile.report import write_reports

    outcome.json_path, outcome.html_path = write_reports(storage, outcome, json_path, html_path)
    with storage.dws_engine.begin() as connection:
        connection.execute(update(RUNS).where(RUNS.c.id == outcome.run_id).values(
            json_path=outcome.json_path, html_path=outcome.html_path))
    if outcome.remaining and alarm:
        raise_alarm(client, "reconcile_difference",
                    f"reconciliation of {first}..{last}: {outcome.remaining} differences remain"
                    + (f" after the fix ({outcome.fixed} fixed)" if fix else " (run with --fix to compensate)"),
                    run=outcome.run_id, report=outcome.html_path)
    return outcome


def _finish(storage: Storage, outcome: Outcome, started: float, error: str | None = None) -> None:
    outcome.duration_ms = int((time.monotonic() - started) * 1000)
    kept = (outcome.diffs + outcome.new_diffs)[:KEPT_DIFFS]
    with storage.dws_engine.begin() as connection:
        connection.execute(update(RUNS).where(RUNS.c.id == outcome.run_id).values(
            finished_at=utcnow(), status=outcome.status, counts=json.dumps(outcome.counts, sort_keys=True),
            found=outcome.found, fixed=outcome.fixed, remaining=outcome.remaining,
            duration_ms=outcome.duration_ms, error=error))
        if kept:
            connection.execute(insert(DIFFS), [dict(
                run_id=outcome.run_id, layer=d.layer, biz_date=d.biz_date, order_id=d.order_id,
                target=d.target[:255], column_name=d.column, expected=d.expected, found=d.found, bucket=d.bucket,
                fixed=d.fixed) for d in kept])
        if outcome.actions:
            at = utcnow()
            connection.execute(insert(ACTIONS), [dict(
                run_id=outcome.run_id, layer=a.layer, action=a.action, order_id=a.order_id, biz_date=a.biz_date,
                detail=a.detail, result=a.result, at=at) for a in outcome.actions])


def trend(storage: Storage, upto: int, runs: int = TREND_RUNS) -> list[dict[str, Any]]:
    """The last ``runs`` finished runs up to run ``upto``, oldest first."""
    with storage.dws_engine.connect() as connection:
        rows = connection.execute(select(RUNS).where((RUNS.c.id <= upto) & (RUNS.c.status != "running"))
                                  .order_by(RUNS.c.id.desc()).limit(runs)).all()
    return [{"run": row.id, "started_at": row.started_at.isoformat(timespec="seconds"),
             "range": f"{row.date_from}..{row.date_to}", "status": row.status, "found": row.found,
             "fixed": row.fixed, "remaining": row.remaining} for row in reversed(rows)]
