"""A store rename merges again exactly the open orders of that store (the reverse index the
merge keeps in each shard database), in bounded batches, through the normal chain; a pass that
dies half-way leaves the refresh pending, and a rename arriving during a pass is not lost."""

import datetime as dt
import uuid

import pytest
from sqlalchemy import select, update

from chain.wide_rows import USES_TABLE, read_orders
from dimensions.refresh import pending
from flows.registry import ACCEPTED as ORDER_FLOW
from tasks import refresh
from tasks.refresh import refresh_dimensions
from tests.factories import T0, OrderHeaderFactory, OrderItemFactory, canal
from tests.integration.helpers import ingest, run_chains

pytestmark = pytest.mark.integration

#: Clear an entry as soon as a pass has swept it (the default waits two leases for late merges).
NOW = dt.timedelta(0)


def _store(store_id: str, name: str) -> dict[str, str]:
    return {"store_id": store_id, "store_name": name, "city": "Hangzhou", "region": "East"}


def _feed(storage, client, lines: list[str]) -> None:  # type: ignore[no-untyped-def]
    run_chains(storage, client, ingest(storage, client, ORDER_FLOW, "canal", lines).touched)


def _orders(storage, client, store_id: str, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    headers = [OrderHeaderFactory(store_id=store_id) for _ in range(count)]
    _feed(storage, client, [line for h in headers for line in (
        canal("gqsh_order", h), canal("gqsh_order_item", OrderItemFactory(order_id=h["order_id"])))])
    return [h["order_id"] for h in headers]


def _rename(storage, client, store_id: str, old: str, new: str, minutes: int = 1) -> None:  # type: ignore[no-untyped-def]
    _feed(storage, client, [canal("dim_store_shop", _store(store_id, new), kind="update",
                                  at=T0 + dt.timedelta(minutes=minutes), before=_store(store_id, old))])


def _settle(storage, order_id: str) -> None:  # type: ignore[no-untyped-def]
    """Make an order's last merge a month old: it is no longer open."""
    with storage.order_transaction(order_id) as connection:
        connection.execute(update(USES_TABLE).where(USES_TABLE.c.order_id == order_id).values(
            used_at=dt.datetime(2000, 1, 1)))


def _setup(storage, client):  # type: ignore[no-untyped-def]
    renamed, other = f"S{uuid.uuid4().hex[:10]}", f"S{uuid.uuid4().hex[:10]}"
    _feed(storage, client, [canal("dim_store_shop", _store(renamed, "Old Name"), at=T0 - dt.timedelta(days=1)),
                            canal("dim_store_shop", _store(other, "Other"), at=T0 - dt.timedelta(days=1))])
    made = renamed, other, _orders(storage, client, renamed, 5), _orders(storage, client, other, 2)
    # The stores' first rows are changes too: their refreshes find the orders merged since, unchanged.
    run_chains(storage, client, refresh_dimensions(storage, client, submit=False, settle=NOW).due)
    return made


def test_a_store_rename_re_merges_its_open_orders_and_only_those(storage, redis_client) -> None:
    # Given five orders of a store, one of them settled a month ago, and two orders of another store
    renamed, other, mine, theirs = _setup(storage, redis_client)
    _settle(storage, mine[0])
    before, _ = read_orders(storage, mine + theirs)
    assert {before[o]["store_name"] for o in mine} == {"Old Name"}
    # When the store is renamed through CDC
    _rename(storage, redis_client, renamed, "Old Name", "New Name")
    assert ("store", renamed) in {(p.dimension, p.key) for p in pending(redis_client)}
    # And a refresh pass runs, two orders per batch, and the chains it made due
    report = refresh_dimensions(storage, redis_client, batch=2, submit=False, settle=NOW)
    assert sorted(o for o, _ in report.due) == sorted(mine[1:])
    run_chains(storage, redis_client, report.due)
    # Then exactly the four open orders of that store were merged again, with the new name
    after, _ = read_orders(storage, mine + theirs)
    assert {o: after[o]["store_name"] for o in mine[1:]} == dict.fromkeys(mine[1:], "New Name")
    assert [o for o in mine + theirs if after[o]["version"] != before[o]["version"]] == mine[1:]
    assert after[mine[0]]["store_name"] == "Old Name"
    assert {after[o]["store_name"] for o in theirs} == {"Other"}
    # And each re-merge is the operation it merged last, so the row reads as before but for the name
    assert {after[o]["last_operation"] for o in mine[1:]} == {before[mine[1]]["last_operation"]}
    # And the refresh is no longer pending
    assert ("store", renamed) not in {(p.dimension, p.key) for p in pending(redis_client)}


def test_a_pass_that_dies_half_way_leaves_the_refresh_for_the_next(storage, redis_client, monkeypatch) -> None:
    # Given four open orders of a store, renamed
    renamed, _, mine, _ = _setup(storage, redis_client)
    _rename(storage, redis_client, renamed, "Old Name", "New Name")
    # When the pass dies after its first batch of two
    real, calls = refresh._due_again, []

    def dying(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:
            raise ConnectionError("worker lost")
        return real(*args, **kwargs)
    monkeypatch.setattr(refresh, "_due_again", dying)
    with pytest.raises(ConnectionError):
        refresh_dimensions(storage, redis_client, batch=2, submit=False, settle=NOW)
    monkeypatch.setattr(refresh, "_due_again", real)
    # Then the refresh is still pending, and the next pass makes every open order due
    assert ("store", renamed) in {(p.dimension, p.key) for p in pending(redis_client)}
    report = refresh_dimensions(storage, redis_client, batch=2, submit=False, settle=NOW)
    run_chains(storage, redis_client, report.due)
    after, _ = read_orders(storage, mine)
    assert {after[o]["store_name"] for o in mine} == {"New Name"}


def test_a_rename_during_a_pass_is_refreshed_by_the_next(storage, redis_client, monkeypatch) -> None:
    # Given a renamed store whose refresh pass is running
    renamed, _, mine, _ = _setup(storage, redis_client)
    _rename(storage, redis_client, renamed, "Old Name", "Second Name")
    real = refresh._due_again

    def renamed_meanwhile(*args, **kwargs):  # type: ignore[no-untyped-def]
        due = real(*args, **kwargs)
        if not renamed_meanwhile.done:  # type: ignore[attr-defined]
            renamed_meanwhile.done = True  # type: ignore[attr-defined]
            _rename(storage, redis_client, renamed, "Second Name", "Third Name", minutes=2)
        return due
    renamed_meanwhile.done = False  # type: ignore[attr-defined]
    monkeypatch.setattr(refresh, "_due_again", renamed_meanwhile)
    first = refresh_dimensions(storage, redis_client, submit=False, settle=NOW)
    monkeypatch.setattr(refresh, "_due_again", real)
    # Then the pass does not clear the newer change: it stays pending for the next pass
    assert ("store", renamed) in {(p.dimension, p.key) for p in pending(redis_client)}
    second = refresh_dimensions(storage, redis_client, submit=False, settle=NOW)
    run_chains(storage, redis_client, first.due + second.due)
    after, _ = read_orders(storage, mine)
    assert {after[o]["store_name"] for o in mine} == {"Third Name"}


def test_an_order_moved_to_another_store_is_no_longer_refreshed_by_the_first(storage, redis_client) -> None:
    # Given an order merged in one store, then corrected to another
    first, second, _, _ = _setup(storage, redis_client)
    header = OrderHeaderFactory(store_id=first)
    order_id = header["order_id"]
    _feed(storage, redis_client, [canal("gqsh_order", header),
                                  canal("gqsh_order_item", OrderItemFactory(order_id=order_id))])
    moved = {**header, "store_id": second}
    _feed(storage, redis_client, [canal("gqsh_order", moved, kind="update", before=header,
                                        at=T0 + dt.timedelta(minutes=5))])
    assert read_orders(storage, [order_id])[0][order_id]["store_name"] == "Other"
    # Then the reverse index holds it under the second store only
    with storage.engine_for_order(order_id).connect() as connection:
        uses = set(connection.execute(select(USES_TABLE.c.dimension, USES_TABLE.c.dim_key).where(
            USES_TABLE.c.order_id == order_id)).all())
    assert uses == {("store", second)}


def test_an_entry_is_kept_a_while_and_a_later_sweep_takes_the_entities_merged_since(storage, redis_client) -> None:
    # Given a renamed store whose open orders a pass swept, keeping the entry for late merges
    renamed, _, mine, _ = _setup(storage, redis_client)
    _rename(storage, redis_client, renamed, "Old Name", "New Name")
    first = refresh_dimensions(storage, redis_client, submit=False, settle=dt.timedelta(hours=1))
    assert sorted(o for o, _ in first.due) == sorted(mine)
    assert ("store", renamed) in {(p.dimension, p.key) for p in pending(redis_client)}
    run_chains(storage, redis_client, first.due)
    # When another order of the store is merged after the sweep (as a merge that read the old
    # name before the rename and committed late would be)
    late = _orders(storage, redis_client, renamed, 1)
    # Then the next sweep takes the orders merged since the first one began
    second = refresh_dimensions(storage, redis_client, submit=False, settle=NOW)
    assert late[0] in {o for o, _ in second.due}
    assert ("store", renamed) not in {(p.dimension, p.key) for p in pending(redis_client)}


def test_a_newer_copy_of_the_same_values_refreshes_nothing(storage, redis_client) -> None:
    renamed, _, _, _ = _setup(storage, redis_client)
    _feed(storage, redis_client, [canal("dim_store_shop", _store(renamed, "Old Name"), kind="update",
                                        at=T0 + dt.timedelta(hours=2), before=_store(renamed, "Old Name"))])
    assert ("store", renamed) not in {(p.dimension, p.key) for p in pending(redis_client)}


def test_an_order_merged_after_the_change_is_not_merged_again(storage, redis_client) -> None:
    # Given a renamed store, one of whose orders was merged (began its merge) after the rename
    renamed, _, mine, _ = _setup(storage, redis_client)
    _rename(storage, redis_client, renamed, "Old Name", "New Name")
    with storage.order_transaction(mine[0]) as connection:
        connection.execute(update(USES_TABLE).where(USES_TABLE.c.order_id == mine[0]).values(
            used_at=dt.datetime.now(dt.UTC).replace(tzinfo=None) + dt.timedelta(minutes=1)))
    # Then the refresh merges the others, not that one: it read the new name already
    report = refresh_dimensions(storage, redis_client, submit=False, settle=NOW)
    assert sorted(o for o, _ in report.due) == sorted(mine[1:])
