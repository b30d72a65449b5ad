"""Flower, the Celery web console, with the project's config: it refuses to start without
authentication, and with basic auth from the environment it answers only to those credentials."""

from __future__ import annotations

import base64
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import REDIS

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _flower(tmp_path: Path, port: int, **env: str) -> subprocess.Popen[str]:
    broker = REDIS.rsplit("/", 1)[0] + "/14"
    return subprocess.Popen([sys.executable, "-m", "celery", "-A", "worker", "flower", f"--port={port}",
                             "--address=127.0.0.1"], cwd=ROOT, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env={**os.environ, "TDC_REDIS_URL": REDIS, "TDC_BROKER_URL": broker,
                                                         "TDC_HOME": str(tmp_path), **env})


def _status(url: str, credentials: str | None = None) -> int:
    request = urllib.request.Request(url)
    if credentials:
        request.add_header("Authorization", "Basic " + base64.b64encode(credentials.encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


def test_flower_refuses_to_start_without_authentication(redis_client, tmp_path: Path) -> None:
    # When Flower is started with the project's config and no authentication configured
    process = _flower(tmp_path, _free_port(), FLOWER_BASIC_AUTH="", FLOWER_AUTH="")
    _, errors = process.communicate(timeout=60)
    # Then it stops at once and says what to set
    assert process.returncode != 0
    assert "refuses to start without authentication" in errors and "FLOWER_BASIC_AUTH" in errors


def test_flower_with_basic_auth_answers_only_to_its_credentials(redis_client, tmp_path: Path) -> None:
    # Given Flower started with basic auth from the environment
    port = _free_port()
    process = _flower(tmp_path, port, FLOWER_BASIC_AUTH="ops:s3cret")
    try:
        url = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 60
        while True:
            try:
                status = _status(url)
                break
            except OSError:
                assert process.poll() is None, process.communicate()[1]
                assert time.monotonic() < deadline, "Flower did not start listening"
                time.sleep(0.5)
        # Then a request without credentials, or with wrong ones, is refused, and the right ones get in
        assert status == 401
        assert _status(url, "ops:wrong") == 401
        assert _status(url + "workers", "ops:s3cret") == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
