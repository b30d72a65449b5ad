"""Analytics events from the changelog, on real MariaDB shards, a PostgreSQL warehouse and a real
Redis stream: one stable id per fact, counts per type as the history says, replays that make no
new ids, a paid-amount correction that is an update, and a first consumption moved earlier by a
payment found later."""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import uuid
from collections import defaultdict
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, update

from demo.history import SourceChange, generate_history, render_canal
from flows.registry import ACCEPTED as ORDER_FLOW
from models.changelog import CHANGELOG, FIRST_CONSUME, FIRST_CONSUME_ORDERS
from models.storage import Storage
from streams.events import event_id
from streams.outbox import Sinks, relay_pass
from tests.integration.helpers import ingest, process_history, run_chains
from tests.integration.streams_helpers import make_sinks

pytestmark = pytest.mark.integration

Events = list[tuple[str, dict[str, Any]]]


@pytest.fixture
def relayed(fresh_storage, redis_client):  # type: ignore[no-untyped-def]
    """A factory: storage with Redis stream sinks of the test's own, and a relay for it."""
    pairs = []
    made: list[Storage] = []

    def make(warehouse: str = "postgresql") -> tuple[Storage, Any]:
        pair = make_sinks("redis")
        pairs.append(pair)
        base = fresh_storage(warehouse)
        storage = Storage(dataclasses.replace(base.settings, changelog_url=pair.changelog_url,
                                              events_url=pair.events_url))
        made.append(storage)
        return storage, pair

    yield make
    for pair in pairs:
        pair.close()
    for storage in made:
        storage.dispose()


def relay(storage: Storage) -> None:
    sinks = Sinks.configured(storage.settings)
    try:
        relay_pass(storage, sinks)
    finally:
        sinks.close()


def latest(events: Events) -> dict[str, dict[str, Any]]:
    """Each event id's newest event, as a consumer keeping the highest version holds it."""
    kept: dict[str, dict[str, Any]] = {}
    for _, event in events:
        if event["event_id"] not in kept or event["version"] > kept[event["event_id"]]["version"]:
            kept[event["event_id"]] = event
    return kept


def by_type(events: Events) -> dict[str, set[str]]:
    found: dict[str, set[str]] = defaultdict(set)
    for _, event in events:
        found[event["type"]].add(event["event_id"])
    return found


def expected_first_consumption(history) -> dict[tuple[str, str], tuple[dt.datetime, str]]:  # type: ignore[no-untyped-def]
    """(member, channel) -> (first paid_at, order), from the history's own model."""
    first: dict[tuple[str, str], tuple[dt.datetime, str]] = {}
    for order_id, order in history.expected_orders.items():
        if order["paid_at"] is None:
            continue
        key, candidate = (order["member_id"], order["channel"]), (order["paid_at"], order_id)
        first[key] = min(first.get(key, candidate), candidate)
    return first


def test_event_counts_follow_the_history_and_a_replay_makes_no_new_event(relayed, redis_client) -> None:
    # Given a history through the chains and the relay
    storage, sinks = relayed()
    history = generate_history(40, seed=21)
    process_history(storage, redis_client, history)
    relay(storage)
    events = sinks.events()

    # Then there is one id per paid order line, cancelled order, returned line, and (member, channel)
    paid = {o for o, order in history.expected_orders.items() if order["paid_at"] is not None}
    ids = by_type(events)
    assert len(ids["PayOrderDetail"]) == sum(1 for item in history.expected_items.values() if item["order_id"] in paid)
    assert len(ids["CancelOrder"]) == sum(1 for order in history.expected_orders.values() if order["status"] == 50)
    assert len(ids["ApplyReturn"]) == sum(1 for item in history.expected_items.values() if item["refund_quantity"])
    first = expected_first_consumption(history)
    assert len(ids["FirstConsumeDate"]) == len(first)
    assert ids["PayOrderDetail"] == {event_id("PayOrderDetail", item["order_id"], str(item["item_id"]))
                                     for item in history.expected_items.values() if item["order_id"] in paid}
    # And each fact's newest event says what the history says
    for event in latest(events).values():
        data = event["data"]
        if event["type"] == "PayOrderDetail":
            item = history.expected_items[data["item_id"]]
            assert (Decimal(data["amount"]), data["quantity"]) == (item["amount"], item["quantity"])
            assert Decimal(data["pay_amount"]) == history.expected_orders[event["order_id"]]["pay_amount"]
        elif event["type"] == "ApplyReturn":
            item = history.expected_items[data["item_id"]]
            assert (data["refund_quantity"], Decimal(data["refund_amount"])) == (item["refund_quantity"],
                                                                                 item["refund_amount"])
        elif event["type"] == "FirstConsumeDate":
            paid_at, order_id = first[(data["member_id"], data["channel"])]
            assert (data["first_paid_at"], data["order_id"]) == (paid_at.isoformat(timespec="milliseconds"), order_id)
    # And versions of one fact never go back in the stream
    seen: dict[str, int] = {}
    for _, event in events:
        assert event["version"] >= seen.get(event["event_id"], 0)
        seen[event["event_id"]] = event["version"]

    # When the whole history arrives again, and the changelog is relayed again from the start
    process_history(storage, redis_client, history)
    for database in storage.distinct_databases():
        with storage.shard_engine(database).begin() as connection:
            connection.execute(update(CHANGELOG).values(published_at=None, changelog_published_at=None,
                                                          events_published_at=None))
    relay(storage)

    # Then the replay sent the same (id, version) pairs again and nothing else: no new fact, no
    # new version (a FirstConsumeDate whose order is no longer the first is not sent again)
    replayed = sinks.events()[len(events):]
    assert {dedup for dedup, _ in replayed} <= {dedup for dedup, _ in events}
    assert {d for d, e in replayed if e["type"] != "FirstConsumeDate"} == {
        d for d, e in events if e["type"] != "FirstConsumeDate"}
    assert by_type(events + replayed) == ids


