"""``tdc search`` over the wide rows of real MariaDB shard databases: every combination of
conditions finds exactly the orders a model of the history says it should, newest first, after
corrections, cancellations and refunds."""

from __future__ import annotations

import datetime as dt
import json
import random
from decimal import Decimal
from typing import Any

import pytest

from demo.history import generate_history
from intake.receiver import utcnow
from search.query import OrderQuery, QueryError
from search.sql import search_sql
from tests.conftest import env_of
from tests.integration.helpers import process_history, run_tdc

pytestmark = pytest.mark.integration


def _model(history, query: OrderQuery) -> list[str]:  # type: ignore[no-untyped-def]
    """The order ids ``query`` must find, from the history's own expectations (not the wide rows)."""
    skus: dict[str, set[str]] = {}
    for item in history.expected_items.values():
        skus.setdefault(item["order_id"], set()).add(item["sku_id"])
    found = []
    for order_id, order in history.expected_orders.items():
        day = (order["paid_at"] or order["created_at"]).date()
        checks = [
            query.order_id in (None, order_id), query.store_id in (None, order["store_id"]),
            query.status in (None, order["status"]), query.member_id in (None, order["member_id"]),
            query.channel in (None, order["channel"]), query.sku_id is None or query.sku_id in skus.get(order_id, ()),
            query.min_amount is None or (order["pay_amount"] is not None and order["pay_amount"] >= query.min_amount),
            query.max_amount is None or (order["pay_amount"] is not None and order["pay_amount"] <= query.max_amount),
            query.date_from is None or day >= query.date_from, query.date_to is None or day <= query.date_to,
        ]
        if all(checks):
            found.append(order)
    found.sort(key=lambda o: (o["created_at"], o["order_id"]), reverse=True)
    return [o["order_id"] for o in found[:query.limit]]


def _queries(history, count: int, seed: int) -> list[OrderQuery]:  # type: ignore[no-untyped-def]
    """Selective queries mixing store, status, amount range, SKU, member, channel and days."""
    rng = random.Random(seed)
    orders = list(history.expected_orders.values())
    items = list(history.expected_items.values())
    queries = []
    for _ in range(count):
        sample = rng.choice(orders)
        amounts = sorted(Decimal(rng.randint(0, 600)) for _ in range(2))
        day = (sample["paid_at"] or sample["created_at"]).date()
        chosen: dict[str, Any] = {}
        for name, value in (("store_id", sample["store_id"]), ("status", sample["status"]),
                            ("member_id", sample["member_id"]), ("channel", sample["channel"]),
                            ("sku_id", rng.choice(items)["sku_id"]), ("min_amount", amounts[0]),
                            ("max_amount", amounts[1]), ("date_from", day - dt.timedelta(days=rng.randint(0, 2))),
                            ("date_to", day + dt.timedelta(days=rng.randint(0, 2)))):
            if rng.random() < 0.35:
                chosen[name] = value
        queries.append(OrderQuery(**chosen, limit=rng.choice([5, 50])))
    return queries + [OrderQuery(order_id=orders[0]["order_id"]), OrderQuery(limit=7)]


def test_the_sql_fallback_finds_what_the_history_says(fresh_storage, redis_client) -> None:
    # Given a shuffled history with corrections, cancellations and refunds, processed
    storage = fresh_storage()
    history = generate_history(80, seed=31, displacement=60, duplicate_rate=0.05, malformed=0)
    process_history(storage, redis_client, history)
    # When 200 selective queries run on the wide rows of the four shard databases
    # Then each finds exactly the model's orders, newest first, with their lines
    checked = 0
    for query in _queries(history, 200, seed=5):
        found = search_sql(storage, query)
        assert [o["order_id"] for o in found] == _model(history, query), query
        for order in found:
            assert sorted(i["item_id"] for i in order["items"]) == sorted(
                i["item_id"] for i in history.expected_items.values() if i["order_id"] == order["order_id"])
            assert "source_digest" not in order
        checked += bool(found)
    assert checked >= 60  # the queries are selective, not empty


