"""The Pusher HTTP API, driven by the unchanged `pusher` server library, against both brokers.

Triggering (one channel, several, a batch, excluding a socket), reading channels and users, and the
refusals: a forged signature, a stale timestamp, bad requests, a body too large. Subscribers are
Pusher connections and native `/ws` clients on the same hub.
"""

from __future__ import annotations

import base64
import time

import pusher
import pytest

from tests.integration.servers import Endpoint
from tests.pusher.backend import OTHER_APP_ID, OTHER_KEY, OTHER_SECRET, library
from tests.pusher.deployments import WireClient


def wait_for(condition, timeout: float = 15.0):
    """Redis-backed counts are written a moment after a subscription changes."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition never held")
        time.sleep(0.05)


def test_trigger_reaches_pusher_and_native_subscribers_with_the_data_as_each_expects(deployment):
    server, backend = deployment.server, deployment.backend
    with WireClient(server) as listener, Endpoint(server.port).client() as native:
        listener.subscribe("news")
        native.command("subscribe", channel="news")
        assert backend.pusher.trigger("news", "headline", {"title": "Hello"}) == {}
        message = listener.next("headline", "news")
        assert message["data"] == {"title": "Hello"}
        pushed = native.next_push("message")
        assert (pushed["event"], pushed["data"], pushed["from"]) == ("headline", {"title": "Hello"}, None)
        backend.pusher.trigger("news", "note", "not JSON, kept as a string")
        assert listener.next("note")["data"] == "not JSON, kept as a string"
        assert native.next_push("message")["data"] == "not JSON, kept as a string"


def test_trigger_to_many_channels_and_in_batches_skipping_the_excluded_socket(deployment):
    server, backend = deployment.server, deployment.backend
    with WireClient(server) as sender, WireClient(server) as other:
        for client in (sender, other):
            client.subscribe("a")
            client.subscribe("b")
        backend.pusher.trigger(["a", "b"], "both", {"n": 1}, socket_id=sender.socket_id)
        assert {other.next("both")["channel"], other.next("both")["channel"]} == {"a", "b"}
        backend.pusher.trigger_batch(
            [
                {"channel": "a", "name": "first", "data": {"n": 2}, "socket_id": sender.socket_id},
                {"channel": "b", "name": "second", "data": "3"},
            ]
        )
        assert other.next("first")["data"] == {"n": 2} and other.next("second")["data"] == 3
        # The sender was excluded from everything but the last event, which is the next it gets.
        assert sender.next("second")["channel"] == "b"
        assert [m["event"] for m in sender.backlog if m["event"] in ("both", "first")] == []


def test_channels_and_users_as_the_library_reads_them(deployment):
    server, backend = deployment.server, deployment.backend
    with WireClient(server) as ann, WireClient(server) as ann_again, WireClient(server) as ben:
        ann.subscribe("presence-room", backend, "ann")
        ann_again.subscribe("presence-room", backend, "ann")
        ben.subscribe("presence-room", backend, "ben")
        ben.subscribe("lobby")
        expected = {"presence-room": {"subscription_count": 3}, "lobby": {"subscription_count": 1}}

        def counted():
            channels = backend.pusher.channels_info(attributes=["subscription_count"])["channels"]
            return all(channels.get(name) == counts for name, counts in expected.items())

        wait_for(counted)
        presence = backend.pusher.channels_info(prefix_filter="presence-", attributes=["user_count"])
        assert presence == {"channels": {"presence-room": {"user_count": 2}}}
        info = backend.pusher.channel_info("presence-room", ["user_count", "subscription_count"])
        assert info == {"occupied": True, "user_count": 2, "subscription_count": 3}
        assert sorted(user["id"] for user in backend.pusher.users_info("presence-room")["users"]) == ["ann", "ben"]
        assert backend.pusher.channel_info("nobody-here") == {"occupied": False}
        with pytest.raises(pusher.errors.PusherBadRequest, match="presence"):
            backend.pusher.channel_info("lobby", ["user_count"])
        with pytest.raises(pusher.errors.PusherBadRequest, match="presence"):
            backend.pusher.users_info("lobby")


def test_another_app_sees_neither_the_channels_nor_the_events_of_the_first(deployment):
    server, backend = deployment.server, deployment.backend
    other = library(server.port, OTHER_APP_ID, OTHER_KEY, OTHER_SECRET)
    with WireClient(server) as first, WireClient(server, key=OTHER_KEY) as second:
        first.subscribe("shared-name")
        second.subscribe("shared-name")
        other.trigger("shared-name", "for-the-second", {})
        backend.pusher.trigger("shared-name", "for-the-first", {})
        assert second.next("for-the-second")["channel"] == "shared-name"
        assert first.next("for-the-first")["channel"] == "shared-name"
        assert [m for m in first.backlog + second.backlog if m["event"].startswith("for-")] == []
        names = wait_for(lambda: other.channels_info()["channels"])
        assert "shared-name" in names and "lobby" not in names
        # Signing with one app's secret for the other's id is a forgery.
        forged = pusher.Pusher(app_id=OTHER_APP_ID, key="key1", secret="secret1", host="127.0.0.1", port=server.port)
        forged._pusher_client._ssl = False
        with pytest.raises(pusher.errors.PusherBadAuth):
            forged.trigger("shared-name", "x", {})


def test_a_forged_signature_and_a_stale_timestamp_are_refused_and_nothing_is_published(deployment, monkeypatch):
    server = deployment.server
    forger = library(server.port, secret="guessed")
    with WireClient(server) as listener:
        listener.subscribe("guarded")
        with pytest.raises(pusher.errors.PusherBadAuth, match="Invalid signature"):
            forger.trigger("guarded", "forged", {})

        class Clock:
            @staticmethod
            def time() -> float:
                return time.time() - 601

        stale = library(server.port)
        monkeypatch.setattr(pusher.http, "time", Clock)
        with pytest.raises(pusher.errors.PusherBadAuth, match="Timestamp expired"):
            stale.trigger("guarded", "stale", {})
        monkeypatch.undo()
        stale.trigger("guarded", "fresh", {})
        assert listener.next("fresh")["channel"] == "guarded"
        assert [m["event"] for m in listener.backlog if m["event"] in ("forged", "stale")] == []


def test_bad_requests_get_pusher_s_statuses(deployment):
    backend = deployment.backend
    with pytest.raises(pusher.errors.PusherBadRequest, match="batch"):
        backend.pusher.trigger_batch([{"channel": "c", "name": "e", "data": "d"}] * 11)
    encrypting = pusher.Pusher(
        app_id="1", key="key1", secret="secret1", host="127.0.0.1", port=deployment.server.port, ssl=False,
        encryption_master_key_base64=base64.b64encode(b"k" * 32).decode(),
    )  # fmt: skip
    with pytest.raises(pusher.errors.PusherBadRequest, match="encrypted"):
        encrypting.trigger("private-encrypted-x", "e", "d")
    with pytest.raises(pusher.errors.PusherBadStatus, match="413"):
        backend.pusher.trigger_batch([{"channel": "c", "name": "e", "data": "x" * 9000}] * 10)
    with pytest.raises(pusher.errors.PusherBadStatus, match="404"):
        library(deployment.server.port, app_id="99").trigger("c", "e", "d")
