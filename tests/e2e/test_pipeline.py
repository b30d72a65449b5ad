"""Real worker and beat processes on MariaDB, PostgreSQL, Redis and RabbitMQ, fed by ``tdc ingest``."""

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from kombu import Connection, Queue

from demo.check import differences
from demo.history import generate_history
from demo.processes import running, start_beat, start_worker
from models.storage import Storage
from pipeline.wide_rows import read_orders
from settings import load_settings

pytestmark = pytest.mark.e2e

QUEUES = ("tdc.ingest", "tdc.process", "tdc.warehouse", "tdc.scheduled")


def _tdc(env: dict[str, str], *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *arguments], env=env, capture_output=True,
                          text=True, timeout=300)


def _wait_for_rows(storage: Storage, history, seconds: float) -> list[str]:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while True:
        orders, items = read_orders(storage, history.order_ids)
        problems = differences(history.expected_orders, orders, "dwd_order")
        problems += differences(history.expected_items, items, "dwd_order_item")
        if not problems or time.monotonic() > deadline:
            return problems
        time.sleep(1)


@pytest.mark.parametrize(("input_format", "seed"), [("canal", 1), ("debezium", 2), ("canal", 3)])
def test_histories_through_real_workers_on_mariadb_match_whatever_the_arrival_order(
        service_env, rabbitmq, tmp_path: Path, input_format: str, seed: int) -> None:
    # Given initialised MariaDB shards, an empty broker, and a worker and beat running
    env = {**os.environ, **service_env, "TDC_RESCAN_INTERVAL_SECONDS": "2", "TDC_HOME": str(tmp_path)}
    assert _tdc(env, "init").returncode == 0
    with Connection(rabbitmq) as connection:
        for name in QUEUES:
            Queue(name)(connection.default_channel).declare()
            Queue(name)(connection.default_channel).purge()
    # 300 orders displaced up to 40 places, 3% duplicated, corrections and malformed lines mixed in
    history = generate_history(300, seed=seed, input_format=input_format)
    files = {}
    for fmt in (input_format, "business"):
        files[fmt] = tmp_path / f"{fmt}.jsonl"
        files[fmt].write_text("\n".join(line for f, line in history.lines if f == fmt) + "\n")
    with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                  start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        # When the history is ingested with the CLI, as files of JSON lines
        changes = _tdc(env, "ingest", "--format", input_format, str(files[input_format]))
        payments = _tdc(env, "ingest", "--format", "business", str(files["business"]))
        assert changes.returncode == 0, changes.stderr
        assert payments.returncode == 0, payments.stderr
        # Then every line is accounted for and the wide rows in MariaDB match the history
        quarantined = sum(int(r.stdout.split(" quarantined")[0].rsplit(" ", 1)[-1]) for r in (changes, payments))
        assert quarantined == history.malformed
        storage = Storage(load_settings(env))
        problems = _wait_for_rows(storage, history, 300)
        storage.dispose()
    assert problems == [], (tmp_path / "worker.log").read_text()[-4000:]


def _processes_with(setting: str) -> list[int]:
    """Pids of live processes whose environment holds ``setting`` (workers inherit the demo's)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                environment = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if setting.encode() in environment:
                found.append(int(entry.name))
    return found


def test_the_demo_runs_on_the_embedded_default_and_leaves_nothing_behind(tmp_path: Path) -> None:
    # Given nothing configured but a fresh TDC_HOME
    env = {k: v for k, v in os.environ.items() if not k.startswith("TDC_")}
    env["TDC_HOME"] = str(tmp_path / "home")
    # When the demo runs
    result = subprocess.run([sys.executable, "-m", "cli.main", "demo", "--orders", "40", "--timeout", "300"],
                            env=env, capture_output=True, text=True, timeout=600)
    # Then it reports every order matching and exits 0
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK: every order matches" in result.stdout
    # And no worker, beat or embedded Redis process is left
    assert _processes_with(f"TDC_HOME={tmp_path / 'home'}") == []
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "home")], capture_output=True).stdout == b""
    assert not (tmp_path / "home" / "redis.sock").exists()
