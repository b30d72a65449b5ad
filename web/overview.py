"""The console's overview: the fleet at a glance, from the same figures ``/metrics`` exports
(``web.metrics.read_figures``), drawn as inline SVG."""

from __future__ import annotations

import math
import time
from typing import Any

from markupsafe import Markup

from chain.timings import STEPS, done_per_minute
from models.redis_store import get_redis
from models.storage import Storage
from reconcile.charts import grouped_bars, lines
from web.metrics import BACKLOG_STATES, read_figures

#: Minutes the DONE chart spans.
DONE_MINUTES = 60


def _whole(group: str) -> str:
    return group


def seconds(value: float) -> str:
    if value < 1:
        return f"{value * 1000:.0f} ms"
    if value < 120:
        return f"{value:g} s"
    return f"{value / 60:.0f} min" if value < 7200 else f"{value / 3600:.1f} h"


def quantile(histogram: tuple[list[tuple[float, int]], float] | None, q: float) -> str:
    """At most how long the ``q`` quantile of a cumulative histogram took: the upper bound of the
    bucket it falls in (the bucket Prometheus's histogram_quantile would interpolate within)."""
    if not histogram or not histogram[0] or not histogram[0][-1][1]:
        return "-"
    buckets = histogram[0]
    rank = q * buckets[-1][1]
    bound = next(bound for bound, count in buckets if count >= rank)
    if bound == math.inf:
        return f"over {seconds(max(b for b, _ in buckets if b != math.inf))}"
    return f"≤ {seconds(bound)}"


def overview_charts(storage: Storage) -> dict[str, Any]:
    """Cards and charts for the overview page; a part that cannot be read is shown as unknown."""
    from worker import app

    client = get_redis()
    figures = read_figures(storage, client, app)
    now = time.time()
    charts: list[tuple[str, Markup]] = []

    def chart(title: str, svg: str) -> None:
        charts.append((title, Markup(svg)))  # noqa: S704 - our own SVG, every text in it escaped

    tables = figures.tables
    if tables is not None:
        backlog = {state: tables.tasks.get(state, 0) for state in BACKLOG_STATES}
        chart("Tasks not done, by state", grouped_bars("Tasks not done, by state", "backlog-states", list(backlog),
                                                        {"tasks": backlog}, _whole))
    if figures.queues is not None:
        chart("Messages waiting, by queue", grouped_bars("Messages waiting, by queue", "backlog-queues",
                                                         list(figures.queues) or ["(none)"],
                                                         {"messages": figures.queues}, _whole))
    try:
        minutes = done_per_minute(client, now, DONE_MINUTES)
    except Exception:  # noqa: BLE001 - the chart is left out, the page still shows
        minutes = None
    if minutes is not None:
        title = f"Tasks DONE per minute, last {DONE_MINUTES} minutes (UTC)"
        points = [{"minute": time.strftime("%H:%M", time.gmtime(minute * 60)), "done": n} for minute, n in minutes]
        chart(title, lines(title, "done-per-minute", points, "minute", ["done"]))
    if figures.alarms:
        title = "Alarms raised, by kind"
        chart(title, grouped_bars(title, "alarms", sorted(figures.alarms), {"alarms": figures.alarms}, _whole))
    tails = {name: max(0.0, stored - source) for name, (source, stored) in (figures.tails or {}).items()}
    return {
        "failed": tables.failed if tables is not None else None,
        "quarantined": tables.quarantined if tables is not None else None,
        "backlog": sum(tables.tasks.values()) if tables is not None else None,
        "counted_ago": (now - tables.counted_at) if tables is not None else None,
        "done": sum(figures.done.values()),
        "tails": tails,
        "last_run": figures.reconcile,
        "steps": {step: (quantile(figures.steps.get(step), 0.5), quantile(figures.steps.get(step), 0.95))
                  for step in STEPS},
        "lag": (quantile(figures.lag, 0.5), quantile(figures.lag, 0.95)),
        "unreadable": sorted(part for part, ok in figures.ok.items() if not ok),
        "charts": charts,
    }
