"""A throwaway MariaDB server with its binlog on, on a free port, for the tests and `tdc bench cdc`: the
source database a binlog tail reads, whatever the machine's own server is configured with."""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pymysql

#: The settings the tail requires (cdc.source.REQUIRED_SETTINGS).
BINLOG_OPTIONS = ["--log-bin=binlog", "--server-id=1", "--binlog-format=ROW", "--binlog-row-image=FULL",
                  "--binlog-row-metadata=FULL"]


def _binary(name: str) -> str:
    for candidate in (shutil.which(name), f"/usr/sbin/{name}", f"/usr/bin/{name}"):
        if candidate and Path(candidate).exists():
            return candidate
    raise FileNotFoundError(f"{name} is not installed (Debian package mariadb-server)")


class BinlogServer:
    def __init__(self) -> None:
        self.directory = Path(tempfile.mkdtemp(prefix="tdc-binlog-"))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{self.port}"

    def connect(self, database: str | None = None) -> pymysql.connections.Connection:
        return pymysql.connect(host="127.0.0.1", port=self.port, user="root", database=database, autocommit=True)

    def start(self) -> None:
        data = self.directory / "data"
        subprocess.run([_binary("mariadb-install-db"), "--no-defaults", f"--datadir={data}", "--user=root",
                        "--auth-root-authentication-method=normal", "--skip-test-db"],
                       check=True, capture_output=True, timeout=120)
        log = open(self.directory / "server.log", "ab")  # noqa: SIM115 - owned by the child's lifetime
        self.process = subprocess.Popen(
            [_binary("mariadbd"), "--no-defaults", f"--datadir={data}", f"--port={self.port}",
             "--bind-address=127.0.0.1", f"--socket={self.directory / 'sock'}", "--user=root",
             "--skip-name-resolve", "--innodb-buffer-pool-size=64M", *BINLOG_OPTIONS],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.connect().close()
                return
            except pymysql.err.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError((self.directory / "server.log").read_text()[-2000:]) from None
                time.sleep(0.2)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.directory, ignore_errors=True)