def _last_change(history, table: str, **match: Any) -> SourceChange:  # type: ignore[no-untyped-def]
    return [c for c in history.changes if c.table == table and all(c.row.get(k) == v for k, v in match.items())][-1]


def test_a_paid_amount_correction_is_an_update_of_the_same_events(relayed, redis_client) -> None:
    # Given a paid order relayed with its PayOrderDetail events
    storage, sinks = relayed()
    history = generate_history(12, seed=4)
    process_history(storage, redis_client, history)
    relay(storage)
    order_id = next(o for o, order in history.expected_orders.items()
                    if order["paid_at"] is not None and not order["refund_count"])
    before = {e["event_id"]: e for e in latest(sinks.events()).values()
              if e["type"] == "PayOrderDetail" and e["order_id"] == order_id}

    # When the source corrects a line's quantity after payment, the order's paid amount with it,
    # and the difference is paid
    header = _last_change(history, "gqsh_order", order_id=order_id).row
    line = _last_change(history, "gqsh_order_item", order_id=order_id).row
    payment = next(json.loads(raw) for fmt, raw in history.lines if fmt == "business" and order_id in raw)
    later = header["updated_at"] + dt.timedelta(hours=1)
    corrected_line = {**line, "quantity": line["quantity"] + 1, "amount": line["unit_price"] * (line["quantity"] + 1)}
    corrected = {**header, "total_amount": header["total_amount"] + line["unit_price"],
                 "pay_amount": header["pay_amount"] + line["unit_price"], "updated_at": later}
    canal = [render_canal(SourceChange("gqsh_order_item", "update", corrected_line, later, line), 10**6),
             render_canal(SourceChange("gqsh_order", "update", corrected, later, header), 10**6 + 1)]
    top_up = {**payment, "unique_key": f"FIX{uuid.uuid4().hex[:8]}",
              "payload": {**payment["payload"], "paid_amount": str(corrected["pay_amount"])}}
    top_up["payload"]["pay_txn_id"] = top_up["unique_key"]
    touched = ingest(storage, redis_client, ORDER_FLOW, "canal", canal).touched
    touched |= ingest(storage, redis_client, ORDER_FLOW, "business", [json.dumps(top_up)]).touched
    run_chains(storage, redis_client, touched)
    relay(storage)

    # Then each of the order's lines has an update with the same id and a newer version, carrying
    # the new paid amount, and the corrected line its new amount; no new id
    after = {e["event_id"]: e for e in latest(sinks.events()).values()
             if e["type"] == "PayOrderDetail" and e["order_id"] == order_id}
    assert set(after) == set(before)
    for key, event in after.items():
        assert event["op"] == "update" and event["version"] > before[key]["version"]
        assert Decimal(event["data"]["pay_amount"]) == corrected["pay_amount"]
        assert event["data"]["pay_txn_id"] == top_up["unique_key"]
    fixed = after[event_id("PayOrderDetail", order_id, str(line["item_id"]))]
    assert Decimal(fixed["data"]["amount"]) == corrected_line["amount"]


