"""The run's reports: JSON for machines, one self-contained HTML file (Jinja2, inline SVG) for people.

Both hold the same facts: the range and layers, what each layer compared, every difference with
its expected and found values and whether the fix cleared it, every action, and the trend of
the last runs.  The HTML loads nothing from anywhere: it opens offline and can be mailed.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from models.storage import Storage
from reconcile.charts import grouped_bars, lines
from reconcile.diffs import days_between

if TYPE_CHECKING:
    from reconcile.run import Outcome

_TEMPLATES = Environment(loader=PackageLoader("reconcile", "templates"), autoescape=select_autoescape(["html", "j2"]),
                         trim_blocks=True, lstrip_blocks=True)


def facts(storage: Storage, outcome: Outcome) -> dict[str, Any]:
    """Everything the reports say, as JSON-ready data."""
    from reconcile.run import trend

    return {
        "run": outcome.run_id,
        "range": {"from": outcome.first.isoformat(), "to": outcome.last.isoformat()},
        "layers": outcome.layers,
        "fix": outcome.fix,
        "deep": outcome.deep,
        "status": outcome.status,
        "started_at": outcome.started_at.isoformat(timespec="seconds") + "Z",
        "duration_ms": outcome.duration_ms,
        "found": outcome.found,
        "fixed": outcome.fixed,
        "remaining": outcome.remaining,
        "counts": outcome.counts,
        "seconds": {layer: {phase: round(s, 3) for phase, s in phases.items()}
                    for layer, phases in outcome.seconds.items()},
        "differences": [d.as_dict() for d in outcome.diffs],
        "new_after_fix": [d.as_dict() for d in outcome.new_diffs],
        "actions": [a.as_dict() for a in outcome.actions],
        "trend": trend(storage, outcome.run_id),
    }


def render_html(data: dict[str, Any]) -> str:
    per_day: dict[str, dict[str, int]] = {layer: defaultdict(int) for layer in data["layers"]}
    for diff in data["differences"] + data["new_after_fix"]:
        per_day[diff["layer"]][diff["biz_date"] or "?"] += 1
    days = [day.isoformat() for day in days_between(dt.date.fromisoformat(data["range"]["from"]),
                                                    dt.date.fromisoformat(data["range"]["to"]))]
    by_day = grouped_bars("Differences per day and layer", "per-day", days, per_day)
    runs = [dict(point, label=f"#{point['run']}") for point in data["trend"]]
    history = lines(f"The last {len(runs)} runs", "trend", runs, "label", ["found", "remaining"])
    return _TEMPLATES.get_template("report.html.j2").render(
        data=data, by_day=Markup(by_day), trend_chart=Markup(history))  # noqa: S704 - our own escaped SVG


def write_reports(storage: Storage, outcome: Outcome, json_path: str | Path | None,
                  html_path: str | Path | None) -> tuple[str, str]:
    """Write both reports (default: ``$TDC_HOME/reports/reconcile-<run>.json|html``); their paths."""
    folder = storage.settings.home / "reports"
    json_file = Path(json_path) if json_path else folder / f"reconcile-{outcome.run_id}.json"
    html_file = Path(html_path) if html_path else folder / f"reconcile-{outcome.run_id}.html"
    data = facts(storage, outcome)
    for path in (json_file, html_file):
        path.parent.mkdir(parents=True, exist_ok=True)
    json_file.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    html_file.write_text(render_html(data), encoding="utf-8")
    return str(json_file.absolute()), str(html_file.absolute())
