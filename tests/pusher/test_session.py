"""Pusher sessions on a real hub, over socket pairs: what a client sends, what it and others get.

No server and no Pusher client here (the integration tests have both); channel signatures come
from the `pusher` server library, as an application's auth endpoint would make them.
"""

from __future__ import annotations

import json
import socket
import struct

import gevent
import pusher
import pytest

from switchboard_server.core.auth import Identity
from switchboard_server.core.config import Config
from switchboard_server.core.errors import ProtocolError
from switchboard_server.protocols.native.codec import NATIVE
from switchboard_server.protocols.pusher.apps import parse_apps
from switchboard_server.protocols.pusher.service import PusherService
from switchboard_server.state import SwitchboardState
from switchboard_server.transport.frames import OP_BINARY, OP_TEXT

APP = pusher.Pusher(app_id="1", key="key1", secret="secret1", host="127.0.0.1", port=1, ssl=False)
OTHER_APP = pusher.Pusher(app_id="2", key="key2", secret="secret2", host="127.0.0.1", port=1, ssl=False)


class Client:
    """One Pusher connection on the hub and the socket its frames arrive on."""

    def __init__(self, service: PusherService, key: str = "key1") -> None:
        self.session = service.sessions[key]
        self.hub = service.hub
        socket_id = service.new_socket_id()
        server_side, self.socket = socket.socketpair()
        self.socket.setblocking(False)
        self.conn = self.hub.open(server_side, Identity(user=socket_id), client_id=socket_id)
        self.id = socket_id
        self.closed_with: int | None = None

    def send(self, event: str, data=None, channel: str | None = None) -> None:
        message = {"event": event, "data": data if data is not None else {}}
        if channel is not None:
            message["channel"] = channel
        self.session.on_message(self.conn, OP_TEXT, json.dumps(message).encode())

    def frames(self) -> list[dict]:
        gevent.sleep(0)  # let the flusher write
        data = b""
        while True:
            try:
                data += self.socket.recv(1 << 20)
            except BlockingIOError:
                break
        out = []
        while data:
            opcode, length, start = data[0] & 0x0F, data[1] & 0x7F, 2
            if length == 126:
                length, start = struct.unpack("!H", data[2:4])[0], 4
            payload, data = data[start : start + length], data[start + length :]
            if opcode == 0x8:
                self.closed_with = struct.unpack("!H", payload[:2])[0]
            else:
                out.append(json.loads(payload))
        return out

    def subscribe(self, channel: str, **auth) -> list[dict]:
        self.send("pusher:subscribe", {"channel": channel, **auth})
        return self.frames()


def make_service(**config) -> PusherService:
    hub = SwitchboardState(Config(**{"rate_messages": 0, **config})).hub
    return PusherService(hub, parse_apps("1:key1:secret1,2:key2:secret2"))


@pytest.fixture
def service() -> PusherService:
    return make_service()


def data(frame: dict):
    return json.loads(frame["data"])


def test_a_public_subscription_hears_publishes_of_every_protocol(service):
    client = Client(service)
    assert [f["event"] for f in client.subscribe("room")] == ["pusher_internal:subscription_succeeded"]
    service.hub.publish("room", {"text": "from a native client"}, sender="ann")
    service.hub.publish("room", "plain text", event="news")
    assert [(f["event"], f["data"]) for f in client.frames()] == [
        ("message", '{"text":"from a native client"}'),
        ("news", "plain text"),
    ]


def test_a_private_channel_needs_the_app_s_signature_for_this_socket(service):
    client, other = Client(service), Client(service)
    forged = OTHER_APP.authenticate("private-doc", client.id)["auth"]
    for auth in (None, forged, APP.authenticate("private-doc", other.id)["auth"]):
        frames = client.subscribe("private-doc", **({"auth": auth} if auth else {}))
        assert [f["event"] for f in frames] == ["pusher:subscription_error", "pusher:error"]
        assert frames[0]["channel"] == "private-doc" and frames[0]["data"]["status"] == 401
        assert frames[1]["data"]["code"] == 4009 and "Invalid signature" in frames[1]["data"]["message"]
    assert "private-doc" not in client.conn.subscriptions and not client.conn.closing
    ok = client.subscribe("private-doc", **APP.authenticate("private-doc", client.id))
    assert [f["event"] for f in ok] == ["pusher_internal:subscription_succeeded"]


