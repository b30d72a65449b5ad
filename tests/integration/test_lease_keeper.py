"""The leases of chain messages on the real Redis and RabbitMQ, in the orders real publishers and
workers produce: the queued lease is in place before the broker has the message, and nothing the
publisher or a worker does after a chain released its order holds the order again.

(A publisher that renewed after publishing raced the worker receiving the message: it stretched a
running step's lease to the queued half hour, so a worker killed then left the order to wait out
the queued lease behind a Redis broker's visibility timeout; or it brought back a lease the chain
had already released, and the order's next writes waited half an hour for the rescan.)"""

import time
from collections.abc import Iterator
from types import SimpleNamespace

import pytest
import redis
from celery import Celery
from celery._state import get_current_app
from celery.signals import after_task_publish, before_task_publish, task_postrun, task_received
from kombu import Connection
from kombu.exceptions import OperationalError

import models.redis_store
import tasks.lease_keeper
from reliability.leases import OrderLeases, lease_name
from settings import get_settings
from tests.conftest import REDIS, new_order_id

pytestmark = pytest.mark.integration

RUNNING_MS = 60_000


@pytest.fixture
def leases(redis_client, monkeypatch, tmp_path) -> Iterator[OrderLeases]:  # type: ignore[no-untyped-def]
    """The process settings (which the signal handlers read) on the test Redis."""
    monkeypatch.setenv("TDC_REDIS_URL", REDIS)
    monkeypatch.setenv("TDC_HOME", str(tmp_path))
    get_settings.cache_clear()
    models.redis_store._process_client = None
    yield OrderLeases(redis_client, get_settings())
    get_settings.cache_clear()
    models.redis_store._process_client = None


def _merge_message(order_id: str, token: int) -> tuple[list[object], dict[str, object], dict[str, object]]:
    """A `tdc.merge` body as Celery's protocol 2 carries it: ``(args, kwargs, embed)``."""
    return ([[{"order_id": order_id, "operation_type": "PAY", "token": token, "version": 1}]], {}, {})


def _publish_signals(body: object, signal: object) -> None:
    signal.send(sender="tdc.merge", body=body, exchange="", routing_key="tdc.process", headers={},  # type: ignore[attr-defined]
                properties={}, declare=[], retry_policy=None)


def _received(body: tuple[list[object], dict[str, object], dict[str, object]]) -> None:
    """What a worker does when it reserves the message."""
    request = SimpleNamespace(task_name="tdc.merge", args=body[0], kwargs=body[1])
    task_received.send(sender=None, request=request)


def test_a_worker_receiving_before_the_publisher_returns_keeps_the_running_lease(leases, redis_client) -> None:
    # Given a chain holding an order, publishing its next message
    order_id = new_order_id()
    token = leases.acquire([order_id])[order_id]
    body = _merge_message(order_id, token)
    _publish_signals(body, before_task_publish)
    # Then the queued lease is in place before the broker has the message
    assert redis_client.pttl(lease_name(order_id)) > RUNNING_MS
    # When a worker receives it before the publisher's own publish call has returned
    _received(body)
    _publish_signals(body, after_task_publish)
    # Then the order keeps the running lease of the worker that holds it: if that worker dies, the
    # order is taken over a lease later, not half an hour later
    assert 0 < redis_client.pttl(lease_name(order_id)) <= RUNNING_MS


def test_nothing_after_a_chain_released_its_order_holds_it_again(leases, redis_client) -> None:
    # Given a chain whose next message a worker received, ran to the end and released, all before
    # the publisher's publish call returned
    order_id = new_order_id()
    token = leases.acquire([order_id])[order_id]
    body = _merge_message(order_id, token)
    _publish_signals(body, before_task_publish)
    _received(body)
    leases.release({order_id: token})
    # When the publisher returns and the worker's consumer renews the messages it still holds
    _publish_signals(body, after_task_publish)
    tasks.lease_keeper.renew([SimpleNamespace(task_name="tdc.merge", args=body[0], kwargs=body[1])])
    # Then the order stays free: the next writes for it get a chain at once
    assert redis_client.exists(lease_name(order_id)) == 0
    assert order_id in leases.acquire([order_id])


