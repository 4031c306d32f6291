"""Fixtures: the namespaces host app under a real Gunicorn, with each broker."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import redis_server, start_server  # noqa: F401 (fixtures, used by name)
from tests.integration.servers import GUNICORN, RedisServer, Server, free_port
from tests.pusher.backend import APPS


class HostApp(Server):
    """`gunicorn -k switchboard_server.Worker tests.namespaces.host:create_app()`."""

    ready_path = "/ready"

    def __init__(self, tmp_path: Path, env: dict[str, str], workers: int = 1) -> None:
        port = free_port()
        command = [GUNICORN, "-k", "switchboard_server.Worker", "-w", str(workers), "-b", f"127.0.0.1:{port}"]
        super().__init__(tmp_path, env, port=port, command=[*command, "tests.namespaces.host:create_app()"])


@pytest.fixture(scope="module", params=["local", "redis"])
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostApp]:
    """The host app with one worker and the in-process broker, or two workers sharing a Redis."""
    tmp_path = tmp_path_factory.mktemp("host")
    redis = RedisServer(tmp_path) if request.param == "redis" else None
    # No rate limit: the conflation test publishes as fast as one connection can.
    env = {"SWITCHBOARD_PUSHER_APPS": APPS, "SWITCHBOARD_RATE_MESSAGES": "0"}
    if redis is not None:
        env["SWITCHBOARD_REDIS_URL"] = redis.url
    instance = HostApp(tmp_path, env, workers=2 if redis else 1).wait_ready()
    yield instance
    instance.stop()
    if redis is not None:
        redis.stop()