def test_presence_lists_members_announces_joins_and_leaves_and_tags_client_events(service):
    ann, ben = Client(service), Client(service)
    ann.subscribe("presence-room", **APP.authenticate("presence-room", ann.id, {"user_id": "ann", "user_info": 1}))
    joined = ben.subscribe("presence-room", **APP.authenticate("presence-room", ben.id, {"user_id": 7}))
    assert data(joined[0])["presence"] == {"ids": ["ann", "7"], "hash": {"ann": 1, "7": None}, "count": 2}
    assert [(f["event"], data(f)) for f in ann.frames()] == [
        ("pusher_internal:member_added", {"user_id": "7", "user_info": None})
    ]
    native = service.hub.open(socket.socketpair()[0], Identity(user="nat", channels=("presence-*",)))
    service.hub.subscribe(native, "presence-room", "presence-room", NATIVE, native)
    assert [data(f)["user_id"] for f in ann.frames() + ben.frames()] == ["nat", "nat"]
    ben.send("client-typing", {"who": "ben"}, "presence-room")
    assert ben.frames() == [], "a client event never goes back to its sender"
    assert [(f["event"], f["user_id"], data(f)) for f in ann.frames()] == [("client-typing", "7", {"who": "ben"})]
    service.hub.on_close(ben.conn)
    assert [(f["event"], data(f)) for f in ann.frames()] == [("pusher_internal:member_removed", {"user_id": "7"})]


@pytest.mark.parametrize("channel", ["room", "private-elsewhere", None])
def test_client_events_only_on_private_and_presence_channels_one_subscribed_to(service, channel):
    client = Client(service)
    client.subscribe("room")
    client.send("client-hello", {}, channel)
    assert [(f["event"], f["data"]["code"]) for f in client.frames()] == [("pusher:error", 4009)]


def test_bad_input_gets_an_error_and_loses_nothing(service):
    client = Client(service)
    client.subscribe("room")
    for payload in (b"{", b'{"event":"pusher:nonsense"}', b'{"event":"pusher:subscribe","data":"room"}'):
        client.session.on_message(client.conn, OP_TEXT, payload)
    client.session.on_message(client.conn, OP_BINARY, b"\x00")
    errors = client.frames()
    assert [f["event"] for f in errors] == ["pusher:error"] * 4 and all(f["data"]["code"] is None for f in errors)
    for name in ("private-encrypted-x", "bad:name", "x" * 129):
        assert client.subscribe(name)[0]["event"] == "pusher:subscription_error"
    service.hub.publish("room", "still here")
    assert [f["data"] for f in client.frames()] == ["still here"] and not client.conn.closing


def test_apps_are_isolated_and_their_channels_stay_protected_from_native_clients(service):
    first, second = Client(service, "key1"), Client(service, "key2")
    first.subscribe("room")
    second.subscribe("room")
    assert "private-2:room" in service.hub.channels
    service.hub.publish("private-2:room", "for the second app")
    assert [f["data"] for f in second.frames()] == ["for the second app"] and first.frames() == []
    native = service.hub.open(socket.socketpair()[0], Identity(user="nat"))
    with pytest.raises(ProtocolError, match="protected"):
        service.hub.subscribe(native, "x", "private-2:room", NATIVE, native)


def test_shutdown_closes_with_4200_so_clients_reconnect_at_once(service):
    client = Client(service)
    client.session.going_away(client.conn)
    assert client.frames()[0]["data"]["code"] == 4200 and client.closed_with == 4200


def test_a_flood_is_told_4301():
    client = Client(make_service(rate_messages=2))
    for _ in range(3):
        client.send("pusher:ping")
    assert [f["event"] for f in client.frames()] == ["pusher:pong", "pusher:pong", "pusher:error"]
