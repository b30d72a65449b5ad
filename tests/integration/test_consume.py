"""``tdc consume`` on real brokers: Canal flat messages from RabbitMQ, Debezium Server's Redis
sink (compact and extended entries) and its NATS JetStream sink.  A generated history is
published before the consumer first starts (a backlog), taken in by ``tdc consume ...
--idle-exit 10`` as a process, its chains run in-process, and every wide row and ADS cell must
be exact; again with the consumer killed with SIGKILL mid-stream and started again.  Poison
messages are quarantined and acknowledged; nothing is left unacknowledged."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import amqp
import pytest
import redis
from kombu import Connection

from demo.history import generate_history
from flows.registry import ACCEPTED as ORDER_FLOW
from streams.consume.figures import CONSUMER_FIGURES
from tests.conftest import REDIS, env_of
from tests.integration.consume_helpers import (
    POISON,
    counts,
    debezium_destination,
    debezium_key,
    finished,
    kill_after,
    lines_of,
    no_consumer_left,  # noqa: F401 - a fixture
    problems,
    publish_canal,
    quarantined,
    ready,
    run_chains_to_rest,
    tdc_consume,
    wait_for_messages,
)
from tests.integration.helpers import ingest

pytestmark = pytest.mark.integration

NATS = os.environ.get("TDC_TEST_NATS", "nats://127.0.0.1:4222")
# --- RabbitMQ: Canal's RabbitMQ connector -------------------------------------------------------

@pytest.mark.parametrize("killed", [False, True], ids=["straight", "killed-and-restarted"])
def test_canal_from_rabbitmq_makes_exact_rows(fresh_storage, redis_client, rabbitmq_vhost, killed: bool) -> None:
    # Given a history of Canal flat messages (and poison) waiting in Canal's queue, payments in another
    storage = fresh_storage()
    history = generate_history(250 if killed else 120, seed=81 if killed else 80, input_format="canal")
    publish_canal(rabbitmq_vhost, lines_of(history, "canal"), lines_of(history, "business"))
    # (its chains go to the test's virtual host, where no worker reads; they run in-process below)
    env = {**env_of(storage), "TDC_BROKER_URL": rabbitmq_vhost}
    name = f"rabbitmq-{history.run_id}"
    arguments = ("rabbitmq", "--url", rabbitmq_vhost, "--queue", "canal.gqsh", "--format", "canal", "--name", name,
                 "--batch", "50", "--idle-exit", "10")
    # When tdc consume takes them in (killed with SIGKILL part of the way, and started again)
    if killed:
        taken = kill_after(tdc_consume(env, *arguments), redis_client, name, 100)
        assert 0 < taken and ready(rabbitmq_vhost, "canal.gqsh") > 0
    finished(tdc_consume(env, *arguments))
    paid = counts(finished(tdc_consume(env, "rabbitmq", "--url", rabbitmq_vhost, "--queue", "payments", "--format",
                                       "business", "--idle-exit", "10")))
    run_chains_to_rest(storage, redis_client, history)
    # Then every message was acknowledged, the poison quarantined with its reason, and every
    # wide row and ADS cell is exact
    assert ready(rabbitmq_vhost, "canal.gqsh") == 0 and ready(rabbitmq_vhost, "payments") == 0
    assert paid["acknowledged"] == len(lines_of(history, "business"))
    assert quarantined(storage, "message body is not UTF-8 text") == 1
    assert quarantined(storage, "message body is empty") == 1
    assert problems(storage, history) == []


def _close_connections(vhost_url: str) -> int:
    """Close every client connection to the test's virtual host (only its own), as a broker
    restart or a network fault would; how many were closed."""
    vhost = urlsplit(vhost_url).path[1:]
    listed = subprocess.run(["rabbitmqctl", "-q", "list_connections", "pid", "vhost"], capture_output=True,
                            text=True, timeout=60, check=True).stdout
    pids = [line.rsplit("\t", 1)[0] for line in listed.splitlines() if line.endswith(f"\t{vhost}")]
    closed = 0
    for pid in pids:  # (one may have ended meanwhile: a chain publisher's)
        closed += subprocess.run(["rabbitmqctl", "-q", "close_connection", pid, "tdc test: connection lost"],
                                 capture_output=True, timeout=60).returncode == 0
    return closed


def test_a_lost_connection_is_retried_and_sigterm_ends_after_the_batch_in_hand(
        fresh_storage, redis_client, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given Canal's queue holding a history, and a consumer taking it in
    storage = fresh_storage()
    history = generate_history(250, seed=89, input_format="canal")
    publish_canal(rabbitmq_vhost, lines_of(history, "canal"), lines_of(history, "business"))
    env = {**env_of(storage), "TDC_BROKER_URL": rabbitmq_vhost}
    name = f"rabbitmq-{history.run_id}"
    arguments = ("rabbitmq", "--url", rabbitmq_vhost, "--queue", "canal.gqsh", "--format", "canal", "--name", name,
                 "--batch", "50")
    log = tmp_path / "consumer.log"
    consumer = tdc_consume(env, *arguments, stderr=log)
    # When the broker drops its connection part of the way
    wait_for_messages(consumer, redis_client, name, 100)
    assert _close_connections(rabbitmq_vhost) >= 1
    # Then it connects again and carries on; and SIGTERM later lets it finish its batch and exit 0
    deadline = time.monotonic() + 60
    while "connected again" not in log.read_text():
        assert time.monotonic() < deadline and consumer.poll() is None, log.read_text()[-3000:]
        time.sleep(0.05)
    before = int(redis_client.hget(CONSUMER_FIGURES, f"messages:{name}"))
    consumer.send_signal(signal.SIGTERM)
    out, _ = consumer.communicate(timeout=120)
    err = log.read_text()
    assert consumer.returncode == 0, err[-3000:]
    assert "connecting again in" in err and "connected again" in err, err[-3000:]
    acknowledged = counts(out)["acknowledged"]
    assert "messages acknowledged (stopped)" in out and acknowledged >= before
    assert int(redis_client.hget(CONSUMER_FIGURES, f"messages:{name}")) == acknowledged
    # And what it left is taken in by the next run: every row exact
    finished(tdc_consume(env, *arguments, "--idle-exit", "10"))
    finished(tdc_consume(env, "rabbitmq", "--url", rabbitmq_vhost, "--queue", "payments", "--format", "business",
                         "--idle-exit", "10"))
    run_chains_to_rest(storage, redis_client, history)
    assert ready(rabbitmq_vhost, "canal.gqsh") == 0
    assert problems(storage, history) == []


def test_a_queue_that_does_not_exist_is_refused_not_created(rabbitmq_vhost, storage) -> None:
    process = tdc_consume({**env_of(storage), "TDC_BROKER_URL": rabbitmq_vhost}, "rabbitmq", "--url", rabbitmq_vhost,
                          "--queue", "canal.typo", "--format", "canal", "--idle-exit", "1")
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2 and "queue 'canal.typo' does not exist" in err, err[-2000:]
    with Connection(rabbitmq_vhost) as connection, pytest.raises(amqp.exceptions.NotFound):
        connection.channel().queue_declare("canal.typo", passive=True)


# --- Redis Streams: Debezium Server's Redis sink ------------------------------------------------

@pytest.fixture
def debezium_prefix(redis_client) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A ``topic.prefix`` of the test's own; its streams are deleted afterwards."""
    prefix = f"tdc-test-{uuid.uuid4().hex[:8]}"
    yield prefix
    for key in redis_client.scan_iter(f"{prefix}.*"):
        redis_client.delete(key)