def test_the_command_prints_a_table_or_json_and_refuses_bad_conditions(fresh_storage, redis_client) -> None:
    # Given a processed history
    storage = fresh_storage()
    history = generate_history(20, seed=8, malformed=0)
    process_history(storage, redis_client, history)
    store = next(iter(history.expected_orders.values()))["store_id"]
    env = env_of(storage)
    # When the command searches a store as JSON, as a table, and with bad conditions
    as_json = run_tdc(env, "search", "--store", store, "--json")
    as_table = run_tdc(env, "search", "--store", store, "--limit", "3")
    bad = [run_tdc(env, "search", *arguments) for arguments in (
        ["--min-amount", "ten"], ["--from", "2026-02-30"], ["--min-amount", "9", "--max-amount", "1"],
        ["--limit", "0"], ["--status", "paid"])]
    # Then the JSON holds the model's orders with their lines, the table its first three, and each
    # bad condition is named with exit status 2
    assert as_json.returncode == 0, as_json.stderr
    found = json.loads(as_json.stdout)
    assert [o["order_id"] for o in found] == _model(history, OrderQuery(store_id=store))
    assert all(isinstance(o["items"], list) and isinstance(o["pay_amount"], str | None) for o in found)
    lines = as_table.stdout.strip().splitlines()
    assert lines[0].split()[:3] == ["order", "day", "store"]
    assert [line.split()[0] for line in lines[1:]] == _model(history, OrderQuery(store_id=store, limit=3))
    assert [r.returncode for r in bad] == [2] * len(bad)
    assert "not an amount" in bad[0].stderr and "not a date" in bad[1].stderr and "above max" in bad[2].stderr
    assert "outside 1..10000" in bad[3].stderr and "not a whole number" in bad[4].stderr


def test_a_query_is_checked_when_it_is_made() -> None:
    assert OrderQuery.parse(min_amount="10.5", date_from="2026-11-01", status="20").conditions() == {
        "min_amount": Decimal("10.5"), "date_from": dt.date(2026, 11, 1), "status": 20}
    with pytest.raises(QueryError, match="not an amount"):
        OrderQuery.parse(max_amount="NaN")
    with pytest.raises(QueryError, match="after to"):
        OrderQuery.parse(date_from="2026-11-02", date_to="2026-11-01")


def _reindexed(storage, order_index):  # type: ignore[no-untyped-def]
    order_index.init()
    new, report = order_index.reindex(storage)
    order_index.refresh()
    return new, report


def test_elasticsearch_and_the_sql_fallback_find_the_same_orders(fresh_storage, redis_client, order_index) -> None:
    # Given a shuffled history with corrections, cancellations and refunds, processed, and its
    # wide rows indexed through the official client (into the tests' server, or TDC_ES_URL's)
    storage = fresh_storage()
    history = generate_history(80, seed=32, displacement=60, duplicate_rate=0.05, malformed=0)
    process_history(storage, redis_client, history)
    new, report = _reindexed(storage, order_index)
    assert report.indexed == len(history.order_ids) and not report.failed
    # When the same 200 selective queries run on both paths
    # Then both find exactly the model's orders, in the same order, with the same values
    for query in _queries(history, 200, seed=6):
        by_index = order_index.search(query)
        by_sql = search_sql(storage, query)
        assert [o["order_id"] for o in by_index] == [o["order_id"] for o in by_sql] == _model(history, query), query
        for indexed, stored in zip(by_index, by_sql, strict=True):
            assert indexed == stored


def test_a_stale_write_is_counted_and_never_overwrites_a_newer_document(fresh_storage, redis_client,
                                                                       order_index) -> None:
    # Given an indexed order at its wide row's version
    from flows.declared import BY_NAME
    from search.documents import search_document

    document = search_document(BY_NAME["gqsh"]).document

    storage = fresh_storage()
    history = generate_history(5, seed=3, malformed=0)
    process_history(storage, redis_client, history)
    _reindexed(storage, order_index)
    order_id = history.order_ids[0]
    [current] = search_sql(storage, OrderQuery(order_id=order_id))
    items = current.pop("items")
    newer = document({**current, "version": current["version"] + 1, "member_id": "M-NEWER"}, items)
    older = document({**current, "member_id": "M-OLDER"}, items)
    # When a newer version is written, then the same older one arrives late, twice
    first = order_index.index([newer], refresh=True)
    late = order_index.index([older, older], refresh=True)
    # Then the late writes are counted as stale and the newer document stays
    assert (first.indexed, first.stale, late.indexed, late.stale) == (1, 0, 0, 2)
    assert late.failed == {}
    [found] = order_index.search(OrderQuery(order_id=order_id))
    assert (found["member_id"], found["version"]) == ("M-NEWER", current["version"] + 1)
    assert order_index.versions([order_id]) == {order_id: current["version"] + 1}


