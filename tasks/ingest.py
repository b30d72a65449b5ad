"""The Receiver as a task: business systems send ``tdc.receive`` by name."""

from __future__ import annotations

import json
from typing import Any

from celery import shared_task

from flows.registry import ACCEPTED
from intake.receiver import accept_lines
from models.redis_store import get_redis
from models.storage import get_storage
from tasks.policy import retrying
from tasks.submit import submit_tasks


@shared_task(name="tdc.receive", **retrying())
def receive(writes: list[dict[str, Any]]) -> dict[str, int]:
    """Accept business writes ``{source, order_id, operation_type, unique_key, payload,
    occurred_at}``; bad ones are quarantined.  Returns the counts."""
    report = accept_lines(get_storage(), get_redis(), ACCEPTED, "business", [json.dumps(w) for w in writes])
    submit_tasks(report.touched)
    return {"accepted": report.accepted, "duplicated": report.duplicated, "stale": report.stale,
            "ambiguous": report.ambiguous, "quarantined": report.quarantined, "ignored": report.ignored}
