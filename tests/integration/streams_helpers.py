"""Real sinks for the changelog and event tests, read back in the order the broker holds them, and
the checks every sink's changelog must pass."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.conftest import REDIS, require

NATS = os.environ.get("TDC_TEST_NATS", "nats://127.0.0.1:4222")


@pytest.fixture(scope="session")
def nats_server() -> str:
    async def probe() -> None:
        import nats

        connection = await nats.connect(NATS, connect_timeout=3, max_reconnect_attempts=0)
        await connection.jetstream().account_info()
        await connection.close()

    require("NATS JetStream", lambda: asyncio.run(probe()))
    return NATS


@dataclass
class SinkPair:
    """A changelog sink and an events sink of one broker, of this test's own, readable."""

    kind: str
    changelog_url: str
    events_url: str
    #: What to delete afterwards (Redis keys, NATS streams).
    cleanup: list[str] = field(default_factory=list)
    #: AMQP: (queue of the changelog, queue of the events) and what was read from them so far
    #: (a basic.get consumes, so the reads accumulate here).
    queues: tuple[str, str] = ("", "")
    _read: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=lambda: defaultdict(list))

    def env(self) -> dict[str, str]:
        return {"TDC_CHANGELOG_URL": self.changelog_url, "TDC_EVENTS_URL": self.events_url}

    def changes(self) -> list[tuple[str, dict[str, Any]]]:
        """(de-duplication id, change) for every changelog message, in the sink's order."""
        return self._messages(0)

    def events(self) -> list[tuple[str, dict[str, Any]]]:
        """(de-duplication id, event) for every event message, in the sink's order."""
        return self._messages(1)

    def _messages(self, which: int) -> list[tuple[str, dict[str, Any]]]:
        url = (self.changelog_url, self.events_url)[which]
        if self.kind == "redis":
            import redis

            client: Any = redis.Redis.from_url(REDIS, decode_responses=True)
            field_name = ("change", "event")[which]
            stream = url.split("stream=")[1]
            return [(entry["id"], json.loads(entry[field_name])) for _, entry in client.xrange(stream)]
        if self.kind == "nats":
            return asyncio.run(_nats_messages(url.split("stream=")[1]))
        return self._amqp_messages(which)

    def _amqp_messages(self, which: int) -> list[tuple[str, dict[str, Any]]]:
        from kombu import Connection

        queue = self.queues[which]
        with Connection(self.changelog_url.split("?")[0]) as connection:
            channel = connection.channel()
            while True:
                message = channel.basic_get(queue, no_ack=True)
                if message is None:
                    break
                self._read[queue].append((message.properties["message_id"], json.loads(message.body)))
        return list(self._read[queue])

    def close(self) -> None:
        if self.kind == "redis" and self.cleanup:
            import redis

            redis.Redis.from_url(REDIS).delete(*self.cleanup)
        if self.kind == "nats":
            asyncio.run(_delete_streams(self.cleanup))


async def _nats_messages(stream: str) -> list[tuple[str, dict[str, Any]]]:
    import nats
    from nats.js.errors import NotFoundError

    connection = await nats.connect(NATS)
    try:
        js = connection.jetstream()
        try:
            state = (await js.stream_info(stream)).state
        except NotFoundError:
            return []
        found = []
        for sequence in range(state.first_seq, state.last_seq + 1) if state.messages else ():
            message = await js.get_msg(stream, sequence)
            found.append(((message.headers or {})["Nats-Msg-Id"], json.loads(message.data or b"")))
        return found
    finally:
        await connection.close()


async def _delete_streams(names: list[str]) -> None:
    import nats

    connection = await nats.connect(NATS)
    try:
        for name in names:
            try:
                await connection.jetstream().delete_stream(name)
            except Exception:  # noqa: BLE001 - never created
                pass
    finally:
        await connection.close()


def make_sinks(kind: str, amqp_vhost: str | None = None) -> SinkPair:
    """A changelog and an events sink on ``kind`` (redis, nats, amqp), named for this test."""
    tag = uuid.uuid4().hex[:8]
    if kind == "redis":
        streams = [f"tdc-test-changelog-{tag}", f"tdc-test-events-{tag}"]
        return SinkPair(kind, f"{REDIS}?stream={streams[0]}", f"{REDIS}?stream={streams[1]}", cleanup=streams)
    if kind == "nats":
        streams = [f"TDC_TEST_CHANGELOG_{tag}", f"TDC_TEST_EVENTS_{tag}"]
        return SinkPair(kind, f"{NATS}?subject=tdc.test.{tag}.changelog&stream={streams[0]}",
                        f"{NATS}?subject=tdc.test.{tag}.events&stream={streams[1]}", cleanup=streams)
    assert amqp_vhost is not None
    return SinkPair(kind, f"{amqp_vhost}?exchange=tdc.changelog&queue=changelog",
                    f"{amqp_vhost}?exchange=tdc.events&queue=events", queues=("changelog", "events"))


def versions_by_order(changes: list[tuple[str, dict[str, Any]]]) -> dict[str, list[int]]:
    """Each order's versions in the order the sink holds them."""
    found: dict[str, list[int]] = defaultdict(list)
    for dedup_id, change in changes:
        assert dedup_id == f"{change['order_id']}:{change['version']}"
        found[change["order_id"]].append(change["version"])
    return dict(found)


def deduplicated(changes: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The changes as a consumer applies them: the first of each (order, version)."""
    seen: set[str] = set()
    kept = []
    for dedup_id, change in changes:
        if dedup_id not in seen:
            seen.add(dedup_id)
            kept.append(change)
    return kept


def assert_changelog_complete_and_ordered(changes: list[tuple[str, dict[str, Any]]],
                                          outbox: set[tuple[str, int]]) -> None:
    """Every change of the outbox is in the sink; per order the versions never go back; each
    change's before-image is the previous change's after-image, the first an insert."""
    assert {(o, v) for o, versions in versions_by_order(changes).items() for v in versions} == outbox
    for order_id, versions in versions_by_order(changes).items():
        assert versions == sorted(versions), f"{order_id}: versions out of order in the sink: {versions}"
    previous: dict[str, dict[str, Any]] = {}
    for change in deduplicated(changes):
        order_id = change["order_id"]
        assert change["after"]["order"]["version"] == change["version"]
        if order_id not in previous:
            assert change["op"] == "insert" and change["before"] is None, f"{order_id}: first change {change['op']}"
        else:
            assert change["op"] == "update"
            assert change["before"] == previous[order_id], f"{order_id} v{change['version']}: a change is missing"
        previous[order_id] = change["after"]
