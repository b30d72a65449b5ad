"""The composition root: every task routed to a declared queue, JSON only, late acks."""

import json
import os
import subprocess
import sys

PROBE = """
import json, worker
app = worker.app
app.loader.import_default_modules()
conf = app.conf
print(json.dumps({
    "queues": sorted(q.name for q in conf.task_queues),
    "routes": conf.task_routes,
    "tasks": sorted(name for name in app.tasks if name.startswith("tdc.")),
    "serializer": conf.task_serializer, "accept": list(conf.accept_content),
    "acks_late": conf.task_acks_late, "reject_on_lost": conf.task_reject_on_worker_lost,
    "prefetch": conf.worker_prefetch_multiplier, "beat": sorted(v["task"] for v in conf.beat_schedule.values()),
    "soft": conf.task_soft_time_limit, "hard": conf.task_time_limit,
    "visibility": conf.broker_transport_options["visibility_timeout"],
}))
"""


def _config(tmp_path) -> dict:  # type: ignore[no-untyped-def]
    # A Redis URL that is never dialled: importing the app must not need the servers.
    env = {**os.environ, "TDC_REDIS_URL": "redis://127.0.0.1:1/0", "TDC_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_every_task_is_routed_to_a_declared_queue_and_json_only(tmp_path) -> None:
    config = _config(tmp_path)
    assert config["queues"] == ["tdc.index", "tdc.ingest", "tdc.process", "tdc.scheduled", "tdc.warehouse"]
    assert set(config["tasks"]) == set(config["routes"])
    assert {route["queue"] for route in config["routes"].values()} <= set(config["queues"])
    assert (config["serializer"], config["accept"]) == ("json", ["json"])
    assert (config["acks_late"], config["reject_on_lost"], config["prefetch"]) == (True, True, 1)
    assert set(config["beat"]) <= set(config["tasks"])


def test_a_message_is_never_redelivered_while_legitimately_held_and_never_waits_an_hour(tmp_path) -> None:
    # A prefetched message waits up to one step and runs up to another before it is acknowledged:
    # the Redis visibility timeout must exceed both, and stay well under RabbitMQ's default
    # consumer_timeout (30 min) and the hour-long lock ceiling it used to equal.
    config = _config(tmp_path)
    assert config["soft"] < config["hard"]
    assert 2 * config["hard"] < config["visibility"] <= 600


THREAD_PROBE = """
import json, threading, worker
from celery import current_app
seen = {}
thread = threading.Thread(target=lambda: seen.update(broker=current_app.conf.broker_url, main=current_app.main))
thread.start(); thread.join()
print(json.dumps(seen))
"""


def test_a_thread_of_the_process_sends_through_the_configured_app(tmp_path) -> None:
    # A web server runs handlers in a thread pool; chains they submit must use tdc's broker.
    env = {**os.environ, "TDC_REDIS_URL": "redis://127.0.0.1:1/0", "TDC_BROKER_URL": "amqp://u:p@broker.test:5672/v",
           "TDC_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", THREAD_PROBE], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {"broker": "amqp://u:p@broker.test:5672/v", "main": "tdc"}
