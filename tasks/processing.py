"""The chain of one batch of tasks: check -> merge -> aggregate -> finish."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from chain.steps import aggregate_orders, check_tasks, finish_tasks, merge_orders, valid_keys
from dimensions.lookup import RedisDimensions
from models.redis_store import get_redis
from models.storage import get_storage
from reliability.leases import OrderLeases
from settings import get_settings
from tasks.indexing import after_chain
from tasks.policy import ChainStep, retrying
from tasks.submit import submit_tasks

Keys = list[dict[str, Any]]


def _leases() -> OrderLeases:
    return OrderLeases(get_redis(), get_settings())


@shared_task(name="tdc.check", base=ChainStep, **retrying())
def check(keys: Keys) -> Keys:
    ready, again = check_tasks(get_storage(), _leases(), get_settings(), valid_keys(keys, get_redis()))
    submit_tasks(again)
    return ready


@shared_task(name="tdc.merge", base=ChainStep, **retrying())
def merge(keys: Keys) -> Keys:
    client = get_redis()
    return merge_orders(get_storage(), _leases(), get_settings(), RedisDimensions(client), valid_keys(keys, client))


@shared_task(name="tdc.aggregate", base=ChainStep, **retrying())
def aggregate(keys: Keys) -> Keys:
    return aggregate_orders(get_storage(), _leases(), get_settings(), valid_keys(keys, get_redis()))


@shared_task(name="tdc.finish", base=ChainStep, **retrying())
def finish(keys: Keys) -> int:
    valid = valid_keys(keys, get_redis())
    submitted = submit_tasks(finish_tasks(get_storage(), _leases(), valid))
    after_chain([key["order_id"] for key in valid])
    return submitted
