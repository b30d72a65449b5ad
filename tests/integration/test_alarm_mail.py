"""Alarms by e-mail through a real SMTP server (aiosmtpd) started by the test: what arrives, the
daily digest listing each failed task, floods summarised, and a mail server that is slow, down or
refusing never holding or failing the caller."""

from __future__ import annotations

import asyncio
import datetime as dt
import email
import email.policy
import json
import logging
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import delete, insert

from models.orders import FailedTask
from reliability.alarms import ALARM_COUNTERS, flush_alarms, raise_alarm
from reliability.housekeeping import DIGEST_LIST, age_text, failed_digest
from reliability.mail import MailFlood
from settings import AlarmMail, get_settings
from tests.conftest import new_order_id

pytestmark = pytest.mark.integration

SENDER = "tdc alarms <tdc@alarms.test>"
RECIPIENTS = ("ops@alarms.test", "Night Shift <night@alarms.test>")


@dataclass
class Mailbox:
    """What the SMTP server accepted, and switches the test turns."""

    received: list[tuple[str, list[str], EmailMessage]] = field(default_factory=list)
    #: While clear, the server holds each message's DATA (a slow server).
    release: threading.Event = field(default_factory=threading.Event)
    #: A reply to every RCPT TO instead of accepting it (a server refusing the recipients).
    refuse_with: str | None = None
    port: int = 0

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,  # noqa: N802
                          options: list[str]) -> str:
        if self.refuse_with:
            return self.refuse_with
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        await asyncio.get_running_loop().run_in_executor(None, self.release.wait, 30)
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        self.received.append((envelope.mail_from, list(envelope.rcpt_tos), message))  # type: ignore[arg-type]
        return "250 Message accepted"

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for _, _, message in self.received]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def configure_mail(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., None]]:
    """Points tdc's alarm mail at 127.0.0.1:PORT (more TDC_* settings as keywords); afterwards the
    process's settings are as before."""
    def configure(port: int, **more: str) -> None:
        for name, value in {"TDC_SMTP_HOST": "127.0.0.1", "TDC_SMTP_PORT": str(port), "TDC_ALARM_FROM": SENDER,
                            "TDC_ALARM_TO": ", ".join(RECIPIENTS), **more}.items():
            monkeypatch.setenv(name, value)
        get_settings.cache_clear()
    yield configure
    flush_alarms(30)
    monkeypatch.undo()
    get_settings.cache_clear()


@pytest.fixture
def mailbox(configure_mail: Callable[..., None]) -> Iterator[Mailbox]:
    """A real SMTP server on a free local port, and tdc configured to mail alarms to it."""
    box = Mailbox(port=free_port())
    box.release.set()
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    configure_mail(box.port)
    yield box
    box.release.set()
    flush_alarms(30)
    controller.stop()


def body_of(message: EmailMessage) -> str:
    part = message.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")  # type: ignore[attr-defined]


def count(redis_client: Any, kind: str) -> int:
    return int(redis_client.hget(ALARM_COUNTERS, kind) or 0)


def test_an_alarm_arrives_by_mail_with_its_subject_recipients_fields_and_json(mailbox, redis_client) -> None:
    # Given tdc mailing alarms to two recipients
    kind = f"test_mail_{uuid.uuid4().hex[:6]}"
    # When an alarm with a two-line message and fields is raised
    raise_alarm(redis_client, kind, "PAY of X1 failed after 10 attempts\nlast error: waiting for SUBMIT",
                order_id="X1", operation="PAY", attempts=10)
    assert flush_alarms(30)
    # Then one mail arrived from the sender to both recipients, the subject carrying the first line
    [(sender, recipients, message)] = mailbox.received
    assert sender == "tdc@alarms.test"
    assert sorted(recipients) == ["night@alarms.test", "ops@alarms.test"]
    assert message["Subject"] == f"[tdc] {kind}: PAY of X1 failed after 10 attempts"
    assert message["From"] == SENDER
    assert "Night Shift <night@alarms.test>" in str(message["To"])
    # And the body reads as text, with every field, and ends with the alarm as JSON
    text = body_of(message)
    assert text.startswith("PAY of X1 failed after 10 attempts\nlast error: waiting for SUBMIT\n")
    for line in (f"alarm: {kind}", "order_id: X1", "operation: PAY", "attempts: 10"):
        assert f"\n{line}\n" in text
    alarm = json.loads(text.split("The alarm as JSON:\n", 1)[1])
    assert (alarm["alarm"], alarm["order_id"], alarm["attempts"]) == (kind, "X1", 10)
    assert alarm["message"].endswith("last error: waiting for SUBMIT")


