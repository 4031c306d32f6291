"""The brokers' observers hear a channel's first and last subscriber and a user's first and last
subscription, once each: a real hub with the in-process broker, connections over socket pairs.

The Redis broker's side of the same contract (decided inside its scripts, reported by one worker
of a cluster, dead workers included) is exercised with real servers in tests/pusher/test_webhooks.py.
"""

from __future__ import annotations

import socket

from switchboard_server.core.auth import Identity
from switchboard_server.core.config import Config
from switchboard_server.core.hub import Hub
from switchboard_server.protocols.native.codec import NATIVE
from switchboard_server.state import SwitchboardState


class Recorder:
    """A BrokerObserver that writes down what it is told."""

    def __init__(self) -> None:
        self.heard: list[tuple] = []

    def channel_occupied(self, channel: str) -> None:
        self.heard.append(("occupied", channel))

    def channel_vacated(self, channel: str) -> None:
        self.heard.append(("vacated", channel))

    def member_added(self, channel: str, member: dict) -> None:
        self.heard.append(("added", channel, member["user"]))

    def member_removed(self, channel: str, member: dict) -> None:
        self.heard.append(("removed", channel, member["user"]))


class Broken:
    """An observer with a bug: it must cost nothing but a log line."""

    def __getattr__(self, name: str):
        def fail(*args: object) -> None:
            raise RuntimeError(f"{name} failed")

        return fail


def hub_with(*observers) -> Hub:
    hub = SwitchboardState(Config(rate_messages=0)).hub
    for observer in observers:
        hub.broker.observers.add(observer)
    return hub


def connect(hub: Hub, user: str):
    server_side, client = socket.socketpair()
    client.setblocking(False)
    return hub.open(server_side, Identity(user=user, channels=("presence-*",))), client


def test_first_and_last_subscriber_and_member_are_heard_once():
    recorder = Recorder()
    hub = hub_with(recorder)
    (ann, _a), (ann_tab, _b), (ben, _c) = connect(hub, "ann"), connect(hub, "ann"), connect(hub, "ben")
    for conn in (ann, ann_tab, ben):
        hub.subscribe(conn, "presence-room", "presence-room", NATIVE, conn)
    assert recorder.heard == [
        ("added", "presence-room", "ann"),
        ("occupied", "presence-room"),
        ("added", "presence-room", "ben"),
    ]
    recorder.heard.clear()
    hub.unsubscribe(ann, "presence-room")
    hub.on_close(ben)
    assert recorder.heard == [("removed", "presence-room", "ben")]
    hub.on_close(ann_tab)
    assert sorted(recorder.heard[1:]) == [("removed", "presence-room", "ann"), ("vacated", "presence-room")]


def test_a_failing_observer_stops_neither_the_hub_nor_the_others():
    recorder = Recorder()
    hub = hub_with(Broken(), recorder)
    conn, _client = connect(hub, "cat")
    assert hub.subscribe(conn, "news", "news", NATIVE, conn) is not None
    hub.on_close(conn)
    assert [event[0] for event in recorder.heard] == ["added", "occupied", "vacated", "removed"]
    assert hub.channels == {}
