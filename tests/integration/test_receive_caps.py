"""The caps on a ``tdc.receive`` batch, on real MariaDB shards and Redis: a batch over the write or
byte cap is refused whole (nothing stored, its beginning quarantined with size and reason, one
alarm), a single oversized write is quarantined alone, and the task applies the configured caps."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from sqlalchemy import select

from flows.registry import ACCEPTED as ORDER_FLOW
from intake.receive_caps import KEPT_CHARACTERS, MAX_WRITE_BYTES, receive_batch
from models.orders import QuarantinedInput
from models.sharded import meta_table
from reliability.alarms import ALARM_COUNTERS
from tests.conftest import new_order_id
from tests.factories import PaymentWriteFactory

pytestmark = pytest.mark.integration

QUARANTINE = QuarantinedInput.__table__


def _writes(count: int) -> list[dict[str, Any]]:
    return [PaymentWriteFactory(order_id=new_order_id("RC")) for _ in range(count)]


def _stored(storage, order_id: str) -> int:  # type: ignore[no-untyped-def]
    table = meta_table(storage.shard_of(order_id))
    with storage.engine_for_order(order_id).connect() as connection:
        return len(connection.execute(select(table.c.id).where(table.c.order_id == order_id)).fetchall())


def _kept(storage, database: int, containing: str) -> list[Any]:  # type: ignore[no-untyped-def]
    with storage.shard_engine(database).connect() as connection:
        return connection.execute(select(QUARANTINE).where(QUARANTINE.c.raw.contains(containing))).fetchall()


def _alarms(redis_client) -> int:  # type: ignore[no-untyped-def]
    return int(redis_client.hget(ALARM_COUNTERS, "receive_refused") or 0)


def test_a_batch_within_the_caps_is_stored(storage, redis_client) -> None:
    # Given three payments, when they are received under caps they fit
    writes = _writes(3)
    received = receive_batch(storage, redis_client, ORDER_FLOW, writes, max_writes=3, max_bytes=10_000)
    # Then all are stored and nothing was refused
    assert (received.report.accepted, received.refused) == (3, 0)
    assert all(_stored(storage, w["order_id"]) == 1 for w in writes)


def test_a_batch_over_the_write_cap_is_refused_whole_and_quarantined_once(storage, redis_client) -> None:
    # Given four payments, one more than the cap
    writes = _writes(4)
    alarms = _alarms(redis_client)
    # When the batch is received, and delivered again by the broker
    first = receive_batch(storage, redis_client, ORDER_FLOW, writes, max_writes=3, max_bytes=10_000)
    again = receive_batch(storage, redis_client, ORDER_FLOW, writes, max_writes=3, max_bytes=10_000)
    # Then nothing of it is stored, it is counted as refused with the reason naming the cap
    assert first.refused == again.refused == 4 and first.report.accepted == 0
    assert first.reason is not None and "4 writes (at most 3, TDC_RECEIVE_MAX_WRITES)" in first.reason
    assert all(_stored(storage, w["order_id"]) == 0 for w in writes)
    # And one quarantine row (shard database 0) holds the whole small batch with the reason,
    # and one alarm went out
    [kept] = _kept(storage, 0, writes[0]["order_id"])
    assert kept.reason == first.reason and kept.input_format == "business"
    assert all(w["unique_key"] in kept.raw for w in writes)
    assert _alarms(redis_client) == alarms + 1
    # And the same writes sent again in batches within the cap are stored
    for part in (writes[:3], writes[3:]):
        assert receive_batch(storage, redis_client, ORDER_FLOW, part, max_writes=3, max_bytes=10_000).refused == 0
    assert all(_stored(storage, w["order_id"]) == 1 for w in writes)


def test_a_batch_over_the_byte_cap_keeps_only_its_beginning_with_size_and_digest(storage, redis_client) -> None:
    # Given a batch of about 1 MB against a cap of 20 kB
    writes = _writes(200)
    for write in writes:
        write["payload"]["note"] = "x" * 5000
    alarms = _alarms(redis_client)
    # When it is received
    received = receive_batch(storage, redis_client, ORDER_FLOW, writes, max_writes=1000, max_bytes=20_000)
    # Then it is refused whole, the reason gives its size, nothing is stored
    assert received.refused == 200 and received.report.lines == 0
    assert received.reason is not None and "(at most 20000, TDC_RECEIVE_MAX_BYTES)" in received.reason
    assert all(_stored(storage, w["order_id"]) == 0 for w in writes)
    # And the quarantine keeps a bounded beginning, the whole size and its digest, not the megabyte
    [kept] = _kept(storage, 0, writes[0]["unique_key"])
    size = int(received.reason.split(" bytes as JSON")[0].rsplit(" ", 1)[-1])
    assert size > 1_000_000
    assert len(kept.raw) < KEPT_CHARACTERS + 200
    assert kept.raw.startswith('[{"source": "payment"') and f"of {size} characters; sha1 " in kept.raw
    assert _alarms(redis_client) == alarms + 1


def test_one_write_over_the_per_write_limit_is_quarantined_alone(storage, redis_client) -> None:
    # Given a batch within the caps whose second write is larger than a write may be
    writes = _writes(3)
    writes[1]["payload"]["note"] = "y" * MAX_WRITE_BYTES
    # When it is received
    received = receive_batch(storage, redis_client, ORDER_FLOW, writes, max_writes=10, max_bytes=1_000_000)
    # Then its neighbours are stored, and it is quarantined with its order id, size and beginning
    assert (received.report.accepted, received.report.quarantined, received.refused) == (2, 1, 0)
    assert _stored(storage, writes[0]["order_id"]) == 1 and _stored(storage, writes[2]["order_id"]) == 1
    assert _stored(storage, writes[1]["order_id"]) == 0
    [kept] = _kept(storage, storage.database_of(writes[1]["order_id"]), writes[1]["unique_key"])
    assert kept.order_id == writes[1]["order_id"]
    assert kept.reason.startswith("write refused: ") and f"at most {MAX_WRITE_BYTES}" in kept.reason
    assert len(kept.raw) < KEPT_CHARACTERS + 200


def test_something_that_is_not_a_list_is_refused(storage, redis_client) -> None:
    # Given a single write sent without its list
    write = PaymentWriteFactory(order_id=new_order_id("RC"))
    # When it is received, then it is refused and kept with the reason
    received = receive_batch(storage, redis_client, ORDER_FLOW, write, max_writes=10, max_bytes=10_000)
    assert received.refused == 1 and received.reason is not None and "not a JSON dict" in received.reason
    [kept] = _kept(storage, 0, write["unique_key"])
    assert kept.reason == received.reason
    assert _stored(storage, write["order_id"]) == 0


def test_the_task_applies_the_configured_caps(storage, redis_client, monkeypatch) -> None:
    # Given the task wired to this storage with a cap of two writes
    import tasks.ingest as ingest

    submitted: list[set[Any]] = []
    settings = dataclasses.replace(storage.settings, receive_max_writes=2)
    monkeypatch.setattr(ingest, "get_settings", lambda: settings)
    monkeypatch.setattr(ingest, "get_storage", lambda: storage)
    monkeypatch.setattr(ingest, "get_redis", lambda: redis_client)
    monkeypatch.setattr(ingest, "submit_tasks", lambda keys: submitted.append(set(keys)) or len(keys))
    # When it runs on two writes, then on three
    taken = ingest.receive.run(_writes(2))
    refused = ingest.receive.run(_writes(3))
    # Then the first are stored and their chains submitted; the second batch is refused whole
    assert (taken["accepted"], taken["refused"]) == (2, 0)
    assert (refused["accepted"], refused["quarantined"], refused["refused"]) == (0, 0, 3)
    assert [len(keys) for keys in submitted] == [2, 0]
