"""The changelog outbox and its relay on real MariaDB shards and real brokers (Redis Streams, NATS
JetStream, RabbitMQ): every committed wide-row change reaches the sink, in order per order, and
survives a relay killed between publishing and marking; two relays at once keep the order; the
relay lock on every backend; the purge; the embedded SQLite mode."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from inspect import Parameter
from inspect import signature as inspect_signature
from typing import Any

import pytest
from sqlalchemy import event, inspect, select, text, update

from chain.wide_rows import merge_order_rows, read_orders, write_merges
from demo.history import generate_history
from models.changelog import CHANGELOG, image
from models.schema import init_storage
from models.storage import Storage
from settings import load_settings
from strategies.facts import OrderFacts
from streams.outbox import RelayFailed, Sinks, relay_database, relay_pass
from streams.relay_lock import LockLost, lock_name, relay_lock
from streams.sinks import Message, SinkError
from tests.conftest import REDIS, env_of
from tests.integration.helpers import process_history, run_tdc
from tests.integration.streams_helpers import (
    assert_changelog_complete_and_ordered,
    deduplicated,
    make_sinks,
    nats_server,  # noqa: F401 - fixture
)
from tests.integration.test_consume_kafka import kafka_bootstrap  # noqa: F401 - fixture (mock cluster or real)

pytestmark = pytest.mark.integration


@pytest.fixture
def storage_with(fresh_storage):  # type: ignore[no-untyped-def]
    """A factory: fresh initialised storage with the changelog and events sinks of ``urls``."""
    made: list[Storage] = []

    def make(urls: dict[str, str]) -> Storage:
        storage = Storage(dataclasses.replace(fresh_storage().settings, changelog_url=urls.get("TDC_CHANGELOG_URL"),
                                              events_url=urls.get("TDC_EVENTS_URL")))
        made.append(storage)
        return storage

    yield make
    for storage in made:
        storage.dispose()


def outbox_rows(storage: Storage) -> list[Any]:
    rows: list[Any] = []
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            rows += connection.execute(select(CHANGELOG)).all()
    return rows


def assert_last_after_images_are_the_wide_rows(storage: Storage, changes: list[dict[str, Any]]) -> None:
    last = {change["order_id"]: change for change in changes}
    orders, items = read_orders(storage, list(last))
    assert set(orders) == set(last)
    for order_id, change in last.items():
        lines = [item for item in items.values() if item["order_id"] == order_id]
        assert change["after"] == image(orders[order_id], lines, "gqsh"), order_id


@pytest.fixture(params=["redis", "nats", "amqp"])
def sinks(request):  # type: ignore[no-untyped-def]
    """A changelog and an events sink of this test's own on each real broker."""
    if request.param == "nats":
        request.getfixturevalue("nats_server")
        pair = make_sinks("nats")
    elif request.param == "amqp":
        pair = make_sinks("amqp", request.getfixturevalue("rabbitmq_vhost"))
    else:
        request.getfixturevalue("redis_client")
        pair = make_sinks("redis")
    yield pair
    pair.close()


def test_every_change_reaches_the_sink_in_order_across_a_relay_killed_between_publish_and_mark(
        storage_with, redis_client, sinks) -> None:
    # Given a history with corrections, out-of-order arrival, duplicates and parked tasks run
    # through the chains, with the sinks configured (so every merge wrote outbox rows)
    storage = storage_with(sinks.env())
    history = generate_history(30, seed=18)
    process_history(storage, redis_client, history)
    outbox = {(row.order_id, row.version) for row in outbox_rows(storage)}
    assert len(outbox) > len(history.order_ids)  # orders changed more than once
    env = {**env_of(storage), **sinks.env(), "TDC_CHANGELOG_BATCH": "25"}

    # When a relay is killed after publishing its second round, before marking it
    killed = run_tdc(env, "outbox", "relay", "--once", "--kill-after-rounds", "2")
    assert killed.returncode == -9, killed.stderr
    unmarked = {(row.order_id, row.version) for row in outbox_rows(storage) if row.changelog_published_at is None}
    in_sink = {(c["order_id"], c["version"]) for _, c in sinks.changes()}
    republished = in_sink & unmarked
    assert republished, "the killed relay published a round it had not marked"
    assert len(outbox) - len(unmarked) == len(in_sink - unmarked)  # what was marked is in the sink

    # And a relay runs again
    again = run_tdc(env, "outbox", "relay", "--once")
    assert again.returncode == 0, again.stderr

    # Then every change is in the sink once (twice only for the unmarked round, where the broker
    # does not de-duplicate itself), in order per order, each following the one before
    changes = sinks.changes()
    assert_changelog_complete_and_ordered(changes, outbox)
    counted: dict[tuple[str, int], int] = {}
    for _, change in changes:
        counted[(change["order_id"], change["version"])] = counted.get((change["order_id"], change["version"]), 0) + 1
    duplicated = {key for key, count in counted.items() if count > 1}
    assert duplicated == (set() if sinks.kind == "nats" else republished)
    assert max(counted.values()) <= 2
    # And the last change of every order is its wide row, and every row is marked
    assert_last_after_images_are_the_wide_rows(storage, deduplicated(changes))
    assert all(row.published_at is not None for row in outbox_rows(storage))


