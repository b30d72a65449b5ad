"""Alarms: a structured log line, a counter per kind in Redis (``tdc:alarms``), and a JSON POST
to ``TDC_ALARM_WEBHOOK`` when one is set.

Callers only say what happened and to which order; a failing counter or webhook is logged
and never hides the alarm or fails the caller.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import urllib.request
from typing import Any

import redis

from settings import get_settings

log = logging.getLogger("tdc.alarm")

#: Redis hash of alarm counts by kind.
ALARM_COUNTERS = "tdc:alarms"
#: Seconds a webhook may take; an alarm must not stall a worker for long.
WEBHOOK_TIMEOUT = 3


def raise_alarm(client: redis.Redis | None, kind: str, message: str, **fields: Any) -> None:
    """Log one alarm as a JSON line, count it, and POST it to the webhook if one is set."""
    entry = {"alarm": kind, "message": message, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
             **fields}
    body = json.dumps(entry, default=str, sort_keys=True)
    log.error(body)
    if client is not None:
        try:
            client.hincrby(ALARM_COUNTERS, kind, 1)
        except redis.RedisError:
            log.exception("could not count alarm %s", kind)
    webhook = get_settings().alarm_webhook
    if webhook:
        _post(webhook, body)


def _post(url: str, body: str) -> None:
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310 - operator's URL
            response.read()
    except OSError as error:
        log.error("alarm webhook %s failed: %s", url.split("?", 1)[0], error)
