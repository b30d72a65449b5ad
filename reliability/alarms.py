"""Alarms: a structured log line, a counter per kind in Redis (``tdc:alarms``), a JSON POST
to ``TDC_ALARM_WEBHOOK`` when one is set, and an e-mail when ``TDC_SMTP_HOST`` is set.

Callers only say what happened and to which order.  The log line and the counter are written at
once; the webhook is posted and the mail sent by background threads of the process (one each),
off the hot path, so a slow or broken receiver or mail server never holds a chain step.  No
failure of a counter, a webhook or a mail reaches the caller: it is logged, and the alarm is
still in the log and the counter.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import os
import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import redis

from reliability.mail import AlarmMailer
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
    try:
        mail = get_settings().alarm_mail
        if mail is not None:
            # Unsorted, unlike the log line: the mail reads fields in the order the caller gave them.
            _mailer().send(json.dumps(entry, default=str), mail)
    except Exception:  # noqa: BLE001 - the mail must never fail the work
        log.exception("could not queue alarm %s for e-mail", kind)


def flush_alarms(timeout: float = EXIT_FLUSH_SECONDS) -> bool:
    """Wait until every queued alarm has been posted and mailed (or given up on), and the alarms
    a flood held back from e-mail are summarised; True when none is left within ``timeout``."""
    deadline = time.monotonic() + timeout
    done = True
    for pid, sender in list(_process_senders.values()):
        if pid == os.getpid():
            done = sender.flush(max(0.0, deadline - time.monotonic())) and done
    return done


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


class _Outbox(Protocol):
    def flush(self, timeout: float) -> bool: ...


_Made = TypeVar("_Made", bound=_Outbox)
#: The background senders by channel, each with the process that made it.
_process_senders: dict[str, tuple[int, _Outbox]] = {}
_sender_lock = threading.Lock()


def _sender() -> _WebhookSender:
    """The webhook sender of this process."""
    return _of_this_process("webhook", _WebhookSender)


def _mailer() -> AlarmMailer:
    """The alarm mailer of this process."""
    return _of_this_process("mail", AlarmMailer)


def _of_this_process(channel: str, make: Callable[[], _Made]) -> _Made:
    """The sender of ``channel`` in this process (remade in a forked child, whose parent's thread is gone)."""
    with _sender_lock:
        held = _process_senders.get(channel)
        if held is None or held[0] != os.getpid():
            held = _process_senders[channel] = (os.getpid(), make())
        return held[1]  # type: ignore[return-value]


def _post(url: str, body: str) -> None:
    request = urllib.request.Request(url, data=body.encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=WEBHOOK_TIMEOUT) as response:  # noqa: S310 - operator's URL
        response.read()


atexit.register(flush_alarms)
