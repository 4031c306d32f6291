"""A service's session with the Python client, sync and asyncio, against a real Gunicorn."""

from __future__ import annotations

import time

import pytest
from switchboard_client import (
    ClientClosed,
    HTTPClient,
    Join,
    Leave,
    NotSubscribedError,
    RecoveryError,
    UnauthorizedError,
)
from websockets.exceptions import ConnectionClosed

from tests.integration.servers import API_KEY
from tests.pyclient.proxy import CuttingProxy


@pytest.fixture
def http(server):
    with HTTPClient(server.url, API_KEY) as client:
        yield client


def test_subscribe_publish_presence_and_history(server, flavour, http):
    channel = f"presence-ops-{flavour.name}"
    token = http.token("svc", info={"role": "service"}, channels=["presence-*"], publish=True)
    with flavour.connect(server.ws_url + "/ws", token) as client:
        assert client.user == "svc"
        with client.subscribe(channel) as subscription:
            offsets = [client.publish(channel, {"n": n}) for n in range(3)]
            received = [subscription.recv(10) for _ in range(3)]
            assert [(m.offset, m.data, m.sender) for m in received] == [
                (offset, {"n": n}, "svc") for n, offset in enumerate(offsets)
            ]
            members = client.presence(channel)
            assert [(m.user, m.info) for m in members] == [("svc", {"role": "service"})]
            assert http.channels()[channel] == 1
    history = http.history(channel)
    assert [m.data for m in history.messages] == [{"n": 0}, {"n": 1}, {"n": 2}]
    assert (history.epoch, history.offset) == (received[0].epoch, offsets[-1])
    assert [m.offset for m in http.history(channel, since=offsets[0], limit=1).messages] == [offsets[1]]


def test_since_replays_what_the_channel_holds_then_goes_live(server, flavour, http):
    channel = f"replay-{flavour.name}"
    first = [http.publish(channel, f"old {n}") for n in range(3)]
    with flavour.connect(server.ws_url + "/ws") as client:
        subscription = client.subscribe(channel, since=first[0])
        assert [subscription.recv(10).data for _ in range(2)] == ["old 1", "old 2"]
        http.publish(channel, "new")
        message = subscription.recv(10)
        assert (message.data, message.offset, message.sender) == ("new", first[-1] + 1, None)


def test_presence_channels_yield_joins_and_leaves_when_asked(server, flavour):
    channel = f"presence-lobby-{flavour.name}"
    with flavour.connect(server.ws_url + "/ws", server.token("ann")) as ann:
        watching = ann.subscribe(channel, presence=True)
        with flavour.connect(server.ws_url + "/ws", server.token("bob", info={"x": 1})) as bob:
            bob.subscribe(channel)
            assert watching.recv(10) == Join(channel, "bob", {"x": 1})
            bob.publish(channel, "hi")
            assert watching.recv(10).data == "hi"
        assert watching.recv(10) == Leave(channel, "bob", {"x": 1})


def test_unsubscribing_ends_the_iteration_and_the_server_forgets(server, flavour, http):
    channel = f"brief-{flavour.name}"
    with flavour.connect(server.ws_url + "/ws") as client:
        with client.subscribe(channel) as subscription:
            client.publish(channel, 1)
            assert subscription.recv(10).data == 1
        assert list(subscription) == []
        assert channel not in http.channels()
        with pytest.raises(NotSubscribedError) as refused:
            client.unsubscribe("never-subscribed")
        assert refused.value.code == "not_subscribed" and refused.value.message
        again = client.subscribe(channel)  # the channel can be subscribed again
        client.publish(channel, 2)
        assert again.recv(10).data == 2
    assert list(again) == []  # closing the client ends every subscription
    with pytest.raises(ClientClosed):
        client.publish(channel, 3)