def test_raising_an_alarm_does_not_wait_for_a_slow_mail_server(mailbox, redis_client) -> None:
    # Given a mail server that holds every message until the test lets it go
    mailbox.release.clear()
    kind = f"test_slow_mail_{uuid.uuid4().hex[:6]}"
    # When an alarm is raised, Then it returns and is counted while the server still holds the mail
    raise_alarm(redis_client, kind, "slow mail server")
    assert count(redis_client, kind) == 1
    assert mailbox.received == []
    # And the mail arrives once the server answers (a synchronous send would have returned after it)
    mailbox.release.set()
    assert flush_alarms(30)
    assert mailbox.subjects() == [f"[tdc] {kind}: slow mail server"]


def test_a_flood_of_one_kind_is_mailed_up_to_the_limit_and_the_rest_summarised(configure_mail, mailbox,
                                                                              redis_client) -> None:
    # Given at most two mails per kind a minute
    configure_mail(mailbox.port, TDC_ALARM_MAILS_PER_MINUTE="2")
    kind = f"test_flood_{uuid.uuid4().hex[:6]}"
    other = f"test_calm_{uuid.uuid4().hex[:6]}"
    # When five alarms of one kind and one of another are raised within the minute
    for i in range(5):
        raise_alarm(redis_client, kind, f"flood {i}")
    raise_alarm(redis_client, other, "calm")
    assert flush_alarms(30)
    # Then the first two are mailed, the other kind is not held back by the flood, and the three
    # held back arrive as one summary (on flush here; at the minute's end in a running worker)
    assert mailbox.subjects() == [f"[tdc] {kind}: flood 0", f"[tdc] {kind}: flood 1", f"[tdc] {other}: calm",
                                  f"[tdc] {kind}: 3 more alarms not mailed (limit 2 a minute)"]
    summary = body_of(mailbox.received[-1][2])
    assert all(f" flood {i}\n" in summary for i in (2, 3, 4)) and " flood 1\n" not in summary
    # And every one of them was counted
    assert count(redis_client, kind) == 5


def test_a_mail_server_that_is_down_neither_raises_nor_loses_the_log_and_count(configure_mail, redis_client,
                                                                               caplog) -> None:
    # Given tdc pointed at a port where nothing listens
    configure_mail(free_port())
    kind = f"test_mail_down_{uuid.uuid4().hex[:6]}"
    # When an alarm is raised, Then it does not raise, it is logged and counted, and the failed
    # delivery is only logged
    with caplog.at_level(logging.ERROR, logger="tdc.alarm"):
        raise_alarm(redis_client, kind, "nobody listens")
        assert flush_alarms(30)
    assert count(redis_client, kind) == 1
    messages = [record.getMessage() for record in caplog.records]
    assert any(json.loads(m).get("alarm") == kind for m in messages if m.startswith("{"))
    assert any(f"[tdc] {kind}: nobody listens" in m and "ConnectionRefusedError" in m for m in messages)


@pytest.mark.parametrize("tls", ["none", "starttls"])
def test_a_mail_server_that_refuses_neither_raises_nor_loses_the_log_and_count(tls, configure_mail, mailbox,
                                                                               redis_client, caplog) -> None:
    # Given a server that refuses every recipient, or (asked for STARTTLS) does not offer it
    if tls == "none":
        mailbox.refuse_with = "550 5.1.1 mailbox unavailable"
    else:
        configure_mail(mailbox.port, TDC_SMTP_TLS="starttls")
    kind = f"test_mail_refused_{uuid.uuid4().hex[:6]}"
    # When an alarm is raised, Then the caller sees nothing, the alarm is counted, nothing is
    # delivered, and the refusal is logged
    with caplog.at_level(logging.ERROR, logger="tdc.alarm"):
        raise_alarm(redis_client, kind, "refused")
        assert flush_alarms(30)
    assert count(redis_client, kind) == 1
    assert mailbox.received == []
    expected = "SMTPRecipientsRefused" if tls == "none" else "SMTPNotSupportedError"
    assert any(kind in r.getMessage() and expected in r.getMessage() for r in caplog.records)


@pytest.fixture
def failed_tasks(storage) -> Iterator[Any]:  # type: ignore[no-untyped-def]
    """Adds unresolved failed tasks to the real shards; removes them after the test (the storage
    is shared by the session, and other tests list failures)."""
    added: list[str] = []

    def add(failed_at: dt.datetime, reason: str, operation: str = "PAY") -> str:
        order_id = new_order_id("M")
        with storage.order_transaction(order_id) as connection:
            connection.execute(insert(FailedTask).values(
                order_id=order_id, operation_type=operation, reason=reason, last_error=reason, attempts=10,
                history="[]", sources="[]", failed_at=failed_at))
        added.append(order_id)
        return f"{order_id}/{operation}"
    yield add
    for order_id in added:
        with storage.order_transaction(order_id) as connection:
            connection.execute(delete(FailedTask).where(FailedTask.order_id == order_id))


