"""Contention and crashes with real processes on MariaDB shard databases: several `tdc ingest`
runs writing the same keys at once, every worker and beat killed with SIGKILL while draining,
and an ingest killed half way and run again.  After each, every order's wide row and every ADS
cell equal the history's, exactly."""

import os
import random
import re
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from demo.history import History, generate_history
from demo.processes import running, start_beat, start_worker
from models.storage import Storage
from tests.conftest import env_of
from tests.e2e.helpers import (
    PrivateRedis,
    ads_suspects,
    merged,
    orders_done,
    run_tdc,
    wait_for_progress,
    wait_until_matching,
    worker_env,
)

pytestmark = pytest.mark.e2e

#: A line `tdc ingest --progress` prints on stderr after each batch is committed and submitted.
PROGRESS = re.compile(r"^\s+(\d+) lines: (\d+) accepted")


def _write(history: History, fmt: str, path: Path) -> Path:
    """The history's lines of format ``fmt``, as the file `tdc ingest` reads."""
    path.write_text("\n".join(line for f, line in history.lines if f == fmt) + "\n")
    return path


def _start_ingest(env: dict[str, str], fmt: str, path: Path, *options: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", "--format", fmt, *options, str(path)],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _seed() -> int:
    """A fresh seed each run (TDC_TEST_SEED replays one); it is in every failure message."""
    return int(os.environ.get("TDC_TEST_SEED") or random.randrange(10**9))


def _logs(tmp_path: Path, *names: str) -> str:
    return "".join(f"\n--- {name} ---\n{(tmp_path / name).read_text()[-3000:]}"
                   for name in names if (tmp_path / name).exists())


#: Concurrent intake per round: the Canal lines three times over and the payments, all at once.
CONCURRENT_INGESTS = ("canal", "canal", "canal", "business")


def _blocked_reading_stdin(process: subprocess.Popen[str]) -> bool:
    """True once ``process`` sleeps in a read of its (empty) stdin pipe, or when Linux will not say."""
    try:
        return "pipe" in Path(f"/proc/{process.pid}/wchan").read_text()
    except OSError:
        return True


def _ingest_together(env: dict[str, str], inputs: list[tuple[str, Path]]) -> list[tuple[str, str, int]]:
    """Run `tdc ingest --format F -` for each (F, file) at the same moment: start them all on
    empty stdin pipes, wait until every one has imported everything and blocks reading (or 60
    seconds), then feed them all at once.  Returns (format, stderr, exit code) of each."""
    processes = [subprocess.Popen([sys.executable, "-m", "cli.main", "ingest", "--format", fmt, "-"], env=env,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for fmt, _ in inputs]
    deadline = time.monotonic() + 60
    while not all(_blocked_reading_stdin(p) for p in processes) and time.monotonic() < deadline:
        time.sleep(0.05)
    with ThreadPoolExecutor(len(processes)) as pool:
        stderrs = list(pool.map(lambda run: run[0].communicate(run[1].read_text(), timeout=300)[1],
                                zip(processes, (path for _, path in inputs), strict=True)))
    return [(fmt, stderr, process.returncode)
            for (fmt, _), stderr, process in zip(inputs, stderrs, processes, strict=True)]


def test_concurrent_ingests_never_fail_and_end_exact(fresh_storage, rabbitmq_vhost, tmp_path: Path) -> None:
    """Proves that intake is safe under concurrent writers of the same keys: `tdc ingest` runs
    fed at the same moment with the same Canal file (same metadata and task rows, same order) and on its
    payments never fail (no deadlock or lost savepoint reaches the caller), and that what they
    stored together yields exact wide rows and ADS tables."""
    # Given fresh MariaDB shards and a MariaDB warehouse, a RabbitMQ virtual host of the test's
    # own, and a worker (two processes) and beat draining
    storage = fresh_storage("mariadb")
    env = worker_env(storage, rabbitmq_vhost, tmp_path)
    histories = []
    with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                  start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        for round_ in range(3):
            # And a fresh history of 160 orders each round
            seed = _seed()
            history = generate_history(160, seed=seed)
            histories.append(history)
            files = {fmt: _write(history, fmt, tmp_path / f"round{round_}-{fmt}.jsonl")
                     for fmt in ("canal", "business")}
            # When its Canal file is ingested three times and its payments once, all at the same time
            outcomes = _ingest_together(env, [(fmt, files[fmt]) for fmt in CONCURRENT_INGESTS])
            # Then every ingest exits 0
            for fmt, stderr, code in outcomes:
                assert code == 0, f"round {round_} (seed {seed}): `tdc ingest --format {fmt}` exited {code}:\n{stderr}"
        # And the worker ends with every order, item and ADS cell of every round exact
        problems = wait_until_matching(storage, merged(*histories), 300)
    assert problems == [], _logs(tmp_path, "worker.log")


def _production_env(storage: Storage, broker: str, home: Path, **extra: str) -> dict[str, str]:
    """Every setting at its default (lease, lock, visibility timeout, rescan interval) but the
    storage, the broker and a short retry base; no TDC_* variable of the caller leaks in."""
    inherited = {k: v for k, v in os.environ.items() if not k.startswith("TDC_")}
    return {**inherited, **env_of(storage), "TDC_BROKER_URL": broker, "TDC_RETRY_BASE_SECONDS": "0.2",
            "TDC_HOME": str(home), **extra}


def _killpg(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL a worker or beat with its whole process group (a worker's pool included)."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.parametrize("broker", ["rabbitmq", "redis"])
def test_every_worker_killed_recovers_within_minutes(fresh_storage, request, tmp_path: Path, broker: str) -> None:
    """Proves that a crash of the whole processing tier (every worker process and beat, SIGKILL,
    chains in flight) heals by itself at the default settings: within three minutes of restarting
    the workers and beat, every order and ADS cell is exact, nothing lost and nothing doubled,
    with RabbitMQ and with Redis as the broker."""
    # Given fresh storage, locks and dimensions in a Redis server of the test's own, as broker a
    # RabbitMQ virtual host or that same Redis, default settings but a short retry base, and 1000
    # orders ingested before anything processes them
    storage = fresh_storage("postgresql")
    with PrivateRedis(tmp_path / "redis") as server:
        url = server.url if broker == "redis" else request.getfixturevalue("rabbitmq_vhost")
        env = _production_env(storage, url, tmp_path, TDC_REDIS_URL=server.url)
        seed = _seed()
        history = generate_history(1000, seed=seed)
        for fmt in ("canal", "business"):
            result = run_tdc(env, "ingest", "--format", fmt, str(_write(history, fmt, tmp_path / f"{fmt}.jsonl")))
            assert result.returncode == 0, result.stderr
        # And two workers of two processes each and beat draining them
        first = [start_worker(env, tmp_path / "worker-1.log", concurrency=2),
                 start_worker(env, tmp_path / "worker-2.log", concurrency=2),
                 start_beat(env, tmp_path / "beat-1.log", tmp_path / "beat-schedule")]
        with running(first):
            wait_for_progress(storage, history, 60)
            # When every worker process, pools included, and beat are killed with SIGKILL in the
            # middle of draining
            for process in first:
                _killpg(process)
        done_at_kill = orders_done(storage, history)
        # And two workers and beat are started again
        with running([start_worker(env, tmp_path / "worker-3.log", concurrency=2),
                      start_worker(env, tmp_path / "worker-4.log", concurrency=2),
                      start_beat(env, tmp_path / "beat-2.log", tmp_path / "beat-schedule")]):
            # Then within three minutes every wide row and every ADS cell is exact
            restarted = time.monotonic()
            problems = wait_until_matching(storage, history, 180)
            print(f"\n{broker}: exact {time.monotonic() - restarted:.0f} s after the restart "
                  f"({done_at_kill} of {len(history.order_ids)} orders done at the kill)")
            state = ads_suspects(storage, history, server.url) if problems else ""
    assert problems == [], (f"seed {seed}, {done_at_kill} of {len(history.order_ids)} orders done at the kill\n"
                            + state + _logs(tmp_path, "worker-3.log", "beat-2.log"))


def _progress_after(ingest: subprocess.Popen[str], lines: int) -> re.Match[str]:
    """Read `tdc ingest --progress` until it reports at least ``lines`` lines committed."""
    assert ingest.stderr is not None
    seen = []
    while True:
        line = ingest.stderr.readline()
        assert line, f"the ingest ended before it reported {lines} lines:\n{''.join(seen)}"
        seen.append(line)
        progress = PROGRESS.match(line)
        if progress and int(progress[1]) >= lines:
            return progress


def test_a_killed_ingest_run_again_ends_exact(fresh_storage, rabbitmq_vhost, tmp_path: Path) -> None:
    """Proves that `tdc ingest` can be killed at any batch and simply run again: a batch half
    committed over the shard databases, or committed and never submitted, is neither lost nor
    doubled once the same file is ingested again (its lines now duplicates) and the payments
    follow."""
    # Given a worker and beat running on fresh storage, and a Canal file of 640 orders (11 batches)
    storage = fresh_storage("postgresql")
    env = worker_env(storage, rabbitmq_vhost, tmp_path)
    seed = _seed()
    history = generate_history(640, seed=seed)
    canal = _write(history, "canal", tmp_path / "canal.jsonl")
    business = _write(history, "business", tmp_path / "business.jsonl")
    total_lines = sum(1 for f, _ in history.lines if f == "canal")
    with running([start_worker(env, tmp_path / "worker.log", concurrency=2),
                  start_beat(env, tmp_path / "beat.log", tmp_path / "beat-schedule")]):
        # When an ingest of it is killed with SIGKILL right after it has committed its first batches
        killed = _start_ingest(env, "canal", canal, "--progress")
        try:
            progress = _progress_after(killed, lines=1000)
        finally:
            killed.kill()
            stdout, _ = killed.communicate()
        # (it did not finish: it died by the signal, before its summary, with lines left to read)
        assert killed.returncode == -signal.SIGKILL and stdout == "", stdout
        assert 0 < int(progress[2]) and int(progress[1]) < total_lines
        # And the same file is ingested again, to the end, and then the payments
        again = run_tdc(env, "ingest", "--format", "canal", str(canal))
        payments = run_tdc(env, "ingest", "--format", "business", str(business))
        assert again.returncode == 0, again.stderr
        assert payments.returncode == 0, payments.stderr
        # Then every order, item and ADS cell is exact
        problems = wait_until_matching(storage, history, 300)
    assert problems == [], f"seed {seed}" + _logs(tmp_path, "worker.log")
