"""Alarms: a structured log line and a counter per reason in Redis (``tdc:alarms``).

Issue-level plumbing (webhook, digests) builds on ``raise_alarm``; callers only say what
happened and to which order.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from typing import Any

import redis

log = logging.getLogger("tdc.alarm")

#: Redis hash of alarm counts by kind.
ALARM_COUNTERS = "tdc:alarms"


def raise_alarm(client: redis.Redis | None, kind: str, message: str, **fields: Any) -> None:
    """Log one alarm as a JSON line and count it; counting failures never hide the alarm."""
    entry = {"alarm": kind, "message": message, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
             **fields}
    log.error(json.dumps(entry, default=str, sort_keys=True))
    if client is not None:
        try:
            client.hincrby(ALARM_COUNTERS, kind, 1)
        except redis.RedisError:
            log.exception("could not count alarm %s", kind)
