"""The changelog relay, started by beat: publish what the changelog outbox holds (``streams.outbox``).

Several at once are harmless: each shard database is relayed by one of them, the others skip it.
A pass that fails leaves its round unmarked for the next one, a couple of seconds later; nothing
is retried here."""

from __future__ import annotations

import datetime as dt
import logging
import os
from typing import Any

from celery import shared_task

from intake.receiver import utcnow
from models.redis_store import get_redis
from models.storage import Storage, get_storage
from reliability.alarms import raise_alarm
from settings import Settings, get_settings
from streams.outbox import Sinks, oldest_waiting, relay_pass, until

log = logging.getLogger(__name__)

#: Longest a pass publishes before it ends (the next beat tick goes on): well inside the task's
#: time limit, so a big backlog never gets a pass killed between publishing and marking.
PASS_SECONDS = 60.0
#: A change waiting this long raises an alarm: the changelog consumers are that far behind.
LAG_ALARM = dt.timedelta(minutes=15)

#: The connected sinks of this process (pid, sinks): one connection per worker process, not per pass.
_SINKS: tuple[int, Sinks] | None = None


def _sinks(settings: Settings) -> Sinks:
    global _SINKS
    if _SINKS is None or _SINKS[0] != os.getpid():
        _SINKS = (os.getpid(), Sinks.configured(settings))
    return _SINKS[1]


def _drop_sinks() -> None:
    global _SINKS
    if _SINKS is not None and _SINKS[0] == os.getpid():
        _SINKS[1].close()
    _SINKS = None


@shared_task(name="tdc.changelog_relay")
def relay_changelog() -> dict[str, Any]:
    """One relay pass over every shard database; an alarm when a change has waited too long."""
    settings = get_settings()
    if not settings.changelog_outbox:
        return {"published": 0}
    storage = get_storage()
    try:
        report = relay_pass(storage, _sinks(settings), until(PASS_SECONDS))
    except Exception:
        _drop_sinks()  # reconnect on the next pass
        _alarm_if_lagging(storage)
        raise
    _alarm_if_lagging(storage)
    return report.as_dict()


def _alarm_if_lagging(storage: Storage) -> None:
    oldest = oldest_waiting(storage)
    if oldest is not None and utcnow() - oldest > LAG_ALARM:
        raise_alarm(get_redis(), "changelog_lagging", f"a wide-row change has waited since {oldest:%Y-%m-%d %H:%M:%S} "
                    "UTC for the changelog relay; its consumers and the analytics events are that far behind")
