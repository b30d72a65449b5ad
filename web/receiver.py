"""``POST /api/v1/business-writes``: business systems push writes over HTTP with a bearer token
of their own source, and learn what became of each one.

The body is a JSON list of ``{source, order_id, operation_type, unique_key, payload,
occurred_at}``.  Each item goes through the same intake as ``tdc ingest --format business`` and
the ``tdc.receive`` task, in one batch: one transaction per shard database, idempotent on
``unique_key``.  An item that cannot be read is quarantined with its reason and answered as
such; it never fails the others.  Only a body that is not a JSON list at all, a body over the
size caps, or a token that writes for another source refuses the whole request (nothing stored).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from flows.registry import ACCEPTED
from intake.receive_caps import receive_batch
from models.redis_store import get_redis
from models.storage import Storage

#: The fields of one write, as the OpenAPI description states them.
WRITE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["source", "order_id", "operation_type", "unique_key", "payload", "occurred_at"],
    "properties": {
        "source": {"type": "string", "description": "The writing system; must be the token's own source."},
        "order_id": {"type": "string"},
        "operation_type": {"type": "string", "description": "SUBMIT, PAY, SHIP, REFUND, CANCEL, ..."},
        "unique_key": {"type": "string", "description": "Idempotency key: the same key and content is a duplicate."},
        "payload": {"type": "object", "description": "The write's columns (the business source table's row)."},
        "occurred_at": {"type": "string", "description": "When it happened: ISO 8601 (an offset, or the "
                        "source time zone), or epoch milliseconds."},
    },
}


class Refused(Exception):
    """The whole request is refused: ``status`` and the reasons, nothing was stored."""

    def __init__(self, status: int, detail: str, reasons: list[str] | None = None) -> None:
        super().__init__(detail)
        self.status, self.detail, self.reasons = status, detail, reasons or []


@dataclass
class Receipt:
    results: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    submitted: int = 0

    def as_json(self) -> dict[str, Any]:
        return {"results": self.results, "counts": self.counts, "submitted": self.submitted}


def read_writes(body: bytes, source: str, max_writes: int, max_bytes: int) -> list[Any]:
    """The items of a request body; Refused when the body is over the caps, not a JSON list, or
    names another source than the token's."""
    if len(body) > max_bytes:
        raise Refused(413, f"the body is {len(body)} bytes; at most {max_bytes} are taken per request "
                           "(TDC_RECEIVE_MAX_BYTES): send the writes in smaller batches")
    try:
        items = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Refused(400, f"the body is not JSON: {error}") from None
    if not isinstance(items, list):
        raise Refused(422, f"the body is a JSON {type(items).__name__}; a list of writes is expected")
    if len(items) > max_writes:
        raise Refused(413, f"{len(items)} writes in one request; at most {max_writes} are taken "
                           "(TDC_RECEIVE_MAX_WRITES): send them in smaller batches")
    foreign = [f"item {i}: source {item['source']!r}" for i, item in enumerate(items)
               if isinstance(item, dict) and "source" in item and str(item["source"]) != source]
    if foreign:
        raise Refused(403, f"this token writes for source {source!r} only", foreign[:20])
    return items


def receive_writes(storage: Storage, items: list[Any]) -> Receipt:
    """Store ``items`` through intake and submit the chains; the verdict of each item, in order.

    The caps were checked on the body (``read_writes``); a single write too large to store is
    quarantined alone, as through the ``tdc.receive`` task (``intake.receive_caps``)."""
    from tasks.submit import submit_tasks

    received = receive_batch(storage, get_redis(), ACCEPTED, items, max_writes=len(items) or 1,
                             max_bytes=UNBOUNDED)
    receipt = Receipt()
    for index, (item, (verdict, reason)) in enumerate(zip(items, received.report.outcomes, strict=True)):
        entry: dict[str, Any] = {"index": index, "result": verdict}
        if isinstance(item, dict) and isinstance(item.get("unique_key"), str | int):
            entry["unique_key"] = str(item["unique_key"])
        if reason is not None:
            entry["reason"] = reason
        receipt.results.append(entry)
        receipt.counts[verdict] = receipt.counts.get(verdict, 0) + 1
    receipt.submitted = submit_tasks(received.report.touched)
    return receipt


#: The byte cap is the request body's (checked before parsing), not intake's JSON of the items.
UNBOUNDED = 2**62