def test_a_reindex_during_writes_loses_nothing_and_readers_never_see_it_half_built(
        fresh_storage, redis_client, order_index) -> None:
    # Given an indexed history
    from sqlalchemy import update

    from demo.tables import ORDER_TABLE as DwdOrder
    from search.elastic import wide_documents

    storage = fresh_storage()
    history = generate_history(60, seed=12, malformed=0)
    process_history(storage, redis_client, history)
    old, _ = _reindexed(storage, order_index)
    everything = OrderQuery(limit=1000)
    seen: list[int] = []
    changed: list[str] = []

    def meanwhile(_: str) -> None:
        # Readers see the whole old index; a writer changes an order already copied
        order_index.refresh()
        seen.append(len(order_index.search(everything)))
        order_id = sorted(history.order_ids)[len(changed)]
        with storage.order_transaction(order_id) as connection:
            connection.execute(update(DwdOrder).where(DwdOrder.c.order_id == order_id).values(
                member_id=f"M-DURING-{len(changed)}", version=DwdOrder.c.version + 1, updated_at=utcnow()))
        for part in wide_documents(storage, order_ids=[order_id]):
            order_index.index(part)
        changed.append(order_id)
    # When the index is rebuilt in small parts while orders change and are written through the alias
    new, report = order_index.reindex(storage, progress=meanwhile, chunk=10)
    order_index.refresh()
    # Then readers always saw every order, the alias moved to the new index in one call, the old
    # index is gone, and every document is at its wide row's version
    assert len(changed) >= 4 and set(seen) == {len(history.order_ids)}
    assert new != old and order_index.current() == new
    found = {o["order_id"]: o for o in order_index.search(everything)}
    wide = {o["order_id"]: o for o in search_sql(storage, everything)}
    assert {o: f["version"] for o, f in found.items()} == {o: w["version"] for o, w in wide.items()}
    assert all(found[o]["member_id"].startswith("M-DURING-") for o in changed)


def test_the_command_searches_the_index_and_falls_back_when_it_is_down(fresh_storage, redis_client,
                                                                      elasticsearch_url) -> None:
    # Given a processed history and an index made by the command
    import uuid

    storage = fresh_storage()
    history = generate_history(20, seed=9, malformed=0)
    process_history(storage, redis_client, history)
    alias = f"tdc-test-cli-{uuid.uuid4().hex[:6]}"
    env = {**env_of(storage), "TDC_ES_URL": elasticsearch_url, "TDC_ES_ALIAS": alias}
    before = run_tdc(env, "search", "--limit", "3")
    init = run_tdc(env, "search", "init")
    reindex = run_tdc(env, "search", "reindex")
    store = next(iter(history.expected_orders.values()))["store_id"]
    # When a store's orders are searched through the index, then with the index unreachable, then
    # the index is managed without one configured
    indexed = run_tdc(env, "search", "--store", store, "--json")
    down = run_tdc({**env, "TDC_ES_URL": "http://127.0.0.1:1"}, "search", "--store", store, "--json")
    unmanaged = run_tdc({**env, "TDC_ES_URL": ""}, "search", "reindex")
    # Then the index answers with the model's orders, the wide rows answer when it is down (saying
    # so), and managing no index is refused
    assert before.returncode == 0 and "run `tdc search init`" in before.stderr, before.stderr
    assert len(before.stdout.strip().splitlines()) == 1 + 3
    assert init.returncode == 0 and f"{alias} -> {alias}-v1" in init.stdout, init.stderr
    assert reindex.returncode == 0 and f"reindexed into {alias}-v2" in reindex.stdout, reindex.stderr
    assert indexed.returncode == 0 and "from Elasticsearch" in indexed.stderr, indexed.stderr
    model = _model(history, OrderQuery(store_id=store))
    assert [o["order_id"] for o in json.loads(indexed.stdout)] == model
    assert down.returncode == 0 and "cannot be reached" in down.stderr and "SQL fallback" in down.stderr
    assert json.loads(down.stdout) == json.loads(indexed.stdout)
    assert unmanaged.returncode == 2 and "TDC_ES_URL is not set" in unmanaged.stderr


def _indexed_storage(fresh_storage, url: str, order_index):  # type: ignore[no-untyped-def]
    """Storage whose chains write index outbox entries for ``order_index`` at ``url``."""
    from dataclasses import replace

    from models.storage import Storage

    return Storage(replace(fresh_storage().settings, es_url=url, es_alias=order_index.alias))


def _outbox(storage) -> dict[str, tuple[int, int]]:  # type: ignore[no-untyped-def]
    from sqlalchemy import select

    from search.outbox import OUTBOX

    found = {}
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            found.update({r.order_id: (r.version, r.attempts) for r in connection.execute(select(OUTBOX))})
    return found


