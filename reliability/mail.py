"""Alarms by e-mail: one plain-text mail per alarm through the SMTP server of ``TDC_SMTP_HOST``,
sent by a background thread of the process (like the webhook), with a flood limit per kind.

A flood of one kind (a thousand failures in a minute) must not become a thousand mails: past
``TDC_ALARM_MAILS_PER_MINUTE`` mails of one kind in a minute, further alarms of that kind are
held back and summarised in one mail when the minute ends (or when the process flushes its
alarms on exit).  Every alarm is still in the log and the counter either way.
"""

from __future__ import annotations

import json
import logging
import queue
import smtplib
import ssl
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from typing import Any

from settings import AlarmMail

log = logging.getLogger("tdc.alarm")

#: Seconds one SMTP conversation may take (in the mailer thread, not the caller's).
MAIL_TIMEOUT = 30
#: Alarms waiting to be mailed; past this, new ones are only logged and counted (a flood while
#: the mail server is down must not grow a worker's memory).
MAIL_BACKLOG = 1000
#: The flood window: TDC_ALARM_MAILS_PER_MINUTE counts mails of one kind within this many seconds.
FLOOD_WINDOW_SECONDS = 60.0
#: Held-back alarms quoted in a flood summary (the rest only counted; all are in the log).
SUMMARY_NOTES = 20
#: Longest subject line taken from an alarm's message, in characters.
SUBJECT_CHARS = 120


def alarm_message(entry: dict[str, Any], mail: AlarmMail) -> EmailMessage:
    """The mail for one alarm (the ``entry`` raise_alarm logs): subject ``[tdc] KIND: first line``,
    a readable body with every field, and the alarm as JSON at the end."""
    kind = str(entry.get("alarm", "alarm"))
    text = str(entry.get("message", ""))
    first = text.replace("\r", "").split("\n", 1)[0]
    if len(first) > SUBJECT_CHARS:
        first = first[: SUBJECT_CHARS - 1] + "…"
    lines = [text, "", f"alarm: {kind}", f"at: {entry.get('at', '')}"]
    rest = {key: value for key, value in entry.items() if key not in ("alarm", "message", "at")}
    # Short fields first, then the lists (the digest's failed tasks), so the summary is on top.
    for key, value in rest.items():
        if not isinstance(value, list):
            lines.append(f"{key}: {_scalar(value)}")
    for key, value in rest.items():
        if isinstance(value, list):
            lines += ["", f"{key}:" if value else f"{key}: none"]
            lines += [f"  - {_item(item)}" for item in value]
    lines += ["", "The alarm as JSON:", json.dumps(entry, default=str, sort_keys=True, indent=2)]
    return _message(mail, f"[tdc] {kind}: {first}", "\n".join(lines) + "\n")


def flood_message(summary: FloodSummary) -> EmailMessage:
    """The one mail that stands for the alarms of a kind held back during a flood."""
    mail = summary.mail
    lines = [f"More than {mail.per_minute} {summary.kind} alarms came within a minute. These {summary.count} "
             "were logged and counted (Redis hash tdc:alarms) but not mailed one by one:", ""]
    lines += [f"  - {note}" for note in summary.notes]
    if summary.count > len(summary.notes):
        lines.append(f"  ... and {summary.count - len(summary.notes)} more (all of them are in the tdc.alarm log)")
    subject = f"[tdc] {summary.kind}: {summary.count} more alarms not mailed (limit {mail.per_minute} a minute)"
    return _message(mail, subject, "\n".join(lines) + "\n")


def send_mail(message: EmailMessage, mail: AlarmMail) -> None:
    """Deliver ``message`` through the configured server (TLS, STARTTLS or plain, with a login
    when a user is set); raises what smtplib, ssl or the socket raise, including
    SMTPRecipientsRefused when no recipient was accepted."""
    context = ssl.create_default_context()
    server: smtplib.SMTP
    if mail.tls == "tls":
        server = smtplib.SMTP_SSL(mail.host, mail.port, timeout=MAIL_TIMEOUT, context=context)
    else:
        server = smtplib.SMTP(mail.host, mail.port, timeout=MAIL_TIMEOUT)
    with server:
        if mail.tls == "starttls":
            server.starttls(context=context)
        if mail.user:
            server.login(mail.user, mail.password or "")
        refused = server.send_message(message)
    if refused:
        log.error("alarm mail %r was refused for %s", message["Subject"], ", ".join(sorted(refused)))


@dataclass
class FloodSummary:
    """Alarms of one kind held back in one window."""

    kind: str
    count: int
    notes: list[str]
    mail: AlarmMail


@dataclass
class _Window:
    start: float
    mail: AlarmMail
    mailed: int = 0
    held: int = 0
    notes: list[str] = field(default_factory=list)


