"""The only schedule: what beat starts, each entry with the reason it exists."""

from __future__ import annotations

from settings import get_settings

_settings = get_settings()

BEAT_SCHEDULE = {
    # Safety net behind the fast path: submit tasks that are due (pending with a lost submit,
    # waiting past their back-off, or running past their lease).
    "rescan-due-tasks": {
        "task": "tdc.rescan",
        "schedule": _settings.rescan_interval_seconds,
    },
}