class RecordingSink:
    """A sink that keeps what it was sent, or refuses everything while ``down``."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.down = False

    def publish(self, messages: Sequence[Message]) -> None:
        if self.down:
            raise SinkError("the broker is away")
        self.messages += messages

    def close(self) -> None:
        pass


def _ids(sink: RecordingSink) -> list[str]:
    return [message.dedup_id for message in sink.messages]


@pytest.mark.parametrize("away", ["events", "changelog"])
def test_a_sink_that_is_away_neither_holds_back_nor_repeats_the_other(storage_with, redis_client, away) -> None:
    # Given changes in every database, and of the changelog and events sinks the one named away down
    storage = storage_with({"TDC_CHANGELOG_URL": f"{REDIS}?stream=unused-changes",
                            "TDC_EVENTS_URL": f"{REDIS}?stream=unused-events"})
    process_history(storage, redis_client, generate_history(12, seed=21))
    outbox = {f"{row.order_id}:{row.version}" for row in outbox_rows(storage)}
    changelog, events = RecordingSink(), RecordingSink()
    sinks = Sinks(changelog=changelog, events=events)  # type: ignore[arg-type]
    down, up = (events, changelog) if away == "events" else (changelog, events)
    down.down = True

    # When two relay passes run
    for _ in range(2):
        with pytest.raises(RelayFailed, match=f"the {away} sink failed: SinkError"):
            relay_pass(storage, sinks, after_publish=lambda _: None)

    # Then the sink that is up got everything of every database once, and the changes wait for
    # the other (every change for the changelog, those that make events for the events)
    sent = _ids(up)
    assert sent and len(sent) == len(set(sent))
    if up is changelog:
        assert set(sent) == outbox
    waiting = [row for row in outbox_rows(storage) if row.published_at is None]
    assert waiting if away == "events" else len(waiting) == len(outbox)

    # When the sink is back
    down.down = False
    report = relay_pass(storage, sinks)

    # Then it gets everything once, the other nothing more, and every change is published
    assert _ids(up) == sent
    assert len(_ids(down)) == len(set(_ids(down))) > 0
    assert set(_ids(changelog)) == outbox
    assert report.published == (len(outbox) if away == "changelog" else 0)
    assert all(row.published_at is not None for row in outbox_rows(storage))


def test_init_adds_the_per_sink_marks_to_an_outbox_an_older_tdc_made(storage_with, redis_client) -> None:
    # Given an outbox table without the per-sink marks, one change published by an older relay
    # and one still waiting
    storage = storage_with({"TDC_CHANGELOG_URL": f"{REDIS}?stream=unused-changes"})
    process_history(storage, redis_client, generate_history(3, seed=4))
    database = storage.database_of(outbox_rows(storage)[0].order_id)
    with storage.shard_engine(database).begin() as connection:
        connection.execute(text("ALTER TABLE changelog_outbox DROP INDEX ix_changelog_changes_waiting, "
                                "DROP INDEX ix_changelog_events_waiting, DROP COLUMN changelog_published_at, "
                                "DROP COLUMN events_published_at"))
        first, *rest = connection.execute(text("SELECT id FROM changelog_outbox ORDER BY id")).scalars().all()
        connection.execute(text("UPDATE changelog_outbox SET published_at = NOW() WHERE id = :id"), {"id": first})

    # When tdc init runs again
    init_storage(storage)

    # Then the marks and their indexes are there, and a relay publishes only what waited
    columns = {column["name"] for column in inspect(storage.shard_engine(database)).get_columns("changelog_outbox")}
    assert {"changelog_published_at", "events_published_at"} <= columns
    indexes = {index["name"] for index in inspect(storage.shard_engine(database)).get_indexes("changelog_outbox")}
    assert {"ix_changelog_changes_waiting", "ix_changelog_events_waiting"} <= indexes
    sink = RecordingSink()
    assert relay_database(storage, database, Sinks(changelog=sink)).published == len(rest)  # type: ignore[arg-type]
    assert len(sink.messages) == len(rest)
    assert all(row.published_at is not None for row in outbox_rows(storage) if storage.database_of(row.order_id)
               == database)


def test_two_relays_at_once_publish_each_change_once_in_order(storage_with, redis_client) -> None:
    # Given a backlog of changes, database 0's relay lock held by the test, and three relays
    # started together, reading ten rows at a time
    pair = make_sinks("redis")
    relays: list[subprocess.Popen[str]] = []
    try:
        storage = storage_with(pair.env())
        process_history(storage, redis_client, generate_history(40, seed=7))
        outbox = {(row.order_id, row.version) for row in outbox_rows(storage)}
        env = {**env_of(storage), **pair.env(), "TDC_CHANGELOG_BATCH": "10"}
        command = [sys.executable, "-m", "cli.main", "outbox", "relay", "--once"]
        with relay_lock(storage.shard_engine(0)) as held:
            assert held is not None
            relays = [subprocess.Popen(command, env={**os.environ, **env}, stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True) for _ in range(3)]
            outputs = [relay.communicate(timeout=300) for relay in relays]
        # When they have all finished, and one more runs once the lock is free
        assert [relay.returncode for relay in relays] == [0, 0, 0], [err for _, err in outputs]
        last = run_tdc(env, "outbox", "relay", "--once")
        assert last.returncode == 0, last.stderr
        # Then each change was published exactly once (no two relays read the same rows), in
        # version order per order; every relay skipped the held database (the others were
        # shared out however the three met)
        changes = pair.changes()
        assert len(changes) == len(outbox)
        assert_changelog_complete_and_ordered(changes, outbox)
        assert all("skipped databases [0" in out for out, _ in outputs), outputs
        status = run_tdc(env, "outbox", "status")
        assert status.returncode == 0 and status.stdout.count(": 0 waiting;") == 4, status.stdout
        assert sum(int(line.split("; ")[1].split()[0]) for line in status.stdout.splitlines()) == len(outbox)
    finally:
        for relay in relays:  # a relay a failed test left running
            if relay.poll() is None:
                relay.kill()
                relay.communicate()
        pair.close()


def test_a_held_database_is_skipped_and_its_changes_wait(storage_with, redis_client) -> None:
    # Given changes in every shard database and database 0's relay lock held elsewhere
    pair = make_sinks("redis")
    try:
        storage = storage_with(pair.env())
        process_history(storage, redis_client, generate_history(12, seed=3))
        sinks = Sinks.configured(storage.settings)
        with relay_lock(storage.shard_engine(0)) as held:
            assert held is not None
            # When a relay passes
            report = relay_pass(storage, sinks)
        # Then database 0 was skipped and only its changes still wait
        assert report.skipped == [0]
        waiting = {storage.database_of(row.order_id) for row in outbox_rows(storage) if row.published_at is None}
        assert waiting == {0}
        assert relay_database(storage, 0, sinks).published > 0
        assert all(row.published_at is not None for row in outbox_rows(storage))
        sinks.close()
    finally:
        pair.close()


def test_a_relay_that_loses_its_lock_between_check_and_publish_still_publishes_its_round(storage_with,
                                                                                        redis_client) -> None:
    """What the relay lock does not do (streams.relay_lock's docstring, README's guarantees): fence
    a publish.  Consumers keep the highest version per order, and that is enough."""
    storage = storage_with({"TDC_CHANGELOG_URL": f"{REDIS}?stream=unused-changes"})
    process_history(storage, redis_client, generate_history(12, seed=4))
    # A database with an order changed more than once: its relay has a second round to stop at
    orders = [row.order_id for row in outbox_rows(storage)]
    database = storage.database_of(next(order for order in orders if orders.count(order) > 1))
    engine = storage.shard_engine(database)
    broker = RecordingSink()

    class TakenOverWhilePublishing(RecordingSink):
        """The first relay's sink: its first publish comes after the relay's lock connection died
        and a second relay published everything."""

        def publish(self, messages: Sequence[Message]) -> None:
            if not broker.messages:
                with engine.connect() as other:
                    holder = other.execute(text("SELECT IS_USED_LOCK(:name)"), {"name": lock_name(engine)}).scalar()
                    other.execute(text(f"KILL {int(holder)}"))
                assert relay_database(storage, database, Sinks(changelog=broker)).published > 0  # type: ignore[arg-type]
            broker.publish(messages)

    # Given a relay whose lock connection dies after its check, while a second relay publishes
    # every change of the database
    with pytest.raises(LockLost):
        relay_database(storage, database, Sinks(changelog=TakenOverWhilePublishing()))  # type: ignore[arg-type]

    # Then the first relay's round still reached the broker, after newer versions of its orders,
    # and stopped at its next check
    seen: dict[str, int] = {}
    older_after_newer = []
    for message in broker.messages:
        order_id, version = message.dedup_id.rsplit(":", 1)
        if int(version) < seen.get(order_id, 0):
            older_after_newer.append(message.dedup_id)
        seen[order_id] = max(seen.get(order_id, 0), int(version))
    assert older_after_newer
    # And a consumer that keeps the highest version of each order holds every order's wide row
    highest: dict[str, dict[str, Any]] = {}
    for message in broker.messages:
        change = json.loads(message.body)
        if change["version"] > highest.get(change["order_id"], {"version": 0})["version"]:
            highest[change["order_id"]] = change
    assert_last_after_images_are_the_wide_rows(storage, list(highest.values()))


@pytest.mark.parametrize("backend", ["mariadb", "postgresql"])
def test_the_relay_lock_is_exclusive_and_released_when_its_connection_dies(fresh_storage, backend) -> None:
    storage = fresh_storage()
    engine = storage.shard_engine(1) if backend == "mariadb" else storage.dws_engine
    with relay_lock(engine) as first:
        with relay_lock(engine) as second:
            assert first is not None and second is None
        first.check()
        # When the server ends the holder's connection, the lock is gone and the holder knows it
        assert first.connection is not None
        if backend == "mariadb":
            holder = first.connection.execute(text("SELECT CONNECTION_ID()")).scalar_one()
            first.connection.commit()
            with engine.connect() as other:
                other.execute(text(f"KILL {int(holder)}"))
        else:
            holder = first.connection.execute(text("SELECT pg_backend_pid()")).scalar_one()
            first.connection.commit()
            with engine.connect() as other:
                other.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": holder})
                other.commit()
        with pytest.raises(LockLost):
            first.check()
        with relay_lock(engine) as third:
            assert third is not None


def test_published_changes_are_purged_after_the_retention_and_waiting_ones_never(storage_with,
                                                                                redis_client) -> None:
    pair = make_sinks("redis")
    try:
        storage = storage_with(pair.env())
        process_history(storage, redis_client, generate_history(10, seed=5))
        sinks = Sinks.configured(storage.settings)
        relay_pass(storage, sinks)
        rows = outbox_rows(storage)
        old, recent = rows[: len(rows) // 2], rows[len(rows) // 2:]
        # Given half the published changes marked 73 hours ago, and a change written long ago that still waits
        long_ago = dt.datetime.now(dt.UTC).replace(tzinfo=None) - dt.timedelta(hours=73)
        for row in old:
            with storage.engine_for_order(row.order_id).begin() as connection:
                connection.execute(update(CHANGELOG).where(CHANGELOG.c.id == row.id).values(published_at=long_ago))
        waiting = recent[0]
        with storage.engine_for_order(waiting.order_id).begin() as connection:
            connection.execute(update(CHANGELOG).where(CHANGELOG.c.id == waiting.id).values(
                published_at=None, changelog_published_at=None, events_published_at=None, changed_at=long_ago))
        # When the relay passes
        report = relay_pass(storage, sinks)
        sinks.close()
        # Then exactly the old published ones are gone, and the waiting one was published, not purged
        assert report.purged == len(old) and report.published == 1
        assert {(r.order_id, r.version) for r in outbox_rows(storage)} == {(r.order_id, r.version) for r in recent}
    finally:
        pair.close()


def test_the_embedded_sqlite_mode_relays_every_change(tmp_path, redis_client) -> None:
    # Given the embedded default (SQLite shard files), a Redis stream sink
    pair = make_sinks("redis")
    try:
        storage = Storage(load_settings({"TDC_HOME": str(tmp_path), "TDC_REDIS_URL": REDIS, "TDC_SHARDS": "64",
                                         "TDC_SOURCE_DATABASES": "gqsh", **pair.env()}))
        init_storage(storage)
        process_history(storage, redis_client, generate_history(12, seed=11))
        outbox = {(row.order_id, row.version) for row in outbox_rows(storage)}
        sinks = Sinks.configured(storage.settings)
        # When database 2's lock (a file lock) is held, it is skipped; then everything goes
        with relay_lock(storage.shard_engine(2)) as held:
            assert held is not None
            assert relay_pass(storage, sinks).skipped == [2]
        relay_pass(storage, sinks)
        sinks.close()
        # Then the sink holds every change once, in order, and the last after-images are the rows
        changes = pair.changes()
        assert len(changes) == len(outbox)
        assert_changelog_complete_and_ordered(changes, outbox)
        assert_last_after_images_are_the_wide_rows(storage, deduplicated(changes))
    finally:
        pair.close()
        storage.dispose()


def test_nothing_is_written_to_the_outbox_without_a_sink(fresh_storage, redis_client) -> None:
    storage = fresh_storage()
    process_history(storage, redis_client, generate_history(5, seed=2))
    assert outbox_rows(storage) == []


class NoDimensions:
    def get(self, dimension: str, key: Any) -> dict[str, Any]:
        return {}


def _submitted_order(order_id: str) -> OrderFacts:
    return OrderFacts(order_id, {"gqsh_order": {order_id: {
        "order_id": order_id, "store_id": "S001", "member_id": "M1", "channel": "app", "status": 10,
        "item_count": 0, "total_amount": "10.00", "discount_amount": "0.00", "pay_amount": "10.00",
        "created_at": "2026-11-02T10:00:00.000", "paid_at": None, "updated_at": None}}})


def test_every_writer_of_wide_rows_says_whether_changes_go_to_the_changelog(storage_with) -> None:
    # Given the changelog flag is required by both writers of wide rows
    for writer in (write_merges, merge_order_rows):
        assert inspect_signature(writer).parameters["changelog"].default is Parameter.empty, writer.__name__
    # When one order is merged on its own with the flag set
    storage = storage_with({"TDC_CHANGELOG_URL": f"{REDIS}?stream=unused-changes"})
    order_id = f"CL{os.urandom(6).hex()}"
    with storage.engine_for_order(order_id).begin() as connection:
        merge_order_rows(connection, _submitted_order(order_id), "SUBMIT", 1, NoDimensions(),
                         dt.datetime(2026, 11, 2), changelog=storage.settings.changelog_outbox)
    # Then its change is in the outbox, with the wide row as its after-image
    (row,) = outbox_rows(storage)
    assert (row.order_id, row.version, row.operation, row.operations) == (order_id, 1, "insert", "SUBMIT")
    orders, _ = read_orders(storage, [order_id])
    assert json.loads(row.after_image) == image(orders[order_id], [], "gqsh")


class WriteFailed(RuntimeError):
    pass


@pytest.mark.parametrize("failing", ["INSERT INTO dwd_order_snapshot", "DELETE FROM dwd_order_item"])
def test_the_outbox_row_is_rolled_back_with_a_merge_that_fails_after_writing_it(storage_with, failing) -> None:
    # Given an order merged once, its change in the outbox
    storage = storage_with({"TDC_CHANGELOG_URL": f"{REDIS}?stream=unused-changes"})
    order_id = f"TX{os.urandom(6).hex()}"
    facts = _submitted_order(order_id)
    engine = storage.engine_for_order(order_id)
    with engine.begin() as connection:
        merge_order_rows(connection, facts, "SUBMIT", 1, NoDimensions(), dt.datetime(2026, 11, 2), changelog=True)
    before, _ = read_orders(storage, [order_id])
    facts.rows["gqsh_order"][order_id].update(status=50, total_amount="12.00", pay_amount="12.00")

    # When a second merge of it fails on the statement failing, after its outbox row was written
    statements: list[str] = []

    def fail_on_the_write(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(statement)
        if " ".join(statement.split()).startswith(failing):
            raise WriteFailed(failing)

    event.listen(engine, "before_cursor_execute", fail_on_the_write)
    try:
        with pytest.raises(WriteFailed), engine.begin() as connection:
            merge_order_rows(connection, facts, "CANCEL", 2, NoDimensions(), dt.datetime(2026, 11, 3),
                             changelog=True)
    finally:
        event.remove(engine, "before_cursor_execute", fail_on_the_write)
    assert any("INTO changelog_outbox" in statement for statement in statements), statements

    # Then no outbox row of the failed merge exists, and the wide row is as it was
    assert [(row.order_id, row.version) for row in outbox_rows(storage)] == [(order_id, 1)]
    after, _ = read_orders(storage, [order_id])
    assert after == before


def test_kafka_every_change_in_order_per_order(storage_with, redis_client, kafka_bootstrap) -> None:  # noqa: F811
    """Against librdkafka's mock cluster, and a real Kafka when TDC_KAFKA_BOOTSTRAP is set."""
    from confluent_kafka import Consumer

    # Given changes relayed to a Kafka topic
    topic = f"tdc-test-changelog-{os.urandom(4).hex()}"
    storage = storage_with({"TDC_CHANGELOG_URL": f"kafka://{kafka_bootstrap}?topic={topic}"})
    process_history(storage, redis_client, generate_history(20, seed=13))
    outbox = {(row.order_id, row.version) for row in outbox_rows(storage)}
    sinks = Sinks.configured(storage.settings)
    assert relay_pass(storage, sinks).published == len(outbox)
    sinks.close()
    # When a consumer reads the topic from its beginning
    consumer = Consumer({"bootstrap.servers": kafka_bootstrap, "group.id": topic, "auto.offset.reset": "earliest"})
    consumer.subscribe([topic])
    changes: list[tuple[str, dict[str, Any]]] = []
    deadline = time.monotonic() + 60
    while len(changes) < len(outbox) and time.monotonic() < deadline:
        message: Any = consumer.poll(1.0)
        if message is not None and message.error() is None:
            change = json.loads(message.value())
            assert message.key().decode() == change["order_id"]
            changes.append((dict(message.headers())["id"].decode(), change))
    consumer.close()
    # Then every change is there, each order's in order (an order is one key, so one partition)
    assert_changelog_complete_and_ordered(changes, outbox)