class MailFlood:
    """Counts mails per kind in fixed windows of FLOOD_WINDOW_SECONDS from the first mail of the
    kind; past ``mail.per_minute`` the alarm is held back and noted for the window's summary."""

    def __init__(self, window: float = FLOOD_WINDOW_SECONDS) -> None:
        self.window = window
        self.windows: dict[str, _Window] = {}

    def admit(self, kind: str, note: str, mail: AlarmMail, now: float) -> bool:
        """True when this alarm is mailed; False when it is held back (and noted)."""
        window = self.windows.get(kind)
        if window is None or now - window.start >= self.window:
            window = self.windows[kind] = _Window(now, mail)
        window.mail = mail
        if window.mailed < mail.per_minute:
            window.mailed += 1
            return True
        window.held += 1
        if len(window.notes) < SUMMARY_NOTES:
            window.notes.append(note)
        return False

    def ended(self, now: float) -> list[FloodSummary]:
        """Summaries of windows that ended with alarms held back; ended windows are forgotten."""
        summaries = []
        for kind, window in list(self.windows.items()):
            if now - window.start >= self.window:
                summaries += self._take(kind, window)
                del self.windows[kind]
        return summaries

    def held_now(self) -> list[FloodSummary]:
        """Summaries of everything held back so far (the windows go on counting)."""
        return [summary for kind, window in self.windows.items() for summary in self._take(kind, window)]

    def next_end(self) -> float | None:
        """When the first window holding alarms back ends (None: none holds any)."""
        return min((w.start + self.window for w in self.windows.values() if w.held), default=None)

    @staticmethod
    def _take(kind: str, window: _Window) -> list[FloodSummary]:
        if not window.held:
            return []
        summary = FloodSummary(kind, window.held, window.notes, window.mail)
        window.held, window.notes = 0, []
        return [summary]


class AlarmMailer:
    """One daemon thread per process mailing queued alarms in order, within the flood limit."""

    def __init__(self) -> None:
        #: (the alarm's JSON, where to mail it); None asks for the flood summaries now.
        self.pending: queue.Queue[tuple[str, AlarmMail] | None] = queue.Queue(MAIL_BACKLOG)
        self.flood = MailFlood()
        self.mailed = 0
        threading.Thread(target=self._run, name="tdc-alarm-mail", daemon=True).start()

    def send(self, body: str, mail: AlarmMail) -> None:
        """Queue one alarm (its JSON); when the backlog is full it is only logged."""
        try:
            self.pending.put_nowait((body, mail))
        except queue.Full:
            log.error("alarm mail backlog full (%d); this alarm is only logged and counted", MAIL_BACKLOG)

    def flush(self, timeout: float) -> bool:
        """Mail what is queued and the summaries of floods so far; True when done in ``timeout``."""
        deadline = time.monotonic() + timeout
        try:
            self.pending.put(None, timeout=timeout)
        except queue.Full:
            return False
        done = threading.Event()

        def wait() -> None:
            self.pending.join()
            done.set()
        threading.Thread(target=wait, daemon=True).start()
        return done.wait(max(0.0, deadline - time.monotonic()))

    def _run(self) -> None:
        while True:
            end = self.flood.next_end()
            try:
                item = self.pending.get(timeout=None if end is None else max(0.0, end - time.monotonic()))
            except queue.Empty:
                self._summarise(self.flood.ended(time.monotonic()))
                continue
            try:
                self._summarise(self.flood.ended(time.monotonic()))
                if item is None:
                    self._summarise(self.flood.held_now())
                else:
                    self._mail_alarm(*item)
            except Exception:  # noqa: BLE001 - the mailer thread must outlive any bad alarm
                log.exception("alarm mail could not be prepared")
            finally:
                self.pending.task_done()

    def _mail_alarm(self, body: str, mail: AlarmMail) -> None:
        entry = json.loads(body)
        note = f"{entry.get('at', '')} {(str(entry.get('message', '')).splitlines() or [''])[0]}"
        if self.flood.admit(str(entry.get("alarm")), note, mail, time.monotonic()):
            self._deliver(alarm_message(entry, mail), mail)

    def _summarise(self, summaries: list[FloodSummary]) -> None:
        for summary in summaries:
            self._deliver(flood_message(summary), summary.mail)

    def _deliver(self, message: EmailMessage, mail: AlarmMail) -> None:
        try:
            send_mail(message, mail)
            self.mailed += 1
        except Exception as error:  # noqa: BLE001 - any failure of the mail server is only logged
            log.error("alarm mail %r via %s:%d failed: %s: %s", message["Subject"], mail.host, mail.port,
                      type(error).__name__, error)


def _message(mail: AlarmMail, subject: str, body: str) -> EmailMessage:
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = mail.sender
    message["To"] = ", ".join(mail.recipients)
    message["Date"] = formatdate(usegmt=True)
    # The sender's domain, not socket.getfqdn(), which can wait on DNS.
    message["Message-ID"] = make_msgid("tdc-alarm", domain=parseaddr(mail.sender)[1].rpartition("@")[2] or None)
    message.set_content(body)
    return message


def _scalar(value: Any) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{key} {item}" for key, item in value.items()) or "none"
    return "none" if value is None else str(value)


def _item(item: Any) -> str:
    if isinstance(item, dict):
        return "; ".join(f"{key}: {_scalar(value)}" for key, value in item.items())
    return _scalar(item)
