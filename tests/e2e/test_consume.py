"""``tdc consume`` feeding real worker and beat processes: Canal's RabbitMQ connector's queue and
a queue of business writes on the test's own virtual host, the consumer killed with SIGKILL
mid-stream and started again, and the wide rows and ADS tables exact."""

from pathlib import Path

import pytest

from demo.history import generate_history
from demo.processes import running, start_beat, start_worker
from tests.e2e.helpers import wait_until_matching, worker_env
from tests.integration.consume_helpers import (
    counts,
    finished,
    kill_after,
    lines_of,
    no_consumer_left,  # noqa: F401 - a fixture
    publish_canal,
    quarantined,
    ready,
    tdc_consume,
)

pytestmark = pytest.mark.e2e


def test_canal_from_rabbitmq_through_real_workers_survives_a_killed_consumer(
        fresh_storage, redis_client, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given 200 orders of Canal flat messages (and poison) in Canal's queue, payments in another,
    # and a worker and beat running on the same virtual host
    storage = fresh_storage("postgresql")
    history = generate_history(200, seed=88, input_format="canal")
    publish_canal(rabbitmq_vhost, lines_of(history, "canal"), lines_of(history, "business"))
    env = worker_env(storage, rabbitmq_vhost, tmp_path)
    name = f"e2e-rabbitmq-{history.run_id}"
    arguments = ("rabbitmq", "--url", rabbitmq_vhost, "--queue", "canal.gqsh", "--format", "canal", "--name", name,
                 "--batch", "50", "--idle-exit", "10")
    with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                  start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        # When the consumer is killed with SIGKILL part of the way, and started again
        kill_after(tdc_consume(env, *arguments), redis_client, name, 100)
        assert ready(rabbitmq_vhost, "canal.gqsh") > 0
        finished(tdc_consume(env, *arguments))
        paid = counts(finished(tdc_consume(env, "rabbitmq", "--url", rabbitmq_vhost, "--queue", "payments",
                                           "--format", "business", "--idle-exit", "10")))
        # Then the workers make every wide row and ADS cell exact
        problems = wait_until_matching(storage, history, 300)
    if problems:
        print((tmp_path / "worker.log").read_text()[-4000:])
    assert problems == []
    assert ready(rabbitmq_vhost, "canal.gqsh") == 0
    assert paid["acknowledged"] == len(lines_of(history, "business"))
    assert quarantined(storage, "message body is not UTF-8 text") == 1
