"""Fixtures: a real Gunicorn (gevent worker) per test module, or per test when it needs its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.servers import Server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One shared server for tests that only need the defaults."""
    instance = Server(tmp_path_factory.mktemp("server")).wait_ready()
    yield instance
    instance.stop()


@pytest.fixture
def start_server(tmp_path) -> Iterator[Callable[..., Server]]:
    """Start servers with their own settings; all are stopped after the test."""
    started: list[Server] = []

    def start(env: dict[str, str] | None = None, args: tuple[str, ...] = (), ready: bool = True) -> Server:
        instance = Server(tmp_path, env, args)
        started.append(instance)
        return instance.wait_ready() if ready else instance

    yield start
    for instance in started:
        instance.stop()
