"""Per-order leases on the real Redis and fencing on real MariaDB: a lease is held once, its
token only grows, it is renewed and released only by its holder, a dead holder is taken over
once its lease lapses, and a chain message carrying an old token writes nothing."""

import time

import pytest
from sqlalchemy import select

from chain.steps import aggregate_orders, check_tasks, finish_tasks, merge_orders
from demo.history import generate_history
from demo.tables import ONLINE as DEFAULT_SCHEMA
from demo.tables import ORDER_TABLE as DwdOrder
from dimensions.lookup import RedisDimensions
from flows.registry import ACCEPTED as ORDER_FLOW
from models.sharded import TaskStatus, task_table
from models.warehouse import LEDGERS
from reliability.counters import COUNTERS, FENCED
from reliability.leases import FENCE_KEY, OrderLeases, lease_name
from settings import load_settings
from tests.conftest import new_order_id
from tests.factories import OrderHeaderFactory, OrderItemFactory, canal
from tests.integration.helpers import ingest, leased_keys

AdsOrderLedger = LEDGERS["gqsh"]

OrderSnapshot = DEFAULT_SCHEMA.snapshots

pytestmark = pytest.mark.integration


def _leases(redis_client, **env: str) -> OrderLeases:  # type: ignore[no-untyped-def]
    return OrderLeases(redis_client, load_settings({"TDC_HOME": "/tmp/tdc-leases", **env}))


def test_a_lease_is_held_once_renewed_and_released_only_by_its_holder(redis_client) -> None:
    leases = _leases(redis_client)
    order_id, other = new_order_id(), new_order_id()
    first = leases.acquire([order_id, other])
    assert set(first) == {order_id, other}
    assert leases.acquire([order_id]) == {}
    # A running lease when taken, the queued one once its chain is in the broker, and the running
    # one again when a worker holds it
    assert 50_000 < redis_client.pttl(lease_name(order_id)) <= 60_000
    assert leases.renew({order_id: first[order_id]}, queued=True) == set()
    assert 1_700_000 < redis_client.pttl(lease_name(order_id)) <= 1_800_000
    assert leases.renew({order_id: first[order_id]}) == set()
    assert 50_000 < redis_client.pttl(lease_name(order_id)) <= 60_000
    assert leases.renew({order_id: first[order_id] - 1}) == {order_id}
    leases.release({order_id: first[order_id] - 1})
    assert redis_client.exists(lease_name(order_id))
    leases.release({order_id: first[order_id]})
    assert not redis_client.exists(lease_name(order_id))
    again = leases.acquire([order_id])
    assert again[order_id] > max(first.values())


def test_a_batch_of_leases_takes_one_script_call_per_batch_and_answers_for_each_order(redis_client) -> None:
    from reliability.leases import SCRIPT_BATCH

    leases = _leases(redis_client)
    # Given more orders than one script call carries, one of them held by another chain already
    orders = [new_order_id("LB") for _ in range(SCRIPT_BATCH + 20)]
    held_elsewhere = leases.acquire([orders[7]])
    warm = leases.acquire([new_order_id("LW")])  # (each script loaded: a fresh Redis would add a load)
    leases.renew(warm)
    leases.release(warm)
    calls: list[str] = []
    real = redis_client.execute_command

    def counted(*args, **options):  # type: ignore[no-untyped-def]
        calls.append(str(args[0]))
        return real(*args, **options)

    redis_client.execute_command = counted
    try:
        # When a step takes, renews and releases them
        taken = leases.acquire(orders)
        script_calls = len(calls)
        lost = leases.renew({**taken, orders[7]: held_elsewhere[orders[7]] - 1})
        leases.release({order_id: token for order_id, token in taken.items() if order_id != orders[-1]})
    finally:
        del redis_client.execute_command
    # Then each was two script calls, not one per order
    assert script_calls == 2 and [c for c in calls if c != "EVALSHA"] == [] and len(calls) == 6
    # And every order got its own answer: all but the held one taken, with distinct growing
    # tokens above the other holder's; the held one lost on renewal; only what was released is gone
    assert set(taken) == set(orders) - {orders[7]}
    assert len(set(taken.values())) == len(taken) and min(taken.values()) > held_elsewhere[orders[7]]
    assert lost == {orders[7]}
    assert redis_client.exists(lease_name(orders[-1])) and redis_client.exists(lease_name(orders[7]))
    assert not any(redis_client.exists(lease_name(o)) for o in orders[:7] + orders[8:-1])


def test_tokens_keep_growing_when_redis_loses_the_counter(redis_client) -> None:
    leases = _leases(redis_client)
    order_id = new_order_id()
    before = leases.acquire([order_id])[order_id]
    leases.release({order_id: before})
    # (as after a restart of a Redis that keeps nothing on disk)
    redis_client.delete(FENCE_KEY)
    assert leases.acquire([order_id])[order_id] > before


def test_a_holder_that_stops_renewing_is_taken_over_and_a_lapsed_lease_is_taken_back(redis_client) -> None:
    leases = _leases(redis_client, TDC_LEASE_SECONDS="1", TDC_QUEUED_LEASE_SECONDS="1")
    order_id = new_order_id()
    dead = leases.acquire([order_id])[order_id]
    time.sleep(1.2)
    # Nobody took it: the holder may take it back under its token
    assert leases.renew({order_id: dead}) == set()
    time.sleep(1.2)
    newer = leases.acquire([order_id])[order_id]
    assert newer > dead
    assert leases.renew({order_id: dead}) == {order_id}


