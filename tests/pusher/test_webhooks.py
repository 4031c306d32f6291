"""Webhooks, received by the application back end and verified by the `pusher` library's
`validate_webhook`: each occurrence once, also across a cluster and when a worker is SIGKILLed."""

from __future__ import annotations

import os
import signal
from collections import Counter

import pytest

from tests.integration.servers import RedisServer
from tests.pusher.deployments import WireClient


def names(events: list[dict]) -> Counter:
    return Counter(tuple(sorted(event.items())) for event in events)


def occurred(*expected: dict):
    """Until every expected event has arrived."""
    return lambda events: all(event in events for event in expected)


@pytest.mark.parametrize("broker", ["local", "redis"])
def test_occupied_members_client_events_and_vacated_arrive_once_each_and_verify(start_deployment, tmp_path, broker):
    deployment = start_deployment(redis=RedisServer(tmp_path) if broker == "redis" else None)
    server, backend = deployment.server, deployment.backend
    ann, ben = WireClient(server), WireClient(server)
    ann.subscribe("presence-hooks", backend, "ann")
    ben.subscribe("presence-hooks", backend, "ben")
    ben.send("client-wave", {"hand": "left"}, "presence-hooks")
    assert ann.next("client-wave")["user_id"] == "ben"
    ben.close()
    ann.close()
    expected = [
        {"name": "channel_occupied", "channel": "presence-hooks"},
        {"name": "member_added", "channel": "presence-hooks", "user_id": "ann"},
        {"name": "member_added", "channel": "presence-hooks", "user_id": "ben"},
        {
            "name": "client_event",
            "channel": "presence-hooks",
            "event": "client-wave",
            "data": '{"hand":"left"}',
            "socket_id": ben.socket_id,
            "user_id": "ben",
        },
        {"name": "member_removed", "channel": "presence-hooks", "user_id": "ben"},
        {"name": "member_removed", "channel": "presence-hooks", "user_id": "ann"},
        {"name": "channel_vacated", "channel": "presence-hooks"},
    ]
    events = backend.wait_events(occurred(*expected))
    assert names(events) == names(expected) and backend.rejected == 0
    # Batched: fewer requests than events.
    assert len(backend.webhooks) < len(events)


def test_a_failed_webhook_is_retried_until_taken(start_deployment):
    deployment = start_deployment()
    backend = deployment.backend
    backend.fail_next = 2
    with WireClient(deployment.server) as client:
        client.subscribe("retried")
        events = backend.wait_events(occurred({"name": "channel_occupied", "channel": "retried"}))
    assert events.count({"name": "channel_occupied", "channel": "retried"}) == 1
    assert backend.attempts >= 3 and backend.rejected == 0


def test_a_cluster_sends_each_once_and_a_sigkilled_worker_s_member_is_removed(start_deployment, tmp_path):
    redis = RedisServer(tmp_path)
    settings = {"SWITCHBOARD_PRESENCE_TTL": "2"}
    a = start_deployment(settings, redis=redis)
    b = start_deployment(settings, redis=redis)
    watcher = WireClient(a.server)
    watcher.subscribe("presence-ops", a.backend, "eve")
    doomed = WireClient(b.server)
    doomed.subscribe("presence-ops", b.backend, "fay")
    assert watcher.next("pusher_internal:member_added", "presence-ops")["data"]["user_id"] == "fay"
    fay_added = {"name": "member_added", "channel": "presence-ops", "user_id": "fay"}
    both = lambda: a.backend.events() + b.backend.events()  # noqa: E731  (either instance may send)
    a.backend.wait_events(lambda _: fay_added in both())
    b.backend.wait_events(lambda _: fay_added in both())

    for pid in b.server.worker_pids():
        os.kill(pid, signal.SIGKILL)  # no cleanup at all: only the heartbeat's reaping can tell
    removed = watcher.next("pusher_internal:member_removed", "presence-ops", timeout=20)
    assert removed["data"] == {"user_id": "fay"}
    watcher.close()

    expected = [
        {"name": "channel_occupied", "channel": "presence-ops"},
        {"name": "member_added", "channel": "presence-ops", "user_id": "eve"},
        fay_added,
        {"name": "member_removed", "channel": "presence-ops", "user_id": "fay"},
        {"name": "member_removed", "channel": "presence-ops", "user_id": "eve"},
        {"name": "channel_vacated", "channel": "presence-ops"},
    ]
    a.backend.wait_events(lambda _: all(event in both() for event in expected))
    assert names(both()) == names(expected)
    assert a.backend.rejected == b.backend.rejected == 0