def _xadd_debezium(client: redis.Redis, prefix: str, lines: list[str], shape: str) -> list[str]:
    """What the Redis sink does (debezium/debezium-server, RedisStreamChangeConsumer.handleBatch):
    XADD each event to the stream named by its destination, as a compact entry (one field: key ->
    value) or an extended one (fields key and value); a null value is the ``null.value``
    placeholder ``default``.  Lines that are no change event go to the order table's stream.  A
    tombstone, a value that is not UTF-8 and an entry of neither shape are added.  The streams."""
    orders = f"{prefix}.gqsh.gqsh_order"
    pipe = client.pipeline(transaction=False)
    entries: list[tuple[str, str | bytes, str | bytes]] = []
    for line in lines:
        destination = debezium_destination(line, prefix)
        entries.append((destination or orders, debezium_key(line) if destination else "default", line))
    entries.insert(len(entries) // 2, (orders, '{"order_id":"D-tombstone"}', "default"))
    entries.insert(len(entries) // 3, (orders, '{"order_id":"D-poison"}', POISON[0]))
    for stream, key, value in entries:
        pipe.xadd(stream, {key: value} if shape == "compact" else {"key": key, "value": value, "TRACEPARENT": "x"})
    pipe.xadd(orders, {"id": "1", "op": "c", "table": "gqsh_order"})  # neither shape
    pipe.execute()
    return sorted({stream for stream, _, _ in entries})


def _streams(streams: list[str]) -> list[str]:
    return [argument for stream in streams for argument in ("--stream", stream)]


def test_debezium_compact_entries_from_redis_streams_make_exact_rows(fresh_storage, redis_client, rabbitmq_vhost,
                                                                     debezium_prefix: str) -> None:
    # Given a history's Debezium events in the sink's streams, one per table, before any group exists
    storage = fresh_storage()
    history = generate_history(120, seed=82, input_format="debezium")
    streams = _xadd_debezium(redis_client, debezium_prefix, lines_of(history, "debezium"), "compact")
    env = {**env_of(storage), "TDC_BROKER_URL": rabbitmq_vhost}
    name = f"redis-{history.run_id}"
    # When tdc consume reads them through a group it creates
    out = finished(tdc_consume(env, "redis", "--url", REDIS, *_streams(streams), "--group", "tdc", "--format",
                               "debezium", "--name", name, "--batch", "100", "--idle-exit", "10"))
    ingest(storage, redis_client, ORDER_FLOW, "business", lines_of(history, "business"))
    run_chains_to_rest(storage, redis_client, history)
    # Then the group started at the streams' beginning: every entry was taken in and acknowledged
    total = len(lines_of(history, "debezium")) + 3
    assert counts(out)["acknowledged"] == total
    for stream in streams:
        assert redis_client.xpending(stream, "tdc")["pending"] == 0
        assert redis_client.xinfo_groups(stream)[0]["lag"] == 0
    assert quarantined(storage, "not a Debezium Server Redis entry") == 1
    assert quarantined(storage, "message body is not UTF-8 text") == 1
    assert problems(storage, history) == []
    # And /metrics shows what it took in and that nothing waits
    from web.metrics import render_metrics

    body = render_metrics(storage, redis_client, app=object())[0].decode()
    assert f'tdc_consumer_messages_total{{consumer="{name}"}} {float(total)}' in body
    assert f'tdc_consumer_lag{{consumer="{name}"}} 0.0' in body


def test_debezium_extended_entries_after_a_kill_are_claimed_and_the_rows_exact(
        fresh_storage, redis_client, rabbitmq_vhost, debezium_prefix: str) -> None:
    # Given extended entries, and a consumer of the group that died holding 30 of them
    storage = fresh_storage()
    history = generate_history(250, seed=83, input_format="debezium")
    streams = _xadd_debezium(redis_client, debezium_prefix, lines_of(history, "debezium"), "extended")
    for stream in streams:
        redis_client.xgroup_create(stream, "tdc", id="0")
    held = redis_client.xreadgroup("tdc", "dead", {streams[0]: ">"}, count=30)
    assert len(held[0][1]) == 30
    env = {**env_of(storage), "TDC_BROKER_URL": rabbitmq_vhost}
    name = f"redis-{history.run_id}"
    arguments = ("redis", "--url", REDIS, *_streams(streams), "--group", "tdc", "--format", "debezium", "--name", name,
                 "--batch", "50", "--claim-idle", "2", "--idle-exit", "10")
    # When a consumer is killed with SIGKILL part of the way, and another takes over
    taken = kill_after(tdc_consume(env, *arguments, "--consumer", "a"), redis_client, name, 100)
    assert taken < len(lines_of(history, "debezium"))
    finished(tdc_consume(env, *arguments, "--consumer", "b"))
    ingest(storage, redis_client, ORDER_FLOW, "business", lines_of(history, "business"))
    run_chains_to_rest(storage, redis_client, history)
    # Then what the dead consumers held was claimed: nothing is pending, nothing is left
    for stream in streams:
        assert redis_client.xpending(stream, "tdc")["pending"] == 0, stream
        assert redis_client.xinfo_groups(stream)[0]["lag"] == 0, stream
    assert quarantined(storage, "not a Debezium Server Redis entry") == 1
    assert problems(storage, history) == []


def test_a_redis_restart_mid_stream_is_ridden_out(fresh_storage, redis_client, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given the sink's streams on a Redis server of the test's own (fsync'ed append-only file)
    from tests.e2e.helpers import PrivateRedis

    storage = fresh_storage()
    history = generate_history(250, seed=90, input_format="debezium")
    with PrivateRedis(tmp_path / "redis") as server:
        broker = redis.Redis.from_url(server.url)
        streams = _xadd_debezium(broker, "gqsh-source", lines_of(history, "debezium"), "compact")
        env = {**env_of(storage), "TDC_BROKER_URL": rabbitmq_vhost}
        name = f"redis-{history.run_id}"
        log = tmp_path / "consumer.log"
        consumer = tdc_consume(env, "redis", "--url", server.url, *_streams(streams), "--group", "tdc", "--format",
                               "debezium", "--name", name, "--batch", "50", "--idle-exit", "10", stderr=log)
        # When the server stops part of the way and comes back three seconds later
        wait_for_messages(consumer, redis_client, name, 100)
        server.stop()
        time.sleep(3)
        server.start()
        # Then the consumer logs the loss, connects again, and finishes: nothing pending, rows exact
        out = finished(consumer)
        # (lost while fetching, or while acknowledging: both connect again after a pause)
        assert "connecting again in" in log.read_text() and "connected again" in log.read_text(), log.read_text()
        for stream in streams:
            assert broker.xpending(stream, "tdc")["pending"] == 0, stream
            assert broker.xinfo_groups(stream)[0]["lag"] == 0, stream
        broker.close()
    assert "messages acknowledged (idle)" in out
    ingest(storage, redis_client, ORDER_FLOW, "business", lines_of(history, "business"))
    run_chains_to_rest(storage, redis_client, history)
    assert problems(storage, history) == []


def test_a_redis_batch_holds_at_most_batch_entries_over_several_streams_and_a_restart_rereads_them_once(
        redis_client, debezium_prefix: str) -> None:
    from streams.consume.redis_streams import RedisStreamSource

    # Given three streams of 30 entries each
    streams = [f"{debezium_prefix}.gqsh.t{n}" for n in range(3)]
    for stream in streams:
        for n in range(30):
            redis_client.xadd(stream, {f'{{"id":{n}}}': f'{{"n":{n}}}'})
    source = RedisStreamSource(REDIS, streams, "tdc", "one", "test")
    source.connect()
    # When they are read in batches of 20, none acknowledged
    first = [source.fetch(20, 0.1) for _ in range(6)]
    # Then no batch is over 20, and every entry came once
    assert [len(batch) for batch in first] == [20, 20, 20, 20, 10, 0]
    assert len({m.handle for batch in first for m in batch}) == 90
    # And a restart under the same name reads all 90 again from its pending list, once each
    source.connect()
    again = []
    while batch := source.fetch(20, 0.1):
        assert len(batch) <= 20
        source.ack(batch)
        again.append(batch)
    assert {m.handle for batch in again for m in batch} == {m.handle for batch in first for m in batch}
    assert sum(len(batch) for batch in again) == 90
    assert all(redis_client.xpending(stream, "tdc")["pending"] == 0 for stream in streams)
    source.close()


# --- NATS JetStream: Debezium Server's NATS JetStream sink --------------------------------------

@pytest.fixture
def jetstream() -> Iterator[str]:
    """A JetStream stream of the test's own on subjects ``<name>.>``, deleted afterwards; its name."""
    import nats

    from tests.conftest import require

    name = f"tdc-test-{uuid.uuid4().hex[:8]}"

    async def add() -> None:
        connection = await nats.connect(NATS, connect_timeout=3, max_reconnect_attempts=0)
        await connection.jetstream().add_stream(name=name, subjects=[f"{name}.>"])
        await connection.close()

    require("NATS JetStream", lambda: asyncio.run(add()))
    yield name

    async def delete() -> None:
        connection = await nats.connect(NATS)
        await connection.jetstream().delete_stream(name)
        await connection.close()

    asyncio.run(delete())


def _publish_debezium_nats(prefix: str, lines: list[str], url: str = NATS) -> None:
    """What the NATS JetStream sink does (debezium/debezium-server, NatsJetStreamChangeConsumer
    .handleBatch): publish each event's value to the subject named by its destination (records
    without a value are not sent).  Lines that are no change event, and poison, go to the order
    table's subject."""
    import nats

    async def publish() -> None:
        connection = await nats.connect(url)
        jetstream = connection.jetstream()
        orders = f"{prefix}.gqsh.gqsh_order"
        payloads = [(debezium_destination(line, prefix) or orders, line.encode()) for line in lines]
        payloads.insert(len(payloads) // 3, (orders, POISON[0]))
        for subject, payload in payloads:
            await jetstream.publish(subject, payload)
        await connection.close()

    asyncio.run(publish())


def _consumer_state(stream: str, durable: str, url: str = NATS) -> tuple[int, int]:
    import nats

    async def state() -> tuple[int, int]:
        connection = await nats.connect(url)
        info = await connection.jetstream().consumer_info(stream, durable)
        await connection.close()
        return int(info.num_pending or 0), int(info.num_ack_pending or 0)

    return asyncio.run(state())


@pytest.mark.parametrize("killed", [False, True], ids=["straight", "killed-and-restarted"])
def test_debezium_from_nats_jetstream_makes_exact_rows(fresh_storage, redis_client, rabbitmq_vhost, jetstream: str,
                                                       killed: bool) -> None:
    # Given a history's Debezium events in a JetStream stream before any consumer exists
    storage = fresh_storage()
    history = generate_history(250 if killed else 120, seed=85 if killed else 84, input_format="debezium")
    _publish_debezium_nats(jetstream, lines_of(history, "debezium"))
    env = {**env_of(storage), "TDC_BROKER_URL": rabbitmq_vhost}
    name = f"nats-{history.run_id}"
    arguments = ("nats", "--url", NATS, "--stream", jetstream, "--subject", f"{jetstream}.gqsh.*", "--durable",
                 "tdc", "--format", "debezium", "--name", name, "--batch", "50", "--ack-wait", "3",
                 "--idle-exit", "10")
    # When a new durable consumer takes them in (killed with SIGKILL part of the way, and started again)
    if killed:
        taken = kill_after(tdc_consume(env, *arguments), redis_client, name, 100)
        assert taken < len(lines_of(history, "debezium"))
    finished(tdc_consume(env, *arguments))
    ingest(storage, redis_client, ORDER_FLOW, "business", lines_of(history, "business"))
    run_chains_to_rest(storage, redis_client, history)
    # Then it delivered everything the stream held, all acknowledged, poison quarantined, rows exact
    assert _consumer_state(jetstream, "tdc") == (0, 0)
    assert quarantined(storage, "message body is not UTF-8 text") == 1
    assert problems(storage, history) == []


class PrivateNats:
    """A nats-server with JetStream of the test's own on a free port, its store in ``directory``,
    so stopping it disturbs no other test."""

    def __init__(self, directory: Path):
        from demo.processes import free_port

        self.directory, self.port = directory, free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("nats-server")
        if binary is None:  # a missing service skips locally and fails in CI, as conftest's do
            (pytest.fail if os.environ.get("CI") else pytest.skip)("nats-server is not installed")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen([binary, "-js", "-sd", str(self.directory), "-a", "127.0.0.1", "-p",
                                         str(self.port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                        start_new_session=True)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                assert time.monotonic() < deadline, "nats-server did not start"
                time.sleep(0.1)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)


def test_a_nats_restart_mid_stream_is_ridden_out(fresh_storage, redis_client, rabbitmq_vhost, tmp_path: Path) -> None:
    # Given a JetStream stream on a nats-server of the test's own, its store on disk
    import nats

    storage = fresh_storage()
    history = generate_history(250, seed=91, input_format="debezium")
    server = PrivateNats(tmp_path / "nats")
    server.start()
    try:
        async def add() -> None:
            connection = await nats.connect(server.url)
            await connection.jetstream().add_stream(name="DebeziumStream", subjects=["gqsh-source.>"],
                                                    storage="file")
            await connection.close()

        asyncio.run(add())
        _publish_debezium_nats("gqsh-source", lines_of(history, "debezium"), server.url)
        env = {**env_of(storage), "TDC_BROKER_URL": rabbitmq_vhost}
        name = f"nats-{history.run_id}"
        log = tmp_path / "consumer.log"
        consumer = tdc_consume(env, "nats", "--url", server.url, "--stream", "DebeziumStream", "--subject",
                               "gqsh-source.gqsh.*", "--durable", "tdc", "--format", "debezium", "--name", name,
                               "--batch", "50", "--ack-wait", "3", "--idle-exit", "10", stderr=log)
        # When the server stops part of the way and comes back three seconds later
        wait_for_messages(consumer, redis_client, name, 100)
        server.stop()
        time.sleep(3)
        server.start()
        # Then the consumer finishes: everything delivered and acknowledged, rows exact
        out = finished(consumer)
        assert "messages acknowledged (idle)" in out, log.read_text()[-3000:]
        assert _consumer_state("DebeziumStream", "tdc", server.url) == (0, 0)
    finally:
        server.stop()
    ingest(storage, redis_client, ORDER_FLOW, "business", lines_of(history, "business"))
    run_chains_to_rest(storage, redis_client, history)
    assert problems(storage, history) == []


def test_bench_consume_runs_both_sides_and_prints_the_ratio(storage) -> None:  # type: ignore[no-untyped-def]
    import re

    from tests.integration.helpers import run_tdc

    result = run_tdc(env_of(storage), "bench", "consume", "--orders", "40")
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"consume: ratio \d+\.\d\d \(consume [\d,]+ lines/s vs ingest [\d,]+ lines/s\)",
                        result.stdout.strip().splitlines()[-1]), result.stdout
