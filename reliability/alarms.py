"""Alarms: a structured log line, a counter per kind in Redis (``tdc:alarms``), and a JSON POST
to ``TDC_ALARM_WEBHOOK`` when one is set.

Callers only say what happened and to which order.  The log line and the counter are written at
once; the webhook is posted by a background thread of the process, off the hot path, so a slow
or broken receiver never holds a chain step.  No failure of a counter or a webhook reaches the
caller: it is logged, and the alarm is still in the log and the counter.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import queue
import threading
import urllib.request
from typing import Any

import redis

from settings import get_settings

log = logging.getLogger("tdc.alarm")

#: Redis hash of alarm counts by kind.
ALARM_COUNTERS = "tdc:alarms"
#: Seconds one webhook POST may take (in the sender thread, not the caller's).
WEBHOOK_TIMEOUT = 10
#: Alarms waiting for the webhook; past this, new ones are only logged and counted (a flood
#: of alarms must not grow a worker's memory while the receiver is down).
WEBHOOK_BACKLOG = 1000
#: Seconds a process that exits gives its sender to deliver what is queued.
EXIT_FLUSH_SECONDS = 5


def raise_alarm(client: redis.Redis | None, kind: str, message: str, **fields: Any) -> None:
    """Log one alarm as a JSON line, count it, and queue it for the webhook if one is set."""
    entry = {"alarm": kind, "message": message, "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
             **fields}
    body = json.dumps(entry, default=str, sort_keys=True)
    log.error(body)
    if client is not None:
        try:
            client.hincrby(ALARM_COUNTERS, kind, 1)
        except Exception:  # noqa: BLE001 - counting must never fail the work
            log.exception("could not count alarm %s", kind)
    try:
        webhook = get_settings().alarm_webhook
        if webhook:
            _sender().send(webhook, body)
    except Exception:  # noqa: BLE001 - the webhook must never fail the work
        log.exception("could not queue alarm %s for the webhook", kind)


def flush_alarms(timeout: float = EXIT_FLUSH_SECONDS) -> bool:
    """Wait until every queued alarm has been posted (or given up on); True when none is left."""
    sender = _process_sender
    return True if sender is None or sender[0] != os.getpid() else sender[1].flush(timeout)


class _WebhookSender:
    """One daemon thread per process posting queued alarms in order."""

    def __init__(self) -> None:
        self.pending: queue.Queue[tuple[str, str]] = queue.Queue(WEBHOOK_BACKLOG)
        self.delivered = 0
        threading.Thread(target=self._run, name="tdc-alarm-webhook", daemon=True).start()

    def send(self, url: str, body: str) -> None:
        try:
            self.pending.put_nowait((url, body))
        except queue.Full:
            log.error("alarm webhook backlog full (%d); this alarm is only logged and counted", WEBHOOK_BACKLOG)

    def flush(self, timeout: float) -> bool:
        done = threading.Event()

        def wait() -> None:
            self.pending.join()
            done.set()
        threading.Thread(target=wait, daemon=True).start()
        return done.wait(timeout)

    def _run(self) -> None:
        while True:
            url, body = self.pending.get()
            try:
                _post(url, body)
                self.delivered += 1
            except Exception as error:  # noqa: BLE001 - any failure of the receiver is only logged
                log.error("alarm webhook %s failed: %s: %s", url.split("?", 1)[0], type(error).__name__, error)
            finally:
                self.pending.task_done()


_process_sender: tuple[int, _WebhookSender] | None = None
_sender_lock = threading.Lock()


def _sender() -> _WebhookSender:
    """The sender of this process (remade in a forked child, whose parent's thread is gone)."""
    global _process_sender
    with _sender_lock:
        if _process_sender is None or _process_sender[0] != os.getpid():
            _process_sender = (os.getpid(), _WebhookSender())
        return _process_sender[1]


def _post(url: str, body: str) -> None:
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310 - operator's URL
        response.read()


atexit.register(flush_alarms)
