"""Fixtures: real Gunicorn servers (tests/integration/servers.py), and the client in both flavours."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.servers import RedisServer, Server
from tests.pyclient.flavours import AsyncioFlavour, SyncFlavour


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One worker with default settings (the in-process broker), shared by a module's tests."""
    instance = Server(tmp_path_factory.mktemp("server")).wait_ready()
    yield instance
    instance.stop()


@pytest.fixture(scope="module", params=["sync", "asyncio"])
def flavour(request: pytest.FixtureRequest):
    instance = SyncFlavour() if request.param == "sync" else AsyncioFlavour()
    yield instance
    instance.close()


@pytest.fixture
def start_server(tmp_path) -> Iterator[Callable[..., Server]]:
    """Start servers with their own settings (`port=` to restart one in place); all stopped after."""
    started: list[Server] = []

    def start(env: dict[str, str] | None = None, port: int | None = None) -> Server:
        instance = Server(tmp_path, env, port=port)
        started.append(instance)
        return instance.wait_ready()

    yield start
    for instance in started:
        instance.stop()


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    instance = RedisServer(tmp_path)
    yield instance
    instance.stop()
