"""The demo's embedded set-up, shared by ``tdc demo`` (``demo.run``) and ``tdc demo --flow``
(``demo.flow_run``): the demo's settings, the embedded Redis, the storage, and the worker and
beat processes that drain what the demo feeds. The one place that starts and stops them."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager

from demo.processes import running, start_beat, start_worker
from settings import Settings, get_settings

#: Demo defaults: short back-off and frequent rescans so a 300-order run drains in seconds.
DEMO_ENVIRONMENT = {"TDC_RETRY_BASE_SECONDS": "0.5", "TDC_RESCAN_INTERVAL_SECONDS": "3"}


def demo_settings() -> Settings:
    """The settings with the demo's defaults for what the environment leaves unset."""
    for name, value in DEMO_ENVIRONMENT.items():
        os.environ.setdefault(name, value)
    get_settings.cache_clear()
    return get_settings()


class DemoSession:
    """The embedded Redis and the storage are ready; ``workers`` runs the pipeline's processes."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @contextmanager
    def workers(self, concurrency: int) -> Iterator[list[subprocess.Popen[bytes]]]:
        """A worker and beat, logging under TDC_HOME/logs, stopped (nothing left) on leaving."""
        logs = self.settings.home / "logs"
        env = dict(os.environ)
        with running([start_worker(env, logs / "worker.log", concurrency),
                      start_beat(env, logs / "beat.log", self.settings.home / "demo-beat-schedule")]) as processes:
            yield processes


@contextmanager
def demo_session(settings: Settings, title: str) -> Iterator[DemoSession]:
    """Start the embedded Redis (when configured and not already up), create the storage, and
    configure the Celery app; the Redis this started is stopped on leaving.

    Prints ``tdc demo: {title}, home ...`` and the storage's readiness. Raises RuntimeError when
    the embedded Redis does not come up.
    """
    from models.embedded import ensure_embedded_redis, stop_embedded_redis
    from models.schema import init_storage
    from models.storage import get_storage

    started_redis = ensure_embedded_redis(settings) if settings.embedded_redis else False
    try:
        began = time.monotonic()
        print(f"tdc demo: {title}, home {settings.home}")
        report = init_storage(get_storage())
        print(f"  storage ready in {time.monotonic() - began:.1f}s ({report.created} tables created)")
        import worker  # noqa: F401 - configures the Celery app before chains are sent

        yield DemoSession(settings)
    finally:
        if started_redis:
            stop_embedded_redis(settings)