def test_a_payment_found_later_moves_the_first_consumption_earlier(relayed, redis_client) -> None:
    # Given a history relayed, with a member's first paid order in a channel
    storage, sinks = relayed()
    history = generate_history(15, seed=9, span_minutes=3 * 24 * 60)
    process_history(storage, redis_client, history)
    relay(storage)
    first = expected_first_consumption(history)
    (member, channel), (paid_at, first_order) = max(first.items(), key=lambda item: item[1][0])
    fact = event_id("FirstConsumeDate", member, channel)
    assert latest(sinks.events())[fact]["data"]["order_id"] == first_order

    # When orders of the same member and channel paid earlier arrive afterwards
    earlier = generate_history(4, seed=10, span_minutes=1)
    moved = [dataclasses.replace(change, row={**change.row, "member_id": member, "channel": channel},
                                 before={**change.before, "member_id": member, "channel": channel}
                                 if change.before else None)
             if change.table == "gqsh_order" else change for change in earlier.changes]
    paid_earlier = {o: order for o, order in earlier.expected_orders.items() if order["paid_at"] is not None}
    assert paid_earlier and max(o["paid_at"] for o in paid_earlier.values()) < paid_at
    canal = [render_canal(change, 5000 + n) for n, change in enumerate(moved)]
    payments = [raw for fmt, raw in earlier.lines if fmt == "business" and '"X-BAD' not in raw]
    touched = ingest(storage, redis_client, ORDER_FLOW, "canal", canal).touched
    touched |= ingest(storage, redis_client, ORDER_FLOW, "business", payments).touched
    run_chains(storage, redis_client, touched)
    relay(storage)

    # Then the same fact was updated to the earliest of them, with a newer version; still one id
    # per (member, channel)
    new_first = min((order["paid_at"], o) for o, order in paid_earlier.items())
    event = latest(sinks.events())[fact]
    assert event["op"] == "update" and event["version"] > 1
    assert (event["data"]["order_id"], event["data"]["first_paid_at"]) == (
        new_first[1], new_first[0].isoformat(timespec="milliseconds"))
    assert len(by_type(sinks.events())["FirstConsumeDate"]) == len(first)


class Corrections:
    """Source corrections of orders already relayed: header updates through Canal, payments
    through business writes; chains run and the relay passes after each."""

    def __init__(self, storage: Storage, redis_client: Any, history: Any) -> None:
        self.storage, self.redis, self.history, self.position = storage, redis_client, history, 10**6
        self.headers: dict[str, dict[str, Any]] = {}

    def header(self, order_id: str, **changes: Any) -> None:
        before = self.headers.get(order_id) or _last_change(self.history, "gqsh_order", order_id=order_id).row
        after = {**before, **changes, "updated_at": before["updated_at"] + dt.timedelta(hours=1)}
        self.headers[order_id] = after
        self.position += 1
        self._run("canal", [render_canal(SourceChange("gqsh_order", "update", after, after["updated_at"], before),
                                         self.position)])

    def paid_at(self, order_id: str, paid_at: dt.datetime) -> None:
        payment = next(json.loads(raw) for fmt, raw in self.history.lines
                       if fmt == "business" and json.loads(raw)["order_id"] == order_id)
        key = f"FIX{uuid.uuid4().hex[:8]}"
        moment = paid_at.isoformat(timespec="milliseconds")
        self._run("business", [json.dumps({**payment, "unique_key": key, "occurred_at": moment,
                                           "payload": {**payment["payload"], "pay_txn_id": key, "paid_at": moment}})])

    def _run(self, fmt: str, lines: list[str]) -> None:
        run_chains(self.storage, self.redis, ingest(self.storage, self.redis, ORDER_FLOW, fmt, lines).touched)
        relay(self.storage)


def _two_paid_orders(history: Any) -> tuple[tuple[str, dict[str, Any]], tuple[str, dict[str, Any]]]:
    """Two paid orders, not cancelled nor refunded, of different members, the earlier paid first."""
    paid = sorted(((o, order) for o, order in history.expected_orders.items()
                   if order["paid_at"] is not None and order["status"] != 50 and not order["refund_count"]),
                  key=lambda item: item[1]["paid_at"])
    first = paid[0]
    second = next(item for item in paid[1:] if item[1]["member_id"] != first[1]["member_id"])
    return first, second


def _first_consumption(sinks: Any, member: str, channel: str) -> dict[str, Any]:
    return latest(sinks.events())[event_id("FirstConsumeDate", member, channel)]


