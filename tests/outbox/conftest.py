"""Fixtures: a real PostgreSQL per module, a fresh database per test, a real Gunicorn server, and
relays run as the `switchboard-server outbox-relay` command, each with its JSON log kept."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from bench.postgres import PostgresServer
from tests.integration.servers import API_KEY, ROOT, Server

_databases = itertools.count(1)


class RelayProcess:
    """One `switchboard-server outbox-relay` process, logging JSON lines at debug level."""

    def __init__(self, log_path: Path, dsn: str, server_url: str, options: tuple[str, ...]) -> None:
        self.log_path = log_path
        environment = {k: v for k, v in os.environ.items() if not k.startswith("SWITCHBOARD_")}
        environment.update({"SWITCHBOARD_API_KEY": API_KEY, "SWITCHBOARD_LOG_FORMAT": "json"})
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(
            [sys.executable, "-c", "from switchboard_server.cli import main; main()", "outbox-relay",
             "--dsn", dsn, "--server-url", server_url, "--log-level", "debug", "--poll-interval", "0.2", *options],
            cwd=ROOT, env=environment, stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def lines(self) -> list[dict]:
        self._log.flush()
        text = self.log_path.read_text(errors="replace")
        return [json.loads(line) for line in text.splitlines() if line.startswith("{")]

    def published_ids(self) -> list[int]:
        return [line["id"] for line in self.lines() if line["message"] == "published"]

    def wait_for(self, message: str, timeout: float = 20.0) -> None:
        """Until the relay logs `message` (it logs `relay ready` once connected and listening)."""
        deadline = time.monotonic() + timeout
        while not any(line["message"] == message for line in self.lines()):
            if self.process.poll() is not None:
                raise RuntimeError(f"relay exited with {self.process.returncode}:\n{self.log_path.read_text()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"relay never logged {message!r}:\n{self.log_path.read_text()}")
            time.sleep(0.05)

    def stop(self, sig: int = signal.SIGTERM) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    instance = PostgresServer()
    yield instance
    instance.remove()


@pytest.fixture
def dsn(postgres: PostgresServer) -> str:
    """A fresh database with the outbox table, so ids start at 1 in every test."""
    return postgres.new_database(f"outbox_{next(_databases)}")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    instance = Server(tmp_path_factory.mktemp("server")).wait_ready()
    yield instance
    instance.stop()


@pytest.fixture
def start_relay(tmp_path: Path, server: Server) -> Iterator[Callable[..., RelayProcess]]:
    """Start relays (ready: connected and listening); all are stopped after the test."""
    started: list[RelayProcess] = []

    def start(dsn: str, *options: str, ready: bool = True) -> RelayProcess:
        relay = RelayProcess(tmp_path / f"relay-{len(started)}.log", dsn, server.url, options)
        started.append(relay)
        if ready:
            relay.wait_for("relay ready")
        return relay

    yield start
    for relay in started:
        relay.stop()
