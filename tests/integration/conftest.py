"""Fixtures: a real Gunicorn (gevent worker) per test module, or per test when it needs its own."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.integration.servers import RedisServer, Server


@pytest.fixture(scope="module", params=["local", "redis"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server with default settings, shared by a module's tests, which run against both brokers:
    one worker with the in-process broker, and two workers sharing a real Redis."""
    tmp_path = tmp_path_factory.mktemp("server")
    redis = RedisServer(tmp_path) if request.param == "redis" else None
    env = {"SWITCHBOARD_REDIS_URL": redis.url, "SWITCHBOARD_WORKERS": "2"} if redis else {}
    instance = Server(tmp_path, env).wait_ready()
    yield instance
    instance.stop()
    if redis is not None:
        redis.stop()


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


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, on a free port, for tests that stop and start it."""
    instance = RedisServer(tmp_path)
    yield instance
    instance.stop()