def test_a_lease_is_not_renewed_past_the_ceiling(redis_client) -> None:
    leases = _leases(redis_client, TDC_LOCK_SECONDS="1")
    order_id = new_order_id()
    token = leases.acquire([order_id])[order_id]
    ttl = redis_client.pttl(lease_name(order_id))
    time.sleep(2.1)
    # Renewing is refused (not lost, not extended): the lease runs out and the rescan takes over
    assert leases.renew({order_id: token}) == set()
    assert redis_client.pttl(lease_name(order_id)) <= ttl - 2000


def _order_lines(order_id: str) -> list[str]:
    header = OrderHeaderFactory(order_id=order_id)
    return [canal("gqsh_order", header), canal("gqsh_order_item", OrderItemFactory(order_id=order_id))]


def test_a_chain_message_with_an_old_token_writes_nothing(storage, redis_client) -> None:
    # Given an order whose first chain checked it and then died, and whose lease was taken over
    order_id = new_order_id()
    ingest(storage, redis_client, ORDER_FLOW, "canal", _order_lines(order_id))
    leases = OrderLeases(redis_client, storage.settings)
    settings = storage.settings
    [dead] = leased_keys(leases, [(order_id, "SUBMIT")])
    dead_ready, _ = check_tasks(storage, leases, settings, [dead])
    assert [k["order_id"] for k in dead_ready] == [order_id]
    redis_client.delete(lease_name(order_id))  # its lease lapsed
    [newer] = leased_keys(leases, [(order_id, "SUBMIT")])
    assert newer["token"] > dead["token"]
    newer_ready, _ = check_tasks(storage, leases, settings, [newer])
    fenced_before = int(redis_client.hget(COUNTERS, FENCED) or 0)
    # When the dead holder's late merge, aggregate and finish arrive (its lease is gone, so it
    # would take it back: only storage's fence stands in its way)
    redis_client.delete(lease_name(order_id))
    dims = RedisDimensions(redis_client)
    assert merge_orders(storage, leases, settings, dims, dead_ready) == []
    assert aggregate_orders(storage, leases, settings, dead_ready) == dead_ready  # nothing to aggregate yet
    assert finish_tasks(storage, leases, dead_ready) == []
    # Then it wrote no wide row, no snapshot, and did not finish the task; and it was counted
    shard = storage.shard_of(order_id)
    with storage.engine_for_order(order_id).connect() as connection:
        assert connection.execute(select(DwdOrder.c.order_id).where(DwdOrder.c.order_id == order_id)).first() is None
        snapshot = select(OrderSnapshot.c.id).where(OrderSnapshot.c.order_id == order_id)
        assert connection.execute(snapshot).first() is None
        task = connection.execute(select(task_table(shard)).where(task_table(shard).c.order_id == order_id)).one()
    assert task.status == TaskStatus.RUNNING
    assert int(redis_client.hget(COUNTERS, FENCED) or 0) - fenced_before == 2
    # And the newer holder's chain writes and finishes as usual
    redis_client.delete(lease_name(order_id))
    merged = merge_orders(storage, leases, settings, dims, newer_ready)
    finish_tasks(storage, leases, aggregate_orders(storage, leases, settings, merged))
    with storage.engine_for_order(order_id).connect() as connection:
        assert connection.execute(select(DwdOrder.c.version).where(DwdOrder.c.order_id == order_id)).scalar() == 1


def test_the_warehouse_ignores_an_aggregate_step_with_an_older_token(storage, redis_client) -> None:
    # Given a paid order whose contribution a chain with a newer token has applied
    history = generate_history(4, seed=71, malformed=0)
    from tests.integration.helpers import process_history
    process_history(storage, redis_client, history)
    paid = [o for o, row in history.expected_orders.items() if row["paid_at"] is not None and row["status"] != 50]
    order_id = paid[0]
    leases = OrderLeases(redis_client, storage.settings)
    with storage.dws_engine.connect() as connection:
        applied = connection.execute(select(AdsOrderLedger).where(AdsOrderLedger.c.order_id == order_id)).one()
    assert applied.fence is not None
    # When a step with an older token, and a wide row version the ledger has not seen, arrives
    with storage.dws_engine.begin() as connection:
        connection.execute(AdsOrderLedger.update().where(AdsOrderLedger.c.order_id == order_id).values(
            wide_version=0))
    stale = [{"order_id": order_id, "operation_type": "PAY", "token": applied.fence - 1}]
    redis_client.delete(lease_name(order_id))
    assert aggregate_orders(storage, leases, storage.settings, stale) == []
    # Then the ledger is untouched
    with storage.dws_engine.connect() as connection:
        after = connection.execute(select(AdsOrderLedger).where(AdsOrderLedger.c.order_id == order_id)).one()
    assert (after.wide_version, after.fence, after.contribution) == (0, applied.fence, applied.contribution)


def test_tdc_ingest_hands_its_chains_to_the_broker_with_the_queued_lease(storage, redis_client) -> None:
    # Given an order's lines, and a broker no worker reads (a Redis database of the test's own)
    from tests.conftest import REDIS, env_of
    from tests.integration.helpers import run_tdc

    order_id = new_order_id()
    broker = REDIS.rsplit("/", 1)[0] + "/13"
    path = f"/tmp/tdc-leases-{order_id}.jsonl"
    with open(path, "w") as lines:
        lines.write("\n".join(_order_lines(order_id)) + "\n")
    # When tdc ingest takes it in and submits its chain
    result = run_tdc({**env_of(storage), "TDC_BROKER_URL": broker}, "ingest", "--format", "canal", path)
    # Then the order is held for the queued lease (the chain is safely in the broker)
    assert result.returncode == 0, result.stderr
    assert "1 tasks submitted" in result.stdout
    assert redis_client.pttl(lease_name(order_id)) > 1_700_000
    import redis as redis_module
    redis_module.Redis.from_url(broker).flushdb()
    redis_client.delete(lease_name(order_id))
