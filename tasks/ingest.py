"""The Receiver as a task: business systems send ``tdc.receive`` by name.

Whoever can publish to the broker can send it, so the broker's permissions are the boundary
(README, "Business writes through the broker"), and each batch is capped
(``intake.receive_caps``)."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from flows.registry import ACCEPTED
from intake.receive_caps import receive_batch
from models.redis_store import get_redis
from models.storage import get_storage
from settings import get_settings
from tasks.policy import retrying
from tasks.submit import submit_tasks


@shared_task(name="tdc.receive", **retrying())
def receive(writes: list[dict[str, Any]]) -> dict[str, int]:
    """Accept business writes ``{source, order_id, operation_type, unique_key, payload,
    occurred_at}``; bad ones are quarantined, and a batch over ``TDC_RECEIVE_MAX_WRITES`` writes
    or ``TDC_RECEIVE_MAX_BYTES`` bytes is refused whole (its beginning quarantined, an alarm
    raised).  Returns the counts, ``refused`` being the writes of a refused batch."""
    settings = get_settings()
    received = receive_batch(get_storage(), get_redis(), ACCEPTED, writes, settings.receive_max_writes,
                             settings.receive_max_bytes)
    submit_tasks(received.report.touched)
    return received.counts()