def test_a_publish_whose_reply_is_lost_is_sent_again_and_lands_once(server, flavour):
    """The connection dies five times with the reply on its way; the publish is stored once."""
    channel = f"lost-{flavour.name}"
    proxy = CuttingProxy(server.port, cut=lambda data: b'"offset"' in data, times=5)
    try:
        with flavour.connect(server.ws_url + "/ws") as watcher:
            subscription = watcher.subscribe(channel)
            with flavour.connect(f"ws://127.0.0.1:{proxy.port}/ws") as publisher:
                offset = publisher.publish(channel, "once")
            assert proxy.cuts == 5
            message = subscription.recv(10)
            assert (message.data, message.offset) == ("once", offset)
            watcher.publish(channel, "next")
            assert subscription.recv(10).data == "next"  # nothing came in between
    finally:
        proxy.close()


def test_a_restart_is_reported_never_a_silent_gap(start_server, flavour):
    """One worker, in-process history: after a restart the old offsets mean nothing, and the
    subscriber is told so before the first message of the new server."""
    server = start_server()
    fetched = []

    def token() -> str:  # a callable: called again for every connection
        fetched.append(server.port)
        return server.token("ann")

    with flavour.connect(server.ws_url + "/ws", token) as client:
        subscription = client.subscribe("room")
        client.publish("room", "before")
        assert subscription.recv(10).data == "before"
        server.stop()
        server = start_server(port=server.port)
        offset = client.publish("room", "after")
        with pytest.raises(RecoveryError) as unrecovered:
            subscription.recv(10)
        gap = unrecovered.value
        assert (gap.channel, gap.since, gap.offset) == ("room", 1, 0)
        assert gap.previous_epoch != gap.epoch and "epoch" in gap.reason
        message = subscription.recv(10)  # and it goes on
        assert (message.data, message.offset, message.epoch) == ("after", offset, gap.epoch)
    assert len(fetched) >= 2  # at least once more, for the connection to the new server


def test_the_unrecovered_callback_is_told_instead(start_server, flavour):
    server = start_server()
    told: list[RecoveryError] = []
    with flavour.connect(server.ws_url + "/ws") as client:
        subscription = client.subscribe("room", on_unrecovered=told.append)
        client.publish("room", "before")
        assert subscription.recv(10).data == "before"
        server.stop()
        server = start_server(port=server.port)
        client.publish("room", "after")
        assert subscription.recv(10).data == "after"
        assert [gap.since for gap in told] == [1]


def test_a_token_about_to_expire_is_refreshed_on_the_same_connection(start_server, flavour):
    # Warned at once (60 s ahead); the server checks expiry every second (ping interval 2 s).
    server = start_server({"SWITCHBOARD_PING_INTERVAL": "2"})
    calls = []

    def token() -> str:
        calls.append(time.time())
        return server.token("ann", ttl=3 if len(calls) == 1 else 3600)

    with flavour.connect(server.ws_url + "/ws", token) as client:
        subscription = client.subscribe("room")
        # A witness whose token runs out no sooner than the client's first one, and is never
        # refreshed: the server's pass over its connections that closes the witness also found the
        # client's first token run out, so the client, unless refreshed, was closed no later.
        witness = server.client(token=server.token("witness", ttl=3))
        frames = [witness.next_push("token_expiring")]
        with pytest.raises(ConnectionClosed):
            while True:
                frames.append(witness.recv(timeout=30))
        assert (frames[-1]["type"], frames[-1]["message"]) == ("error", "token expired")
        client.publish("room", "still here")
        assert subscription.recv(10).data == "still here"
        counters = server.api("GET", "/api/stats")[1]["counters"]
        assert (counters.get("in_refresh"), counters["connections_opened"]) == (1, 2), "refreshed, never reconnected"
        assert len(calls) == 2


def test_a_token_that_cannot_be_renewed_ends_the_client_with_unauthorized(start_server, flavour):
    server = start_server({"SWITCHBOARD_PING_INTERVAL": "2"})
    with flavour.connect(server.ws_url + "/ws", server.token("ann", ttl=2)) as client:
        subscription = client.subscribe("room")
        with pytest.raises(UnauthorizedError, match="expired"):
            subscription.recv(15)
        with pytest.raises(UnauthorizedError):
            client.publish("room", "no")
