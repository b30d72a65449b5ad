"""The caps on one ``tdc.receive`` batch: how many writes, how many bytes, how large one write.

Anyone who can publish to the broker can send ``tdc.receive``, so what it takes is bounded here
and nothing it refuses is dropped in silence:

- **A batch over either cap** (``TDC_RECEIVE_MAX_WRITES`` writes, ``TDC_RECEIVE_MAX_BYTES``
  bytes as JSON) **is refused whole**: nothing of it is stored, one quarantine row keeps the
  first ``KEPT_CHARACTERS`` of it with its size, its digest and the reason, and a
  ``receive_refused`` alarm goes out.  Whole, not "the first N and quarantine the rest", because
  (1) the sender then has one simple thing to do, send the batch again in smaller parts, which is
  safe (writes are idempotent on ``unique_key``) instead of working out from the quarantine which
  of its writes were taken; (2) the HTTP receiver refuses such a body whole too (413), so both
  doors behave alike; (3) the rest of an oversized batch quarantined write by write would store
  just the unbounded volume the cap is there to refuse.
- **A single write over ``MAX_WRITE_BYTES``** inside a batch within the caps is quarantined alone
  (a bounded prefix, its size, digest and order id) and its neighbours are stored, as any bad
  input is: the metadata and quarantine columns cannot hold it whole on MySQL/MariaDB.
- Something that is not a list of writes at all is refused whole, as an oversized batch is.

A refused batch or write delivered again (a broker redelivery) finds its quarantine row by its
text and keeps one row, and alarms once.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

import redis

from flows import Flow
from inputs.events import BadInput
from intake.receiver import ORDER_ID_LENGTH, IntakeReport, accept_lines, quarantine, utcnow
from models.storage import Storage
from reliability.alarms import raise_alarm
from reliability.transient import retry_on_contention

#: What a refused batch or write keeps of its text: enough to see whose it was and what it held
#: (sources, order ids, keys), and well within the quarantine's ``raw`` column (TEXT: 65,535
#: bytes on MySQL/MariaDB, at most 4 bytes a character; the JSON here is ASCII).
KEPT_CHARACTERS = 8192
#: The largest single write (as JSON) stored: a MySQL/MariaDB TEXT column, which holds the
#: write's metadata content and, when it is bad, its quarantined text.  The same on every
#: backend, so a write's fate does not depend on where its shard lives.
MAX_WRITE_BYTES = 65_535
#: How the task refers to its caps in reasons and alarms.
CAPS = ("TDC_RECEIVE_MAX_WRITES", "TDC_RECEIVE_MAX_BYTES")
INPUT_FORMAT = "business"


@dataclass
class Received:
    """What became of one receive batch: the intake report of what was stored or quarantined,
    and the writes of a batch refused whole (0 when it was taken)."""

    report: IntakeReport = field(default_factory=IntakeReport)
    refused: int = 0
    reason: str | None = None

    def counts(self) -> dict[str, int]:
        r = self.report
        return {"accepted": r.accepted, "duplicated": r.duplicated, "stale": r.stale, "ambiguous": r.ambiguous,
                "quarantined": r.quarantined, "ignored": r.ignored, "refused": self.refused}


@dataclass
class _Measured:
    """One pass over a batch: its writes as JSON lines (kept only while within the byte cap), how
    many there are, its size as a JSON list, the beginning of that JSON and its digest."""

    lines: list[str] = field(default_factory=list)
    writes: int = 0
    size: int = 2  # "[" and "]"
    beginning: str = "["
    digest: Any = field(default_factory=lambda: hashlib.sha1(b"["))


def _measure(writes: list[Any], max_bytes: int) -> _Measured:
    measured = _Measured()
    for write in writes:
        line = json.dumps(write)  # ASCII: characters are bytes
        part = f"{', ' if measured.writes else ''}{line}"
        measured.size += len(part)
        measured.digest.update(part.encode())
        if len(measured.beginning) <= KEPT_CHARACTERS:
            measured.beginning += part[:KEPT_CHARACTERS + 1 - len(measured.beginning)]
        measured.writes += 1
        if measured.size <= max_bytes:
            measured.lines.append(line)
    measured.beginning += "]"
    measured.digest.update(b"]")
    return measured


def kept_text(beginning: str, size: int, digest: str) -> str:
    """What the quarantine keeps of an input ``size`` characters long that starts with
    ``beginning``: all of it when it is short, else its first ``KEPT_CHARACTERS`` and what was cut
    (the whole size and its SHA-1, which also keeps two inputs sharing a beginning apart)."""
    if size <= KEPT_CHARACTERS:
        return beginning
    return f"{beginning[:KEPT_CHARACTERS]}\n[tdc: the first {KEPT_CHARACTERS} of {size} characters; sha1 {digest}]"


def receive_batch(storage: Storage, client: redis.Redis, flow: Flow, writes: Any, max_writes: int,
                  max_bytes: int) -> Received:
    """Store a receive batch through intake, within ``max_writes`` writes and ``max_bytes``
    bytes (as JSON); refuse it whole, into the quarantine with an alarm, when it is over either
    or not a list.  The caller submits chains for ``received.report.touched``.

    Raises only for infrastructure faults (database, Redis unreachable), as ``accept_lines``."""
    if not isinstance(writes, list):
        text = json.dumps(writes)
        reason = (f"batch refused: tdc.receive takes a list of writes, not a JSON {type(writes).__name__}; "
                  f"nothing of it was stored")
        return _refuse(storage, client, kept_text(text, len(text), hashlib.sha1(text.encode()).hexdigest()),
                       reason, writes=1, size=len(text))
    measured = _measure(writes, max_bytes)
    if measured.writes > max_writes or measured.size > max_bytes:
        over = []
        if measured.writes > max_writes:
            over.append(f"{measured.writes} writes (at most {max_writes}, {CAPS[0]})")
        if measured.size > max_bytes:
            over.append(f"{measured.size} bytes as JSON (at most {max_bytes}, {CAPS[1]})")
        reason = (f"batch refused: {' and '.join(over)}; nothing of it was stored, only its beginning is kept "
                  f"here: send it again in smaller batches")
        kept = kept_text(measured.beginning, measured.size, measured.digest.hexdigest())
        return _refuse(storage, client, kept, reason, writes=measured.writes, size=measured.size)
    fitting = [line for line in measured.lines if len(line) <= MAX_WRITE_BYTES]
    received = Received(accept_lines(storage, client, flow, INPUT_FORMAT, fitting))
    oversized = [(line, write) for line, write in zip(measured.lines, writes, strict=True)
                 if len(line) > MAX_WRITE_BYTES]
    if oversized:
        stored = iter(received.report.outcomes)
        extra = _quarantine_oversized(storage, oversized)
        cut = iter(extra.outcomes)
        received.report.add(extra)
        # One verdict per write, in the batch's order (what the HTTP receiver answers per item).
        received.report.outcomes = [next(cut) if len(line) > MAX_WRITE_BYTES else next(stored)
                                    for line in measured.lines]
    return received


def _refuse(storage: Storage, client: redis.Redis, kept: str, reason: str, writes: int, size: int) -> Received:
    """Keep the beginning of a refused batch in shard database 0 and alarm, once per batch."""
    def work() -> bool:
        with storage.shard_engine(0).begin() as connection:
            return quarantine(connection, INPUT_FORMAT, kept, BadInput(reason), utcnow())
    if retry_on_contention(work):
        raise_alarm(client, "receive_refused", f"a tdc.receive batch was refused: {reason}", writes=writes,
                    bytes=size)
    return Received(refused=writes, reason=reason)


def _order_id(write: Any) -> str | None:
    order_id = write.get("order_id") if isinstance(write, dict) else None
    return order_id if isinstance(order_id, str) and 0 < len(order_id) <= ORDER_ID_LENGTH else None


def _quarantine_oversized(storage: Storage, oversized: list[tuple[str, Any]]) -> IntakeReport:
    """Quarantine each write over ``MAX_WRITE_BYTES`` (its beginning, size and digest) in its
    order's shard database; counted as quarantined lines."""
    report = IntakeReport()
    now = utcnow()
    for line, write in oversized:
        order_id = _order_id(write)
        reason = (f"write refused: {len(line)} bytes as JSON, at most {MAX_WRITE_BYTES} are stored per write; "
                  f"only its beginning is kept here")
        kept = kept_text(line, len(line), hashlib.sha1(line.encode()).hexdigest())
        database = storage.database_of(order_id) if order_id else 0

        def work(kept: str = kept, reason: str = reason, order_id: str | None = order_id,
                 database: int = database) -> bool:
            with storage.shard_engine(database).begin() as connection:
                return quarantine(connection, INPUT_FORMAT, kept, BadInput(reason, order_id), now)
        retry_on_contention(work)
        report.lines += 1
        report.quarantined += 1
        report.reasons[reason] += 1
        report.outcomes.append(("quarantined", reason))
    return report
