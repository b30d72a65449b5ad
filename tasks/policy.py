"""The retry policy every tdc task declares, and what a chain step does when it runs out."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from reliability.transient import TRANSIENT_ERRORS
from settings import get_settings

log = logging.getLogger(__name__)

#: Celery-side retries of one step before its tasks count a failed attempt.
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


class ChainStep(Task):
    """A step of the per-order chain.  When it fails for good (retries exhausted, or an error
    that is not retried), each of its tasks counts one failed attempt, ending in the
    failed-task table after the last, and its orders' leases are released at once.  If even
    that cannot reach the database, the leases lapse and the rescan takes the tasks over."""

    def on_failure(self, exc: BaseException, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        from chain.steps import give_up
        from models.redis_store import get_redis
        from models.storage import get_storage
        from reliability.leases import OrderLeases

        keys = kwargs.get("keys") if isinstance(kwargs, dict) else None
        if keys is None and args:
            keys = args[0]
        settings = get_settings()
        reason = f"{self.name} gave up: {type(exc).__name__}: {exc}"
        try:
            give_up(get_storage(), OrderLeases(get_redis(), settings), settings, keys or [], reason)
        except Exception:  # noqa: BLE001 - the lease and the rescan are the fallback
            log.exception("could not record the failure of %s; the rescan will retry its tasks", self.name)
