"""Store and SKU dimensions in the real Redis: CDC renames reach orders merged afterwards, a
displaced older change never wins, and the T+1 reload from the PostgreSQL warehouse replaces
entries in place without a window where look-ups miss."""

import datetime as dt
import json
import threading
import uuid

import pytest
from sqlalchemy import insert, select

from chain.wide_rows import read_orders
from dimensions.lookup import RedisDimensions, dimension_key
from dimensions.offline import load_offline_dimensions
from flows.registry import ACCEPTED as ORDER_FLOW
from models.orders import QuarantinedInput
from models.warehouse import OFFLINE_DIMENSIONS
from tests.factories import T0, OrderHeaderFactory, OrderItemFactory, PaymentWriteFactory, business, canal
from tests.integration.helpers import ingest, run_chains

pytestmark = pytest.mark.integration


def _store(store_id: str, name: str) -> dict[str, str]:
    return {"store_id": store_id, "store_name": name, "city": "Hangzhou", "region": "East"}


def _feed(storage, client, fmt: str, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
    run_chains(storage, client, ingest(storage, client, ORDER_FLOW, fmt, lines).touched)


def test_a_renamed_store_shows_its_new_name_in_orders_merged_after_the_change(storage, redis_client) -> None:
    # Given a store and an order submitted under its old name
    store_id = f"S{uuid.uuid4().hex[:10]}"
    header = OrderHeaderFactory(store_id=store_id)
    order_id = header["order_id"]
    _feed(storage, redis_client, "canal", [
        canal("dim_store_shop", _store(store_id, "Old Name"), at=T0 - dt.timedelta(days=1)),
        canal("gqsh_order", header), canal("gqsh_order_item", OrderItemFactory(order_id=order_id))])
    assert read_orders(storage, [order_id])[0][order_id]["store_name"] == "Old Name"
    # When the store is renamed, then an older rename arrives late, then the order is paid
    renamed_at = T0 + dt.timedelta(minutes=1)
    _feed(storage, redis_client, "canal", [
        canal("dim_store_shop", _store(store_id, "New Name"), kind="update", at=renamed_at,
              before=_store(store_id, "Old Name")),
        canal("dim_store_shop", _store(store_id, "Stale Name"), kind="update", at=T0 - dt.timedelta(hours=1),
              before=_store(store_id, "Old Name"))])
    paid = {**header, "status": 20, "paid_at": T0 + dt.timedelta(minutes=10)}
    _feed(storage, redis_client, "canal", [canal("gqsh_order", paid, kind="update", before=header,
                                                 at=paid["paid_at"])])
    _feed(storage, redis_client, "business", [business(PaymentWriteFactory(order_id=order_id))])
    # Then the order merged after the change carries the new name, and so does a new order
    second = OrderHeaderFactory(store_id=store_id)
    _feed(storage, redis_client, "canal", [
        canal("gqsh_order", second), canal("gqsh_order_item", OrderItemFactory(order_id=second["order_id"]))])
    orders, _ = read_orders(storage, [order_id, second["order_id"]])
    assert orders[order_id]["status"] == 20
    assert orders[order_id]["store_name"] == "New Name"
    assert orders[second["order_id"]]["store_name"] == "New Name"


def test_a_store_missing_at_merge_time_is_filled_when_the_order_is_next_merged(storage, redis_client) -> None:
    store_id = f"S{uuid.uuid4().hex[:10]}"
    header = OrderHeaderFactory(store_id=store_id)
    order_id = header["order_id"]
    _feed(storage, redis_client, "canal", [canal("gqsh_order", header),
                                           canal("gqsh_order_item", OrderItemFactory(order_id=order_id))])
    assert read_orders(storage, [order_id])[0][order_id]["store_name"] is None
    _feed(storage, redis_client, "canal", [canal("dim_store_shop", _store(store_id, "Late Store"))])
    paid = {**header, "status": 20, "paid_at": T0 + dt.timedelta(minutes=10)}
    _feed(storage, redis_client, "canal", [canal("gqsh_order", paid, kind="update", before=header,
                                                 at=paid["paid_at"])])
    _feed(storage, redis_client, "business", [business(PaymentWriteFactory(order_id=order_id))])
    assert read_orders(storage, [order_id])[0][order_id]["store_name"] == "Late Store"


def test_the_offline_reload_replaces_older_entries_in_place_and_keeps_newer_ones(storage, redis_client) -> None:
    # Given offline store rows in the warehouse: many known to Redis from an older load, one
    # that CDC renamed after the warehouse copy was taken, one Redis has never seen
    tag = uuid.uuid4().hex[:8]
    table = OFFLINE_DIMENSIONS["store"][1]
    yesterday, today = dt.datetime(2026, 11, 20, 1), dt.datetime(2026, 11, 21, 1)
    known = [f"S{tag}{n:04d}" for n in range(1500)]
    cdc_renamed, unseen = f"S{tag}-cdc", f"S{tag}-new"
    with storage.dws_engine.begin() as connection:
        connection.execute(insert(table), [_store(s, f"old {s}") | {"updated_at": yesterday} for s in known]
                           + [_store(cdc_renamed, "old cdc") | {"updated_at": yesterday}])
    load_offline_dimensions(storage.dws_engine, redis_client, "store")
    _feed(storage, redis_client, "canal", [canal("dim_store_shop", _store(cdc_renamed, "renamed by CDC"),
                                                 kind="update", at=today + dt.timedelta(hours=1),
                                                 before=_store(cdc_renamed, "old cdc"))])
    with storage.dws_engine.begin() as connection:
        connection.execute(table.update().values(store_name=table.c.store_id + " v2", updated_at=today)
                           .where(table.c.store_id.like(f"S{tag}%")))
        connection.execute(insert(table), [_store(unseen, "brand new") | {"updated_at": today}])
    # When the T+1 reload runs while a reader keeps looking the stores up
    misses: list[str] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            for store_id in known[::50]:
                if not redis_client.hget(dimension_key("store", store_id), "store_name"):
                    misses.append(store_id)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        loads = load_offline_dimensions(storage.dws_engine, redis_client, "store")
    finally:
        stop.set()
        thread.join()
    # Then older entries were replaced, the newer CDC value kept, the unseen one added, none missed
    dims = RedisDimensions(redis_client)
    assert misses == []
    assert dims.get("store", known[7])["store_name"] == f"{known[7]} v2"
    assert dims.get("store", cdc_renamed)["store_name"] == "renamed by CDC"
    assert dims.get("store", unseen)["store_name"] == "brand new"
    assert loads[0].written >= len(known) + 1


def test_each_dimension_change_gets_a_verdict_and_an_ambiguous_one_is_kept(storage, redis_client) -> None:
    # Given a store written by a Canal change without GTIDs (ordered by its time alone)
    store_id = f"S{uuid.uuid4().hex[:10]}"

    def change(name: str, second: int, gtid: str | None = None) -> str:
        message = json.loads(canal("dim_store_shop", _store(store_id, name), kind="update",
                                   at=T0 + dt.timedelta(seconds=second)))
        message["gtid"] = gtid
        return json.dumps(message)

    first = ingest(storage, redis_client, ORDER_FLOW, "canal", [change("Old", 0)])
    # When the same change, another one in the same second, and an older one arrive
    again = ingest(storage, redis_client, ORDER_FLOW, "canal", [change("Old", 0)])
    same_second = ingest(storage, redis_client, ORDER_FLOW, "canal", [change("Other", 0)])
    newer = ingest(storage, redis_client, ORDER_FLOW, "canal", [change("New", 1)])
    # Then each is counted for what it did, and the one that cannot be ordered is kept, not applied
    assert (first.accepted, again.duplicated, same_second.ambiguous, newer.accepted) == (1, 1, 1, 1)
    assert same_second.accepted == 0
    with storage.shard_engine(0).connect() as connection:
        kept = connection.execute(select(QuarantinedInput.reason).where(
            QuarantinedInput.raw == change("Other", 0))).scalars().all()
    assert len(kept) == 1 and kept[0].startswith("ambiguous order: store")
    assert RedisDimensions(redis_client).get("store", store_id)["store_name"] == "New"
