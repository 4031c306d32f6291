"""Fixtures: real Switchboards with two Pusher apps, each beside its application back end."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.servers import RedisServer
from tests.pusher.deployments import Deployment, deploy


@pytest.fixture(scope="module", params=["local", "redis"])
def deployment(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """Shared by a module's tests, which run against both brokers: one worker in process, and two
    workers sharing a real Redis."""
    tmp_path = tmp_path_factory.mktemp("pusher")
    instance = deploy(tmp_path, redis=RedisServer(tmp_path) if request.param == "redis" else None)
    yield instance
    instance.stop()


@pytest.fixture
def start_deployment(tmp_path: Path) -> Iterator[Callable[..., Deployment]]:
    """Deployments with their own settings; all stopped after the test."""
    started: list[Deployment] = []

    def start(env: dict[str, str] | None = None, redis: RedisServer | None = None) -> Deployment:
        started.append(deploy(tmp_path, env, redis))
        return started[-1]

    yield start
    for instance in started:
        instance.stop()