@pytest.mark.parametrize("warehouse", ["postgresql", "mariadb"])
def test_a_member_correction_moves_the_first_consumption_both_ways(relayed, redis_client, warehouse) -> None:
    # Given two paid orders A (paid first) and B of two members, each its member's first in its channel
    storage, sinks = relayed(warehouse)
    history = generate_history(15, seed=9, span_minutes=3 * 24 * 60)
    process_history(storage, redis_client, history)
    relay(storage)
    (a, order_a), (b, order_b) = _two_paid_orders(history)
    key_a, key_b = (order_a["member_id"], order_a["channel"]), (order_b["member_id"], order_b["channel"])
    assert _first_consumption(sinks, *key_a)["data"]["order_id"] == a
    assert _first_consumption(sinks, *key_b)["data"]["order_id"] == b
    corrections = Corrections(storage, redis_client, history)

    # When A's member and channel are corrected to B's
    corrections.header(a, member_id=key_b[0], channel=key_b[1])
    # Then A is B's member's first there (it was paid earlier), and A's old member has no first
    # consumption left in its channel: a delete with a newer version
    moved, gone = _first_consumption(sinks, *key_b), _first_consumption(sinks, *key_a)
    assert (moved["op"], moved["data"]["order_id"], moved["version"]) == ("update", a, 2)
    assert (gone["op"], gone["version"]) == ("delete", 2)

    # When the correction is taken back
    corrections.header(a, member_id=key_a[0], channel=key_a[1])
    # Then B is its member's first again (later than A: the first moved later), and A its own
    # member's again, each with a newer version
    back, again = _first_consumption(sinks, *key_b), _first_consumption(sinks, *key_a)
    assert (back["op"], back["data"]["order_id"], back["version"]) == ("update", b, 3)
    assert (again["op"], again["data"]["order_id"], again["version"]) == ("update", a, 3)
    assert again["data"]["first_paid_at"] == order_a["paid_at"].isoformat(timespec="milliseconds")


def test_a_later_paid_time_of_the_first_order_moves_the_first_consumption_later(relayed, redis_client) -> None:
    # Given a member's two paid orders in a channel, A paid before B, A the first
    storage, sinks = relayed()
    history = generate_history(15, seed=9, span_minutes=3 * 24 * 60)
    process_history(storage, redis_client, history)
    relay(storage)
    (a, _), (b, order_b) = _two_paid_orders(history)
    key = (order_b["member_id"], order_b["channel"])
    corrections = Corrections(storage, redis_client, history)
    corrections.header(a, member_id=key[0], channel=key[1])
    assert _first_consumption(sinks, *key)["data"]["order_id"] == a

    # When A's payment time is corrected to after B's
    corrections.paid_at(a, order_b["paid_at"] + dt.timedelta(minutes=5))
    # Then B is the first, with a newer version of the same fact
    event = _first_consumption(sinks, *key)
    assert (event["op"], event["data"]["order_id"], event["version"]) == ("update", b, 3)
    assert event["data"]["first_paid_at"] == order_b["paid_at"].isoformat(timespec="milliseconds")
    # And every (member, channel) still has one fact id
    assert len(by_type(sinks.events())["FirstConsumeDate"]) == len(
        {(o["member_id"], o["channel"]) for o in history.expected_orders.values() if o["paid_at"] is not None})


def test_a_first_consumption_an_older_tdc_recorded_holds_until_its_order_changes(relayed, redis_client) -> None:
    # Given first consumptions recorded by an older tdc, which kept no paid orders beside them
    storage, sinks = relayed()
    history = generate_history(15, seed=9, span_minutes=3 * 24 * 60)
    process_history(storage, redis_client, history)
    relay(storage)
    with storage.dws_engine.begin() as connection:
        connection.execute(delete(FIRST_CONSUME_ORDERS))
        connection.execute(update(FIRST_CONSUME).values(moved_by_order=None, moved_by_version=None))
    (a, order_a), (b, _) = _two_paid_orders(history)
    key = (order_a["member_id"], order_a["channel"])
    corrections = Corrections(storage, redis_client, history)

    # When B, paid later, becomes an order of A's member and channel
    corrections.header(b, member_id=key[0], channel=key[1])
    # Then A stays the first: nothing new is sent for it
    assert (_first_consumption(sinks, *key)["data"]["order_id"], _first_consumption(sinks, *key)["version"]) == (a, 1)

    # When A itself moves to another member
    corrections.header(a, member_id="MOVED", channel=key[1])
    # Then B is the first
    event = _first_consumption(sinks, *key)
    assert (event["op"], event["data"]["order_id"], event["version"]) == ("update", b, 2)
