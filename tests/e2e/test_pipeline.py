"""Real worker and beat processes on MariaDB, PostgreSQL, Redis and RabbitMQ, fed by ``tdc ingest``:
wide rows and ADS tables exactly as the history says."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from demo.history import generate_history
from demo.processes import running, start_beat, start_worker
from models.storage import Storage
from tests.e2e.helpers import run_tdc, wait_until_matching, worker_env

pytestmark = pytest.mark.e2e


def _run_history(storage: Storage, broker: str, tmp_path: Path, history, input_format: str,  # type: ignore[no-untyped-def]
                 concurrency: int) -> list[str]:
    """Ingest ``history`` with `tdc ingest` while a worker and beat run; the differences left."""
    env = worker_env(storage, broker, tmp_path)
    files = {}
    for fmt in (input_format, "business"):
        files[fmt] = tmp_path / f"{fmt}.jsonl"
        files[fmt].write_text("\n".join(line for f, line in history.lines if f == fmt) + "\n")
    with running([start_worker(env, tmp_path / "worker.log", concurrency=concurrency),
                  start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        changes = run_tdc(env, "ingest", "--format", input_format, str(files[input_format]))
        payments = run_tdc(env, "ingest", "--format", "business", str(files["business"]))
        assert changes.returncode == 0, changes.stderr
        assert payments.returncode == 0, payments.stderr
        quarantined = sum(int(r.stdout.split(" quarantined")[0].rsplit(" ", 1)[-1]) for r in (changes, payments))
        assert quarantined == history.malformed
        problems = wait_until_matching(storage, history, 300)
    if problems:
        print((tmp_path / "worker.log").read_text()[-4000:])
    return problems


@pytest.mark.parametrize(("input_format", "seed", "warehouse"),
                         [("canal", 1, "postgresql"), ("debezium", 2, "mariadb"), ("canal", 3, "postgresql")])
def test_histories_through_real_workers_match_whatever_the_arrival_order(
        fresh_storage, rabbitmq_vhost, tmp_path: Path, input_format: str, seed: int, warehouse: str) -> None:
    # Given fresh MariaDB shards and warehouse, a RabbitMQ virtual host of its own, and a worker and beat running;
    # 300 orders displaced up to 40 places, 3% duplicated, corrections and malformed lines mixed in
    storage = fresh_storage(warehouse)
    history = generate_history(300, seed=seed, input_format=input_format)
    # When the history is ingested with the CLI, as files of JSON lines
    problems = _run_history(storage, rabbitmq_vhost, tmp_path, history, input_format, concurrency=2)
    # Then every line is accounted for, and the wide rows and the ADS tables match the history
    assert problems == []


@pytest.mark.parametrize("warehouse", ["postgresql", "mariadb"])
def test_four_worker_processes_on_one_store_and_day_lose_no_sale(fresh_storage, rabbitmq_vhost, tmp_path: Path,
                                                                 warehouse: str) -> None:
    # Given 250 orders, all in one store and paid the same morning, with refunds and corrections
    storage = fresh_storage(warehouse)
    history = generate_history(250, seed=21, stores=1, span_minutes=60, displacement=10)
    days = {o["paid_at"].date() for o in history.expected_orders.values() if o["paid_at"]}
    assert len(days) == 1
    # When four worker processes drain them at once
    problems = _run_history(storage, rabbitmq_vhost, tmp_path, history, "canal", concurrency=4)
    # Then the store's day, its SKUs and the day's total hold every sale exactly once
    assert problems == []


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
    assert "OK: every order and every ADS row matches" in result.stdout
    # And no worker, beat or embedded Redis process is left
    assert _processes_with(f"TDC_HOME={tmp_path / 'home'}") == []
    assert subprocess.run(["pgrep", "-f", str(tmp_path / "home")], capture_output=True).stdout == b""
    assert not (tmp_path / "home" / "redis.sock").exists()


@pytest.mark.parametrize("flow", ["pos", "sal_order", "pur_mrb", "stk_inventory"])
def test_each_flows_demo_runs_exact_on_the_embedded_default(tmp_path: Path, flow: str) -> None:
    # Given nothing configured but a fresh TDC_HOME (the demo adds its flow to TDC_FLOWS itself)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TDC_")}
    env["TDC_HOME"] = str(tmp_path / "home")
    # When the flow's demo runs, with displaced, duplicated and malformed lines
    result = subprocess.run([sys.executable, "-m", "cli.main", "demo", "--flow", flow, "--orders", "40",
                             "--timeout", "300"], env=env, capture_output=True, text=True, timeout=600)
    # Then every wide row and ADS cell matches its generator's model, every bad line is quarantined
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK: every wide row and every ADS row matches" in result.stdout
    assert not (tmp_path / "home" / "redis.sock").exists()


def test_bench_throughput_runs_both_sides_and_checks_the_outputs(fresh_storage, rabbitmq_vhost, tmp_path: Path) -> None:
    import re

    storage = fresh_storage("postgresql")
    env = worker_env(storage, rabbitmq_vhost, tmp_path)
    result = run_tdc(env, "bench", "throughput", "--orders", "20", "--tasks", "300", "--timeout", "240")
    assert result.returncode == 0, result.stdout + result.stderr
    # (timed from the moment the workers are ready, which the bench says)
    assert re.search(r"workers ready \d+\.\ds after their start \(not timed, on either side\)", result.stdout)
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"throughput: ratio \d+\.\d\d \(tdc [\d,]+ ops/s vs no-op [\d,]+ tasks/s; "
                        r"intake [\d,]+ lines/s\)", last), last


def test_bench_soak_feeds_chunks_checks_them_and_samples_worker_memory(fresh_storage, rabbitmq_vhost,
                                                                      tmp_path: Path) -> None:
    import re

    storage = fresh_storage("postgresql")
    env = worker_env(storage, rabbitmq_vhost, tmp_path)
    result = run_tdc(env, "bench", "soak", "--events", "400", "--chunk-orders", "20", "--timeout", "120")
    # Memory may or may not settle over so few events; the run itself must complete and report.
    assert result.returncode == 0 or "FAILED: worker memory grew" in result.stderr, result.stdout + result.stderr
    samples = re.findall(r"\((\d+)%\) in \d+s: worker RSS ([\d,.]+) MB", result.stdout)
    assert [mark for mark, _ in samples] == ["10", "50", "100"], result.stdout
    assert all(float(rss.replace(",", "")) > 20 for _, rss in samples), result.stdout
    last = result.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"soak: [\d,]+ events; worker RSS [\d,.]+ MB at 10%, [\d,.]+ MB at 50%, "
                        r"[\d,.]+ MB at 100%; growth [+-]\d+\.\d%", last), last


def test_real_workers_keep_the_search_index_at_every_wide_rows_version(fresh_storage, rabbitmq_vhost, tmp_path: Path,
                                                                      elasticsearch_url: str) -> None:
    # Given a worker and beat whose chains index into Elasticsearch (the tests' server, or TDC_ES_URL's)
    import time
    import uuid

    from search.elastic import OrderIndex, connect
    from search.outbox import oldest_due
    from search.query import OrderQuery
    from search.sql import search_sql

    storage = fresh_storage()
    alias = f"tdc-test-e2e-{uuid.uuid4().hex[:6]}"
    env = worker_env(storage, rabbitmq_vhost, tmp_path, TDC_ES_URL=elasticsearch_url, TDC_ES_ALIAS=alias)
    assert run_tdc(env, "search", "init").returncode == 0
    history = generate_history(100, seed=13, input_format="canal")
    files = {fmt: tmp_path / f"{fmt}.jsonl" for fmt in ("canal", "business")}
    for fmt, path in files.items():
        path.write_text("\n".join(line for f, line in history.lines if f == fmt) + "\n")
    index = OrderIndex(connect(elasticsearch_url), alias)
    with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                  start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        # When a history is ingested and processed
        for fmt, path in files.items():
            assert run_tdc(env, "ingest", "--format", fmt, str(path)).returncode == 0
        assert wait_until_matching(storage, history, 300) == []
        # Then soon every order's document is in the index at its wide row's version, and nothing waits
        deadline = time.monotonic() + 60
        while True:
            wide = {o["order_id"]: o["version"] for o in search_sql(storage, OrderQuery(limit=1000))}
            indexed = index.versions(sorted(wide))
            if (indexed == wide and oldest_due(storage) is None) or time.monotonic() > deadline:
                break
            time.sleep(1)
    assert indexed == wide and len(wide) == len(history.order_ids)
    assert oldest_due(storage) is None