def test_the_relay_refuses_a_kafka_login_it_cannot_use_instead_of_retrying(tmp_path) -> None:
    # Given a Kafka changelog URL with a user but no password (the embedded mode otherwise)
    env = {"TDC_HOME": str(tmp_path), "TDC_REDIS_URL": REDIS,
           "TDC_CHANGELOG_URL": "kafka://tdc@127.0.0.1:9?topic=changes"}
    # When a relay that would run until stopped starts
    refused = run_tdc(env, "outbox", "relay")
    # Then it exits 2 at once, naming the variable
    assert refused.returncode == 2, refused.stderr
    assert "TDC_CHANGELOG_URL: a kafka:// sink with a user needs its password" in refused.stderr


def _waiting(storage: Storage) -> int:
    return sum(1 for row in outbox_rows(storage) if row.published_at is None)


def _wait_until(condition, seconds: float) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True


def test_a_running_relay_rides_out_a_sink_outage_and_stops_on_sigterm(storage_with, redis_client,
                                                                      tmp_path) -> None:
    import redis

    from tests.e2e.helpers import PrivateRedis

    with PrivateRedis(tmp_path / "redis") as sink_redis:
        # Given a relay running on (not --once) towards a Redis of the test's own
        url = f"{sink_redis.url}?stream=changelog"
        storage = storage_with({"TDC_CHANGELOG_URL": url})
        process_history(storage, redis_client, generate_history(15, seed=41))
        env = {**os.environ, **env_of(storage), "TDC_CHANGELOG_URL": url, "TDC_CHANGELOG_RELAY_SECONDS": "0.3"}
        relay = subprocess.Popen([sys.executable, "-m", "cli.main", "outbox", "relay"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert _wait_until(lambda: _waiting(storage) == 0, 60)
            # When the sink goes away while more changes are committed, and comes back
            sink_redis.stop()
            process_history(storage, redis_client, generate_history(10, seed=42))
            time.sleep(2)
            assert _waiting(storage) > 0 and relay.poll() is None
            sink_redis.start()
            # Then the relay publishes them once it can, and ends on SIGTERM
            assert _wait_until(lambda: _waiting(storage) == 0, 90)
        finally:
            relay.terminate()
            out, err = relay.communicate(timeout=60)
        assert relay.returncode == 0, err
        assert "relay pass failed" in err and out.strip().splitlines()[-1].startswith("done:")
        client: Any = redis.Redis.from_url(sink_redis.url, decode_responses=True)
        changes = [(entry["id"], json.loads(entry["change"])) for _, entry in client.xrange("changelog")]
        assert_changelog_complete_and_ordered(changes, {(row.order_id, row.version) for row in outbox_rows(storage)})
