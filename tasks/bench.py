"""The empty task ``tdc bench throughput`` measures Celery's own delivery rate with: its body is
one Redis INCR, so the bench can tell when every one has run."""

from __future__ import annotations

from celery import shared_task

from models.redis_store import get_redis


@shared_task(name="tdc.bench_noop", acks_late=True)
def noop(counter: str) -> None:
    get_redis().incr(counter)
