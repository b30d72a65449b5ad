"""The retry policy every tdc task declares: named transient faults only, exponential back-off."""

from __future__ import annotations

from typing import Any

from pipeline.transient import TRANSIENT_ERRORS
from settings import get_settings

#: Celery-side retries of one step before the task's lease and the rescan take over.
STEP_RETRIES = 8


def retrying() -> dict[str, Any]:
    """Decorator options: retry TRANSIENT_ERRORS with jittered back-off from TDC_RETRY_BASE_SECONDS."""
    base = get_settings().retry_base_seconds
    return dict(
        autoretry_for=TRANSIENT_ERRORS,
        retry_backoff=max(1, round(base)),  # Celery needs whole seconds here
        retry_backoff_max=600,
        retry_jitter=True,
        max_retries=STEP_RETRIES,
    )
