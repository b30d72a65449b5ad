"""Long commands off a terminal (a pipe, as in CI): plain progress lines on stderr, the result on
stdout unchanged."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import new_order_id
from tests.factories import PaymentWriteFactory, business
from tests.integration.helpers import run_tdc

pytestmark = pytest.mark.integration

#: What `tdc ingest --progress` prints after each batch (tests/e2e/test_contention.py reads it).
BATCH_LINE = re.compile(r"^\s+(\d+) lines: (\d+) accepted", re.MULTILINE)


def test_ingest_of_a_file_ends_with_a_plain_progress_line(service_env, storage, rabbitmq_vhost, tmp_path) -> None:
    # Given a file of 3 payments
    path = tmp_path / "payments.jsonl"
    path.write_text("".join(business(PaymentWriteFactory(order_id=new_order_id("PG"))) + "\n" for _ in range(3)))
    # When it is ingested with stdout and stderr going to pipes
    result = run_tdc({**service_env, "TDC_BROKER_URL": rabbitmq_vhost}, "ingest", "--format", "business", str(path))
    # Then stdout holds the summary as before, and stderr the plain line of the whole file read
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("3 lines: 3 accepted") and "3 tasks submitted" in result.stdout
    size = path.stat().st_size
    assert re.search(rf"^  ingest {re.escape(str(path))}: {size} bytes of {size} bytes \(100%\) done in \d+s; "
                     r"3 lines, 3 accepted, 0 quarantined$", result.stderr, re.MULTILINE), result.stderr
    assert "\x1b[" not in result.stderr  # no terminal control codes in a log


def test_ingest_from_a_pipe_with_progress_prints_every_batch(service_env, storage, rabbitmq_vhost) -> None:
    # Given 501 payments (two batches) coming through a pipe, whose size is not known
    lines = "".join(business(PaymentWriteFactory(order_id=new_order_id("PG"))) + "\n" for _ in range(501))
    env = {**os.environ, **service_env, "TDC_BROKER_URL": rabbitmq_vhost}
    # When they are ingested with --progress
    result = subprocess.run([sys.executable, "-m", "cli.main", "ingest", "--format", "business", "--progress", "-"],
                            input=lines, env=env, capture_output=True, text=True, timeout=300)
    # Then the running counts came after each batch, and the last line says how much was read
    assert result.returncode == 0, result.stderr
    assert [(int(n), int(a)) for n, a in BATCH_LINE.findall(result.stderr)] == [(500, 500), (501, 501)]
    assert re.search(r"^  ingest stdin: [\d.]+ KiB done in \d+s; 501 lines, 501 accepted", result.stderr,
                     re.MULTILINE), result.stderr
    assert result.stdout.startswith("501 lines: 501 accepted")


def test_bench_intake_shows_its_progress_on_stderr_only(service_env) -> None:
    result = run_tdc(service_env, "bench", "intake", "--orders", "10")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^  intake: (\d+) of \1 lines \(100%\) done in \d+s$", result.stderr, re.MULTILINE), \
        result.stderr
    assert result.stdout.strip().splitlines()[-1].startswith("intake: ")
