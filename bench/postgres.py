"""A real PostgreSQL for the outbox tests and bench: `initdb` into a fresh folder, `postgres` on a free port.

PostgreSQL refuses to run as root, so under root (CI, containers) the server runs as `nobody`,
from a folder it owns. The server can be stopped and started again on the same data and port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from switchboard_server.outbox import schema_sql

USER = "switchboard"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def postgres_bin_dir() -> Path:
    """Debian's newest /usr/lib/postgresql/<version>/bin, else wherever `initdb` is on PATH."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    if found:
        return found[-1].parent
    initdb = shutil.which("initdb")
    if initdb is None:
        raise RuntimeError(
            "the outbox tests and bench need PostgreSQL: apt-get install -y postgresql (make system-deps)"
        )
    return Path(initdb).resolve().parent


class PostgresServer:
    """A throwaway cluster with trust authentication on 127.0.0.1, removed by `remove`."""

    def __init__(self) -> None:
        self.bin = postgres_bin_dir()
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="switchboard-pg-"))
        self.data = self.dir / "data"
        self.process: subprocess.Popen | None = None
        self._as = {}
        if os.geteuid() == 0:
            nobody = pwd.getpwnam("nobody")
            os.chown(self.dir, nobody.pw_uid, nobody.pw_gid)
            self._as = {"user": nobody.pw_uid, "group": nobody.pw_gid, "extra_groups": []}
        subprocess.run(
            [self.bin / "initdb", "-D", self.data, "-U", USER, "--auth=trust", "-E", "UTF8", "--no-sync"],
            check=True, capture_output=True, cwd=self.dir, **self._as,
        )  # fmt: skip
        self.start()

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user={USER} dbname={dbname}"

    def start(self) -> PostgresServer:
        log = open(self.dir / "postgres.log", "ab")
        self.process = subprocess.Popen(
            [self.bin / "postgres", "-D", self.data, "-p", str(self.port), "-k", self.dir,
             "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "max_connections=50"],
            stdout=log, stderr=subprocess.STDOUT, cwd=self.dir, **self._as,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError("postgres exited:\n" + (self.dir / "postgres.log").read_text())
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                time.sleep(0.05)
        raise TimeoutError("postgres did not start")

    def stop(self) -> None:
        """A fast shutdown: sessions are cut, committed data stays."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(30)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def new_database(self, name: str, create_table: bool = True) -> str:
        """A fresh database (with the outbox table unless told otherwise); returns its DSN."""
        with psycopg.connect(self.dsn(), autocommit=True) as connection:
            connection.execute(f'CREATE DATABASE "{name}"')
        if create_table:
            with psycopg.connect(self.dsn(name)) as connection:
                connection.execute(schema_sql())
        return self.dsn(name)
