"""Fixtures: real Gunicorn servers (both brokers), a Redis-backed pair, and Node's graphql-ws."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.graphql.clients import NodeGraphQL
from tests.integration.conftest import server, start_server  # noqa: F401 (fixtures, used by name)
from tests.integration.servers import RedisServer, Server


@pytest.fixture
def redis_server(tmp_path) -> Iterator[RedisServer]:
    instance = RedisServer(tmp_path)
    yield instance
    instance.stop()


@pytest.fixture
def cluster(start_server, redis_server) -> tuple[Server, Server]:  # noqa: F811
    """Two instances of two workers each, sharing one Redis."""
    env = {"SWITCHBOARD_REDIS_URL": redis_server.url, "SWITCHBOARD_WORKERS": "2"}
    return start_server(env), start_server(env)


@pytest.fixture
def node() -> Iterator[NodeGraphQL]:
    clients = NodeGraphQL()
    yield clients
    clients.close()