def test_the_daily_digest_mails_each_failed_task_with_its_reason_and_age(mailbox, storage, failed_tasks,
                                                                         redis_client) -> None:
    # Given three unresolved failed tasks, newer than any other test's, of different ages
    now = dt.datetime(2031, 3, 4, 7, 0)
    waiting = failed_tasks(now - dt.timedelta(hours=3, minutes=12), "waiting for SUBMIT")
    broken = failed_tasks(now - dt.timedelta(days=2, hours=5, minutes=40), "data incomplete: 1 of 2 lines",
                          operation="SUBMIT")
    fresh = failed_tasks(now - dt.timedelta(minutes=7), "refund exceeds payment", operation="REFUND")
    # When the digest runs
    digest = failed_digest(storage, redis_client, now)
    assert flush_alarms(30)
    # Then its fields list each of them, newest first, with id, reason and age
    listed = {entry["id"]: entry for entry in digest["failed"]}  # type: ignore[attr-defined]
    assert [entry["id"] for entry in digest["failed"][:3]] == [fresh, waiting, broken]  # type: ignore[index]
    assert (listed[waiting]["reason"], listed[waiting]["age"]) == ("waiting for SUBMIT", "3 h 12 min")
    assert (listed[broken]["reason"], listed[broken]["age"]) == ("data incomplete: 1 of 2 lines", "2 d 5 h")
    assert (listed[fresh]["reason"], listed[fresh]["age"]) == ("refund exceeds payment", "7 min")
    # And the mail shows each on its own line, under a subject that gives the count
    [(_, _, message)] = [m for m in mailbox.received if str(m[2]["Subject"]).startswith("[tdc] failed_digest:")]
    assert str(message["Subject"]).startswith(f"[tdc] failed_digest: {digest['unresolved']} unresolved failed tasks")
    text = body_of(message)
    assert f"  - id: {waiting}; reason: waiting for SUBMIT; age: 3 h 12 min; failed_at: 2031-03-04 03:48:00\n" in text
    assert f"  - id: {broken}; reason: data incomplete: 1 of 2 lines; age: 2 d 5 h;" in text
    assert f"  - id: {fresh}; reason: refund exceeds payment; age: 7 min;" in text
    assert text.index(fresh) < text.index(waiting) < text.index(broken)


def test_the_digest_lists_at_most_its_cap_and_says_how_many_more(storage, failed_tasks, redis_client) -> None:
    # Given more unresolved failed tasks than the digest lists, all newer than any other test's
    now = dt.datetime(2032, 6, 1, 7, 0)
    added = [failed_tasks(now - dt.timedelta(minutes=i + 1), f"reason {i}") for i in range(DIGEST_LIST + 3)]
    # When the digest runs
    digest = failed_digest(storage, redis_client, now)
    # Then it lists the newest DIGEST_LIST of them and counts the rest
    assert [entry["id"] for entry in digest["failed"]] == added[:DIGEST_LIST]  # type: ignore[attr-defined]
    assert digest["not_listed"] == digest["unresolved"] - DIGEST_LIST >= 3  # type: ignore[operator]
    assert digest["failed"][-1]["age"] == "3 h 20 min"  # type: ignore[index]


@pytest.mark.parametrize(("age", "text"), [
    (dt.timedelta(seconds=59), "under 1 min"),
    (dt.timedelta(minutes=7, seconds=59), "7 min"),
    (dt.timedelta(hours=3, minutes=12), "3 h 12 min"),
    (dt.timedelta(hours=23, minutes=59), "23 h 59 min"),
    (dt.timedelta(days=1), "1 d 0 h"),
    (dt.timedelta(days=40, hours=2, minutes=30), "40 d 2 h"),
    (dt.timedelta(minutes=-5), "under 1 min"),  # a clock a little ahead of the database's
])
def test_ages_read_as_a_person_says_them(age: dt.timedelta, text: str) -> None:
    assert age_text(age) == text


MAIL = AlarmMail(host="mx", tls="none", port=25, sender="t@x.test", recipients=("o@x.test",), per_minute=2)


def test_the_flood_limit_counts_each_kind_per_window_and_summarises_what_it_held() -> None:
    flood = MailFlood(window=60)
    # Given two mails of a kind at 0 s and 10 s, Then a third at 20 s is held; another kind is not
    assert [flood.admit("a", f"a{i}", MAIL, at) for i, at in enumerate((0, 10, 20, 30))] == [True, True, False, False]
    assert flood.admit("b", "b0", MAIL, 30)
    # And nothing is summarised before the window ends at 60 s, which is when the next is due
    assert flood.next_end() == 60 and flood.ended(59.9) == []
    [summary] = flood.ended(60)
    assert (summary.kind, summary.count, summary.notes) == ("a", 2, ["a2", "a3"])
    # And a new window begins with the next alarm
    assert flood.admit("a", "a4", MAIL, 61) and flood.next_end() is None
