"""A batch of broker messages taken in: each body becomes one line for ``accept_lines``, and
what cannot be a line (not UTF-8, empty, not the broker's entry shape) is quarantined with its
reason instead, so a poison message is acknowledged with the rest and never blocks a stream."""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import redis
from sqlalchemy.exc import DataError

from flows import Flow
from inputs.events import BadInput
from intake.receive_caps import MAX_WRITE_BYTES, kept_text
from intake.receiver import IntakeReport, TaskKey, accept_lines, quarantine, utcnow
from models.storage import Storage
from reliability.transient import retry_on_contention

#: The line a message without a value stands for: Debezium's tombstone (a Kafka record with a
#: null value, the Redis sink's ``null.value`` placeholder), which intake counts as ignored.
TOMBSTONE = "null"


@dataclass
class Message:
    """One message as a broker delivered it: its body (None for a record without a value),
    what the broker needs to acknowledge it, and, when the broker's own envelope is already
    wrong (a Redis entry of neither sink shape), why it cannot be taken in."""

    body: bytes | str | None
    handle: Any = None
    poison: str | None = None


def line_of(message: Message) -> tuple[str | None, str | None]:
    """The message's line, or None and why it cannot be one."""
    if message.poison is not None:
        return None, message.poison
    body = message.body
    if body is None:
        return TOMBSTONE, None
    if isinstance(body, bytes):
        try:
            body = body.decode("utf-8")
        except UnicodeDecodeError as error:
            return None, f"message body is not UTF-8 text ({error.reason} at byte {error.start})"
    if not body.strip():
        return None, "message body is empty"
    return body, None


def raw_text(message: Message) -> str:
    """The message body as text for the quarantine: undecodable bytes escaped, long bodies cut."""
    body = message.body
    text = "" if body is None else body if isinstance(body, str) else body.decode("utf-8", "backslashreplace")
    return kept_text(text, len(text), hashlib.sha1(text.encode("utf-8", "surrogatepass")).hexdigest())


def quarantine_text(storage: Storage, input_format: str, raw: str, reason: str) -> None:
    """Keep ``raw`` in shard database 0's quarantine with ``reason`` (once however often it is
    delivered)."""
    def work() -> bool:
        with storage.shard_engine(0).begin() as connection:
            return quarantine(connection, input_format, raw, BadInput(reason), utcnow())
    retry_on_contention(work)


def take_in(storage: Storage, client: redis.Redis, flow: Flow, input_format: str,
            messages: Iterable[Message]) -> IntakeReport:
    """Every message's verdict, committed: lines through ``accept_lines`` (in the batch's order),
    poison quarantined.  A line over ``MAX_WRITE_BYTES`` goes through intake alone: should it be
    bad, the quarantine cannot hold its whole text (a MySQL/MariaDB TEXT column), so its beginning
    is kept instead.  Raises only for infrastructure faults (database, Redis unreachable): then
    nothing may be acknowledged, and the batch is taken in again."""
    report = IntakeReport()
    lines: list[str] = []
    large: list[tuple[str, Message]] = []
    for message in messages:
        line, reason = line_of(message)
        if line is None:
            assert reason is not None
            quarantine_text(storage, input_format, raw_text(message), reason)
            _count_quarantined(report, reason)
        elif len(line) > MAX_WRITE_BYTES // 4 and len(line.encode()) > MAX_WRITE_BYTES:
            large.append((line, message))
        else:
            lines.append(line)
    if lines:
        report.add(accept_lines(storage, client, flow, input_format, lines))
    for line, message in large:
        try:
            report.add(accept_lines(storage, client, flow, input_format, [line]))
        except DataError as error:  # too long for a column: only its quarantine could not be kept
            reason = f"message of {len(line.encode())} bytes could not be stored whole ({error.orig})"[:512]
            quarantine_text(storage, input_format, raw_text(message), reason)
            _count_quarantined(report, reason)
    return report


def _count_quarantined(report: IntakeReport, reason: str) -> None:
    report.lines += 1
    report.quarantined += 1
    report.reasons[reason] += 1
    report.outcomes.append(("quarantined", reason))


#: What a consumer does with a batch: take it in and return the report (``take_in`` bound to a
#: storage, Redis, flow and format).
TakeIn = Callable[[list[Message]], IntakeReport]
#: What a consumer does with the tasks a batch touched: submit their chains (``submit_tasks``).
Submit = Callable[[Iterable[TaskKey]], int]
