"""The search index of every flow that declares one: till sales (``pos``), Kingdee sales orders
(``sal_order``) and purchase returns (``pur_mrb``) beside the online orders, on real MariaDB
shards, Redis and a PostgreSQL warehouse, with the tests' Elasticsearch-compatible server (or
``TDC_ES_URL``'s): their merges write the index outbox, the outbox and the indexing task send
each entity to its flow's index, search finds them on both paths and on the console, ``tdc
search reindex`` rebuilds every index and the reconcile index layer names a missing and a stale
document of each flow and sends them again."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import select, update

from demo.flows import pos, pur_mrb, sal_order
from demo.history import generate_history
from flows.declared import BY_NAME
from flows.registry import combine, routing
from models.storage import Storage
from reconcile.index import settled_versions
from reconcile.run import reconcile
from search.elastic import OrderIndex, configured_indexes
from search.find import find_orders
from search.outbox import OUTBOX, due_orders, send
from search.query import OrderQuery
from search.sql import search_sql
from tests.conftest import env_of
from tests.integration.helpers import ingest, run_chains, run_tdc

pytestmark = pytest.mark.integration

FLOWS = ("gqsh", "pos", "sal_order", "pur_mrb")
SOURCES = "gqsh,gqsh_pos,jd_erp"
ROUTED = combine(tuple(routing(BY_NAME[name]) for name in FLOWS))
POS_HEADER, SAL_HEADER = "dwd_gqsh_pos_order_t_order_info", "dwd_t_sal_order"


@pytest.fixture
def flows(fresh_storage, redis_client, elasticsearch_url) -> Iterator[tuple[Storage, Any, Any, Any, Any]]:  # type: ignore[no-untyped-def]
    """Storage running the four flows with an index under an alias of its own, and the processed
    histories of till sales, Kingdee sales orders, online orders and purchase returns; the indices
    are deleted afterwards."""
    alias = f"tdc-test-{uuid.uuid4().hex[:8]}"
    storage = fresh_storage("postgresql", TDC_SOURCE_DATABASES=SOURCES, TDC_FLOWS=",".join(FLOWS),
                            TDC_ES_URL=elasticsearch_url, TDC_ES_ALIAS=alias)
    for index in configured_indexes(storage.settings).values():
        index.init()
    sales, documents = pos.generate(40, seed=61, malformed=0), sal_order.generate(25, seed=62, malformed=0)
    orders = generate_history(30, seed=63, malformed=0)
    returns = pur_mrb.generate(20, seed=64, malformed=0)
    mixed = [line for trio in zip(sales.lines, documents.lines, orders.lines, strict=False) for line in trio]
    mixed += sales.lines[len(mixed) // 3:] + documents.lines[len(mixed) // 3:] + orders.lines[len(mixed) // 3:]
    mixed += returns.lines
    touched: set = set()
    for fmt in dict.fromkeys(f for f, _ in mixed):
        touched |= set(ingest(storage, redis_client, ROUTED, fmt, [line for f, line in mixed if f == fmt]).touched)
    run_chains(storage, redis_client, touched)
    yield storage, sales, documents, orders, returns
    for index in configured_indexes(storage.settings).values():
        index.client.options(ignore_status=404).indices.delete(index=f"{index.prefix}*")
        index.client.options(ignore_status=404).indices.delete_index_template(name=index.template)


def _outbox(storage: Storage) -> dict[str, int]:
    found = {}
    for database in storage.distinct_databases():
        with storage.read_engine(database).connect() as connection:
            found.update({r.order_id: r.version for r in connection.execute(select(OUTBOX))})
    return found


def _wide_versions(storage: Storage, flow: str) -> dict[str, int]:
    document = configured_indexes(storage.settings)[flow].document
    return {document.entity_id(row): row["version"]
            for row in search_sql(storage, OrderQuery(flow=flow, limit=10_000))}


def _sent(storage: Storage) -> dict[str, OrderIndex]:
    indexes = configured_indexes(storage.settings)
    send(storage, indexes, due_orders(storage, limit=10_000))
    for index in indexes.values():
        index.refresh()
    return indexes


def test_every_flows_merges_reach_its_own_index_and_search_finds_them(flows) -> None:
    # Given four flows' histories processed by chains that write the index outbox
    storage, sales, documents, orders, _ = flows
    waiting = _outbox(storage)
    # When the outbox is sent
    indexes = _sent(storage)
    # Then every entity of each flow waited at its wide row's version and is now in its flow's own
    # index (an alias of its own, TDC_ES_ALIAS standing for tdc-orders) at that version
    alias = storage.settings.es_alias
    assert {name: index.alias for name, index in indexes.items()} == {
        "gqsh": alias, "pos": f"{alias}-pos", "sal_order": f"{alias}-sal-order", "pur_mrb": f"{alias}-pur-mrb"}
    wide = {flow: _wide_versions(storage, flow) for flow in FLOWS}
    assert len(wide["pos"]) == len(sales.expected[POS_HEADER])
    assert len(wide["sal_order"]) == len(documents.expected[SAL_HEADER])
    assert len(wide["gqsh"]) == len(orders.order_ids) and wide["pur_mrb"]
    assert waiting == {entity: version for versions in wide.values() for entity, version in versions.items()}
    for flow in FLOWS:
        assert indexes[flow].versions(sorted(wide[flow])) == wide[flow], flow
        assert not any(indexes[flow].versions(sorted(wide[other])) for other in FLOWS if other != flow)
    assert _outbox(storage) == {}
    # And a store's till sales, a document by its id and a store's audited Kingdee orders come
    # out the same from the index and the wide rows, newest first, as the histories say
    store = next(iter(sales.expected[POS_HEADER].values()))["store_code"]
    till = OrderQuery(flow="pos", store_id=store, limit=1000)
    model = sorted((row for row in sales.expected[POS_HEADER].values() if row["store_code"] == store),
                   key=lambda row: (row["order_time"], row["order_no"]), reverse=True)
    by_index, by_sql = indexes["pos"].search(till), search_sql(storage, till)
    assert [o["order_no"] for o in by_index] == [o["order_no"] for o in by_sql] == [r["order_no"] for r in model]
    assert by_index == by_sql
    assert {line["sku_code"] for o in by_index for line in o["items"]}
    # (a deleted document keeps only its FID and status)
    fid, row = next((fid, row) for fid, row in documents.expected[SAL_HEADER].items() if row["status"] != 90)
    [found] = find_orders(storage, OrderQuery(order_id=f"sal_order:{fid}")).orders
    assert (found["FID"], found["FBILLNO"], found["FALLAMOUNT"]) == (fid, row["FBILLNO"], row["FALLAMOUNT"])
    assert len(found["entries"]) == row["entry_count"]
    audited = OrderQuery(flow="sal_order", store_id=row["store_id"], status=20, limit=1000)
    assert indexes["sal_order"].search(audited) == search_sql(storage, audited)
    assert [o["FID"] for o in search_sql(storage, audited)] == [
        r["FID"] for r in sorted((r for r in documents.expected[SAL_HEADER].values()
                                  if r["store_id"] == row["store_id"] and r["status"] == 20),
                                 key=lambda r: (r["FDATE"], r["FID"]), reverse=True)]
    # And the online orders answer as before, from their own index
    online = OrderQuery(limit=1000)
    assert [o["order_id"] for o in indexes["gqsh"].search(online)] == [o["order_id"] for o in search_sql(storage,
                                                                                                          online)]


def test_the_command_finds_and_reindexes_every_flow(flows) -> None:
    # Given four flows' entities in their indexes
    storage, sales, documents, _, _ = flows
    indexes = _sent(storage)
    before = {flow: _wide_versions(storage, flow) for flow in FLOWS}
    env = {**env_of(storage), "TDC_FLOWS": ",".join(FLOWS), "TDC_ES_URL": storage.settings.es_url or "",
           "TDC_ES_ALIAS": storage.settings.es_alias}
    order_no = next(iter(sales.expected[POS_HEADER]))
    # When every index is rebuilt by the command, and a till sale and a flow's documents are searched
    reindex = run_tdc(env, "search", "reindex")
    one = run_tdc(env, "search", "--order", f"pos:{order_no}", "--json")
    table = run_tdc(env, "search", "--flow", "sal_order", "--limit", "3")
    channel = run_tdc(env, "search", "--flow", "sal_order", "--channel", "app")
    # Then each flow's alias moved to its second index with every document at its wide version
    assert reindex.returncode == 0, reindex.stdout + reindex.stderr
    for flow, index in indexes.items():
        assert f"{flow}: reindexed into {index.alias}-v2" in reindex.stdout
        assert index.current() == f"{index.alias}-v2"
        index.refresh()
        assert index.versions(sorted(before[flow])) == before[flow]
    # And the sale is found in its index, the Kingdee orders shown with their own columns, and a
    # condition the flow does not declare refused
    assert one.returncode == 0 and "from Elasticsearch" in one.stderr, one.stderr
    assert [o["order_no"] for o in json.loads(one.stdout)] == [order_no]
    assert table.returncode == 0, table.stderr
    lines = table.stdout.strip().splitlines()
    assert lines[0].split() == ["order", "day", "store", "status", "member", "paid", "lines", "created"]
    # (a deleted document has no FDATE: it sorts last)
    newest = sorted((r for r in documents.expected[SAL_HEADER].values() if r["FDATE"] is not None),
                    key=lambda r: (r["FDATE"], r["FID"]), reverse=True)
    assert [int(line.split()[0]) for line in lines[1:]] == [r["FID"] for r in newest[:3]]
    assert channel.returncode == 2 and "flow 'sal_order' has no search condition 'channel'" in channel.stderr


def test_the_index_layer_compares_every_flows_documents(flows, redis_client) -> None:
    # Given four flows' entities in their indexes, and one settled entity of each flow whose
    # document is missing and one whose wide row moved on without its document
    storage, sales, documents, orders, returns = flows
    indexes = _sent(storage)
    days = [row["biz_date"] for row in sales.expected[POS_HEADER].values()]
    days += [row["biz_date"] for row in documents.expected[SAL_HEADER].values()]
    days += [row["biz_date"] for row in returns.expected["dwd_t_pur_mrb"].values()]
    first, last = min(d for d in days if d is not None), max(d for d in days if d is not None)
    assert reconcile(storage, redis_client, first, last, layers=["index"]).found == 0
    # (settled as the histories say: paid and not voided, audited and not voided or deleted)
    settled = {
        "pos": sorted(f"pos:{k}" for k, r in sales.expected[POS_HEADER].items()
                      if r["pay_time"] is not None and r["order_status"] != 90),
        "sal_order": sorted(f"sal_order:{k}" for k, r in documents.expected[SAL_HEADER].items()
                            if r["FDOCUMENTSTATUS"] == "C" and r["FCANCELSTATUS"] != "B"),
        "pur_mrb": sorted(entity for entity, (_, day) in settled_versions(storage, first, last).items()
                          if entity.startswith("pur_mrb:"))}
    assert all(len(ids) >= 2 for ids in settled.values()), settled
    wrong: dict[str, tuple[str, str]] = {}
    for flow, ids in settled.items():
        deleted, behind = ids[:2]
        index = indexes[flow]
        index.client.delete(index=index.alias, id=deleted, refresh=True)
        root, key = index.document.root, index.document.key
        with storage.order_transaction(behind) as connection:
            connection.execute(update(root).where(root.c[key] == index.document.key_of(behind))
                               .values(version=root.c.version + 1))
        wrong[flow] = (deleted, behind)
    versions = {entity: version for flow in settled for entity, version in _wide_versions(storage, flow).items()}
    # When the index layer is compared, then fixed
    found = reconcile(storage, redis_client, first, last, layers=["index"])
    fixed = reconcile(storage, redis_client, first, last, layers=["index"], fix=True, submit=lambda keys: None)
    # Then exactly those documents are named, sent again, and every index is whole
    assert {(d.order_id, d.column, d.expected, d.found) for d in found.diffs} == {
        item for deleted, behind in wrong.values() for item in (
            (deleted, "*", str(versions[deleted]), None),
            (behind, "version", str(versions[behind]), str(versions[behind] - 1)))}
    assert found.counts["index"]["orders"] >= sum(len(ids) for ids in settled.values())
    assert (fixed.status, fixed.remaining) == ("fixed", 0)
    for flow, (deleted, behind) in wrong.items():
        assert indexes[flow].versions([deleted, behind]) == {deleted: versions[deleted], behind: versions[behind]}
    assert reconcile(storage, redis_client, first, last, layers=["index"]).found == 0
    assert orders.order_ids  # the online orders were compared beside them, and agreed


def test_the_indexing_task_sends_every_flows_entries(flows, redis_client, monkeypatch) -> None:
    # Given four flows' entities waiting in the outbox, and the beat task's process configured alike
    from tasks import indexing

    storage = flows[0]
    waiting = _outbox(storage)
    monkeypatch.setattr(indexing, "get_settings", lambda: storage.settings)
    monkeypatch.setattr(indexing, "get_storage", lambda: storage)
    monkeypatch.setattr(indexing, "get_redis", lambda: redis_client)
    # When the outbox scan runs
    sent = indexing.index_pending.run()
    # Then every entry was sent to its flow's index at its wide version, and none waits
    assert sent == {"indexed": len(waiting), "stale": 0, "refused": 0}
    assert _outbox(storage) == {}
    for flow, index in configured_indexes(storage.settings).items():
        index.refresh()
        wide = _wide_versions(storage, flow)
        assert wide and index.versions(sorted(wide)) == wide


def test_the_console_lists_a_flows_entities_with_its_own_columns(flows) -> None:
    # Given till sales in their index and a console user
    import re
    from dataclasses import replace
    from urllib.parse import unquote

    from fastapi.testclient import TestClient

    from web.app import create_app
    from web.auth import hash_password

    storage, sales, _, _, _ = flows
    _sent(storage)
    console = Storage(replace(storage.settings, web_users={"ann": hash_password("pw")}, web_secret="s"))
    store = next(iter(sales.expected[POS_HEADER].values()))["store_code"]
    model = sorted((row for row in sales.expected[POS_HEADER].values() if row["store_code"] == store),
                   key=lambda row: (row["order_time"], row["order_no"]), reverse=True)
    # When a store's till sales are searched on the console
    try:
        with TestClient(create_app(console), follow_redirects=False) as client:
            token = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
            assert token is not None
            client.post("/login", data={"username": "ann", "password": "pw", "csrf": token.group(1), "next": "/"})
            page = client.get("/search", params={"flow": "pos", "store_id": store})
    finally:
        console.dispose()
    # Then the table has the flow's columns and each sale links to its entity's lineage
    assert page.status_code == 200, page.text
    headings = re.findall(r"<th[^>]*>([^<]+)</th>", page.text)
    assert headings == ["order", "day", "store", "status", "member", "paid", "lines", "created"]
    links = re.findall(r'class="order-link" href="/orders/([^"]+)">([^<]+)</a>', page.text)
    assert [(unquote(href), text) for href, text in links] == [(f"pos:{r['order_no']}", r["order_no"]) for r in model]
    assert "from Elasticsearch" in page.text
