"""What every comparison layer reports: differences, and what it compared."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any


def as_date(value: Any) -> dt.date:
    """A day as a database returns it (a date, a datetime, or SQLite's text)."""
    if isinstance(value, dt.datetime):
        return value.date()
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value)[:10])


def days_between(first: dt.date, last: dt.date) -> list[dt.date]:
    """Every day from ``first`` to ``last``, both included."""
    return [first + dt.timedelta(days=n) for n in range((last - first).days + 1)]


@dataclass
class Diff:
    """One difference.  ``column`` is ``*`` for a row that is missing or not expected."""

    layer: str
    biz_date: dt.date | None
    order_id: str | None
    target: str
    column: str
    expected: str | None
    found: str | None
    bucket: str | None = None
    #: Why it may not be wrong yet (an operation still on its way), or what the fix cannot do.
    note: str | None = None
    fixed: bool = False

    @property
    def identity(self) -> tuple[str, str | None, str, str]:
        return (self.layer, self.order_id, self.target, self.column)

    def as_dict(self) -> dict[str, Any]:
        return {"layer": self.layer, "biz_date": self.biz_date.isoformat() if self.biz_date else None,
                "order_id": self.order_id, "target": self.target, "column": self.column,
                "expected": self.expected, "found": self.found, "bucket": self.bucket, "note": self.note,
                "fixed": self.fixed}


@dataclass
class LayerResult:
    """One layer's comparison of one range of days."""

    layer: str
    diffs: list[Diff] = field(default_factory=list)
    #: What was compared: orders, buckets, cells; and how many buckets differed.
    counts: dict[str, int] = field(default_factory=dict)
    #: Row-level reads (orders fetched because their bucket differed).
    rows_read: int = 0
    #: Seconds per phase, for benchmarks and the report.
    seconds: dict[str, float] = field(default_factory=dict)