def test_every_wide_row_change_is_sent_to_the_index_through_the_outbox(fresh_storage, redis_client,
                                                                      elasticsearch_url, order_index) -> None:
    # Given chains that write index outbox entries with their wide rows
    from search.outbox import due_orders, send

    storage = _indexed_storage(fresh_storage, elasticsearch_url, order_index)
    order_index.init()
    history = generate_history(40, seed=44, displacement=40, duplicate_rate=0.05, malformed=0)
    process_history(storage, redis_client, history)
    # When the outbox is sent
    waiting = _outbox(storage)
    report = send(storage, order_index, due_orders(storage, limit=1000))
    order_index.refresh()
    # Then each order was waiting at its wide row's version, every document is in the index at that
    # version, and the outbox is empty
    wide = {o["order_id"]: o for o in search_sql(storage, OrderQuery(limit=1000))}
    assert {o: v for o, (v, _) in waiting.items()} == {o: w["version"] for o, w in wide.items()}
    assert (report.indexed, report.stale, report.failed) == (len(wide), 0, {})
    assert order_index.versions(sorted(wide)) == {o: w["version"] for o, w in wide.items()}
    assert _outbox(storage) == {}
    for query in _queries(history, 50, seed=7):
        assert [o["order_id"] for o in order_index.search(query)] == _model(history, query)


def test_an_index_outage_keeps_the_entries_and_never_touches_the_warehouse(fresh_storage, redis_client,
                                                                          elasticsearch_url, order_index) -> None:
    # Given processed orders waiting in the outbox, and Elasticsearch down
    from elastic_transport import ConnectionError as Unreachable

    from search.elastic import OrderIndex, connect
    from search.outbox import due_orders, send

    storage = _indexed_storage(fresh_storage, elasticsearch_url, order_index)
    order_index.init()
    history = generate_history(10, seed=45, malformed=0)
    process_history(storage, redis_client, history)
    down = OrderIndex(connect("http://127.0.0.1:1"), order_index.alias)
    due = due_orders(storage)
    # When they are sent to it
    with pytest.raises(Unreachable):
        send(storage, down, due)
    # Then every entry stays, counted and pushed back; the wide rows are all there regardless
    assert {o: attempts for o, (_, attempts) in _outbox(storage).items()} == dict.fromkeys(history.order_ids, 1)
    assert due_orders(storage) == []
    assert len(search_sql(storage, OrderQuery(limit=1000))) == len(history.order_ids)
    # And once it is back, the entries due later are sent
    later = utcnow() + dt.timedelta(minutes=1)
    assert send(storage, order_index, due_orders(storage, now=later)).indexed == len(history.order_ids)
    assert _outbox(storage) == {}


def test_an_entry_written_again_while_it_is_sent_is_kept(fresh_storage, redis_client, elasticsearch_url,
                                                         order_index) -> None:
    # Given an order sent at version v while a newer merge wrote v + 1 into its entry meanwhile
    from sqlalchemy import update

    from search.outbox import OUTBOX, _settle

    storage = _indexed_storage(fresh_storage, elasticsearch_url, order_index)
    history = generate_history(3, seed=46, malformed=0)
    process_history(storage, redis_client, history)
    order_id = history.order_ids[0]
    version, _ = _outbox(storage)[order_id]
    with storage.order_transaction(order_id) as connection:
        connection.execute(update(OUTBOX).where(OUTBOX.c.order_id == order_id).values(version=version + 1))
    # When the send of v settles its entries
    _settle(storage, {o: v for o, (v, _) in _outbox(storage).items()} | {order_id: version})
    # Then the newer entry stays for the next send, the others are gone
    assert _outbox(storage) == {order_id: (version + 1, 0)}


_SEND = """
import os, signal, sys
from models.storage import get_storage
from search.elastic import OrderIndex, connect
from search.outbox import due_orders, send
from settings import get_settings
settings = get_settings()
index = OrderIndex(connect(settings.es_url), settings.es_alias)
if sys.argv[1] == "die":  # killed after Elasticsearch took the documents, before the outbox was settled
    original = OrderIndex.index
    def index_then_die(self, docs, **kwargs):
        original(self, docs, **kwargs)
        os.kill(os.getpid(), signal.SIGKILL)
    OrderIndex.index = index_then_die
report = send(get_storage(), index, due_orders(get_storage(), limit=1000))
print(report.indexed, report.stale)
"""


