"""``tdc dims load`` and ``tdc ads rebuild``: the warehouse-side commands."""

from __future__ import annotations

import datetime as dt
import sys
import time

from dimensions.offline import load_offline_dimensions
from models.redis_store import get_redis
from models.storage import get_storage
from models.warehouse import OFFLINE_DIMENSIONS
from warehouse.aggregates import AggregateReport, days_to_rebuild, rebuild_day


def load_dimensions(only: str | None) -> int:
    if only is not None and only not in OFFLINE_DIMENSIONS:
        print(f"tdc: no offline dimension {only!r}; declared: {', '.join(sorted(OFFLINE_DIMENSIONS))}",
              file=sys.stderr)
        return 2
    started = time.monotonic()
    for load in load_offline_dimensions(get_storage().dws_engine, get_redis(), only,
                                        progress=lambda line: print(line, file=sys.stderr)):
        table = OFFLINE_DIMENSIONS[load.dimension][1].name
        print(f"{load.dimension}: {load.rows} rows in {table}, {load.written} newer than Redis and loaded"
              + (f", {load.rejected} rejected (see the log)" if load.rejected else ""))
    print(f"done in {time.monotonic() - started:.1f}s")
    return 0


def rebuild_aggregates(day: str | None) -> int:
    storage = get_storage()
    if day is not None:
        try:
            days = [dt.date.fromisoformat(day)]
        except ValueError:
            print(f"tdc: --date {day!r} is not a date YYYY-MM-DD", file=sys.stderr)
            return 2
    else:
        days = days_to_rebuild(storage)
    started = time.monotonic()
    total = AggregateReport()
    for number, each in enumerate(days, start=1):
        report = rebuild_day(storage, each)
        total.add(report)
        print(f"  {each}: {report.applied} orders counted again, {report.cells} aggregate rows written "
              f"({number}/{len(days)})", file=sys.stderr)
    print(f"rebuilt {len(days)} days from the wide rows in {time.monotonic() - started:.1f}s: "
          f"{total.applied} orders counted, {total.cells} aggregate rows written")
    return 0