def test_a_published_message_waits_under_the_queued_lease(leases, redis_client, rabbitmq_vhost) -> None:
    # Given a chain message published through Celery to a real RabbitMQ
    order_id = new_order_id()
    token = leases.acquire([order_id])[order_id]
    app = Celery("publisher", broker=rabbitmq_vhost, set_as_current=False)
    app.conf.task_serializer = "json"
    app.signature("tdc.merge", args=_merge_message(order_id, token)[0], queue="tdc.process").apply_async()
    task_postrun.send(sender=None)
    # When a consumer can fetch it
    with Connection(rabbitmq_vhost) as connection:
        message = connection.SimpleQueue("tdc.process").get(timeout=10)
        assert message.headers["task"] == "tdc.merge"
        message.ack()
    # Then the order holds the queued lease while it waits there
    assert redis_client.pttl(lease_name(order_id)) > RUNNING_MS


def test_a_message_the_broker_refused_leaves_the_running_lease(leases, redis_client) -> None:
    # Given a step publishing its next message to a broker that is down
    order_id = new_order_id()
    token = leases.acquire([order_id])[order_id]
    app = Celery("publisher", broker="amqp://guest:guest@127.0.0.1:1//", set_as_current=False)
    app.conf.broker_connection_timeout = 1
    with pytest.raises(OperationalError):
        app.signature("tdc.merge", args=_merge_message(order_id, token)[0]).apply_async(retry=False)
    # When the step ends
    task_postrun.send(sender=None)
    # Then its order is back on the running lease: the rescan takes it over a lease from now
    assert 0 < redis_client.pttl(lease_name(order_id)) <= RUNNING_MS


def test_a_lease_queued_for_nobody_is_dropped_and_no_other(leases, redis_client) -> None:
    # Given an order whose lease was queued 0.3 s ago, one queued just now and one running
    stale, fresh, running = new_order_id(), new_order_id(), new_order_id()
    tokens = leases.acquire([stale, fresh, running])
    leases.renew({stale: tokens[stale]}, queued=True)
    time.sleep(0.3)
    leases.renew({fresh: tokens[fresh]}, queued=True)
    # When the rescan drops the leases queued 0.2 s or more before now
    dropped = leases.drop_stale_queued([stale, fresh, running], leases.clock_ms() - 200)
    # Then only the stale one is free; a lease a worker has received again is never dropped
    assert dropped == {stale}
    assert set(leases.acquire([stale, fresh, running])) == {stale}
    leases.renew({fresh: tokens[fresh]})
    time.sleep(0.3)
    assert leases.drop_stale_queued([fresh], leases.clock_ms() - 200) == set()


@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_the_chain_queues_are_empty_only_when_no_chain_message_waits(broker: str, request, redis_client) -> None:
    from tasks.scheduled import chain_queues_empty

    # Given a Celery app routing chain steps as tdc does, on a real broker of its own
    url = request.getfixturevalue("rabbitmq_vhost") if broker == "rabbitmq" else f"{REDIS.rsplit('/', 1)[0]}/13"
    if broker == "redis":
        redis.Redis.from_url(url).flushdb()
    app = Celery("tdc-test", broker=url, set_as_current=False)
    app.conf.task_serializer = "json"
    app.conf.task_routes = {"tdc.check": {"queue": "tdc.process"}, "tdc.merge": {"queue": "tdc.process"},
                            "tdc.aggregate": {"queue": "tdc.warehouse"}, "tdc.finish": {"queue": "tdc.process"}}
    app.conf.task_default_queue = "tdc.process"
    with app.connection_for_write() as connection:
        for name in ("tdc.process", "tdc.warehouse"):
            connection.default_channel.queue_declare(queue=name, durable=True, auto_delete=False)
    previous = get_current_app()
    app.set_current()
    try:
        # Then they are empty, and not once an aggregate message waits in the warehouse queue
        assert chain_queues_empty()
        app.signature("tdc.aggregate", args=[[]]).apply_async()
        assert not chain_queues_empty()
    finally:
        previous.set_current()