def _sender(storage, mode: str):  # type: ignore[no-untyped-def]
    import os
    import subprocess
    import sys

    env = {**os.environ, **env_of(storage), "TDC_ES_URL": storage.settings.es_url,
           "TDC_ES_ALIAS": storage.settings.es_alias}
    return subprocess.Popen([sys.executable, "-c", _SEND, mode], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_senders_racing_or_killed_leave_every_document_exact(fresh_storage, redis_client, elasticsearch_url,
                                                             order_index) -> None:
    # Given processed orders waiting in the outbox
    import signal

    storage = _indexed_storage(fresh_storage, elasticsearch_url, order_index)
    order_index.init()
    history = generate_history(30, seed=47, malformed=0)
    process_history(storage, redis_client, history)
    # When a sender is killed after Elasticsearch took the documents but before it settled the outbox
    killed = _sender(storage, "die")
    assert killed.wait(timeout=120) == -signal.SIGKILL
    assert len(_outbox(storage)) == len(history.order_ids)
    # And then two senders race over the same entries
    racing = [_sender(storage, "send") for _ in range(2)]
    outputs = [r.communicate(timeout=120) for r in racing]
    # Then both finished, what was already there counted as stale, and the outbox is empty with
    # every document at its wide row's version
    assert [r.returncode for r in racing] == [0, 0], [err for _, err in outputs]
    counts = [tuple(map(int, out.split())) for out, _ in outputs]
    assert sum(indexed for indexed, _ in counts) == 0 and sum(stale for _, stale in counts) >= len(history.order_ids)
    assert _outbox(storage) == {}
    order_index.refresh()
    wide = {o["order_id"]: o["version"] for o in search_sql(storage, OrderQuery(limit=1000))}
    assert order_index.versions(sorted(wide)) == wide


def test_bench_search_checks_its_answers_and_reports_latency(fresh_storage) -> None:
    # Given a fresh storage, when the bench writes its orders and queries them (twice: reusing them)
    storage = fresh_storage()
    runs = [run_tdc(env_of(storage), "bench", "search", "--orders", "3000", "--queries", "10") for _ in range(2)]
    # Then both runs check every answer and print the latency line; the second writes nothing
    for run in runs:
        assert run.returncode == 0, run.stdout + run.stderr
        assert "search: 10 selective queries over 3,000 orders: median" in run.stdout
    assert "setup: 3000 orders" in runs[0].stdout and "setup:" not in runs[1].stdout


def test_documents_are_never_written_without_the_alias(fresh_storage, redis_client, order_index) -> None:
    # Given an index alias that was never made (no `tdc search init`)
    from elasticsearch import NotFoundError

    from flows.declared import BY_NAME
    from search.documents import search_document

    document = search_document(BY_NAME["gqsh"]).document

    storage = fresh_storage()
    history = generate_history(2, seed=4, malformed=0)
    process_history(storage, redis_client, history)
    [order] = search_sql(storage, OrderQuery(order_id=history.order_ids[0]))
    items = order.pop("items")
    # When a document is sent through it
    report = order_index.index([document(order, items)])
    # Then it is refused, and no index took the alias's name with guessed mappings
    assert report.indexed == 0 and list(report.failed) == [order["order_id"]]
    assert "index_not_found" in report.failed[order["order_id"]]
    with pytest.raises(NotFoundError):
        order_index.client.indices.get(index=order_index.alias)


def test_entries_of_flows_not_indexed_here_never_hold_up_the_others(fresh_storage) -> None:
    # Given an outbox whose oldest due entries are of flows this deployment does not index (a
    # flow taken out of TDC_FLOWS while its entries waited), more of them than one batch takes,
    # and online orders' entries behind them (one id with an underscore where a prefix has one)
    from sqlalchemy import update

    from search.outbox import OUTBOX, due_orders, enqueue, oldest_due

    storage = fresh_storage()
    stale = {f"pos:P{n:03d}": 1 for n in range(6)} | {f"sal_order:{n}": 1 for n in range(4)}
    online = {"T-ONLINE-1": 1, "salXorder:7": 1}
    enqueue(storage, stale | online)
    long_ago = utcnow() - dt.timedelta(hours=2)
    for order_id in stale:
        with storage.order_transaction(order_id) as connection:
            connection.execute(update(OUTBOX).where(OUTBOX.c.order_id == order_id).values(due_at=long_ago))
    # When the online orders' sender asks for a batch smaller than the stale entries
    mine = due_orders(storage, limit=5, flows=["gqsh"])
    # Then it gets the online orders' entries, not the stale ones every batch would start with
    assert sorted(mine) == sorted(online)
    assert set(due_orders(storage, limit=5)) <= set(stale)
    assert set(due_orders(storage, limit=100, flows=["pos"])) == {o for o in stale if o.startswith("pos:")}
    # and the lag alarm looks at the flows indexed here only
    assert oldest_due(storage, ["gqsh"]) > long_ago + dt.timedelta(hours=1)
    assert oldest_due(storage) <= long_ago + dt.timedelta(seconds=1)
