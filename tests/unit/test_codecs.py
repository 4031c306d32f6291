"""The codec seam: one frame per codec per publication, whatever the number of subscribers.

A real hub with connections over socket pairs; a second codec stands in for another protocol
(GraphQL, Pusher) on the same channel as native subscribers.
"""

from __future__ import annotations

import json
import socket

import gevent

from switchboard_server.core.auth import ANONYMOUS
from switchboard_server.core.codecs import Announcement, Publication
from switchboard_server.core.config import Config
from switchboard_server.state import SwitchboardState
from switchboard_server.transport.frames import OP_TEXT, encode_frame


class Shouting:
    """Another wire format: the native JSON inside `{"shout": ...}`; it counts how often it is asked."""

    def __init__(self) -> None:
        self.framed = 0

    def message_frame(self, publication: Publication) -> bytes:
        self.framed += 1
        return encode_frame(b'{"shout":' + publication.payload + b"}")

    def member_frame(self, announcement: Announcement) -> bytes:
        return encode_frame(b'{"shout":' + announcement.payload + b"}")


def frames(sock: socket.socket) -> list[dict]:
    gevent.sleep(0)  # let the flusher write
    data = b""
    while True:
        try:
            data += sock.recv(1 << 20)
        except BlockingIOError:
            break
    out = []
    while data:
        length = data[1] & 0x7F
        out.append(json.loads(data[2 : 2 + length]))
        data = data[2 + length :]
    return out


class Hubside:
    def __init__(self) -> None:
        state = SwitchboardState(Config(rate_messages=0))
        self.hub, self.native = state.hub, state.native

    def connect(self):
        server_side, client = socket.socketpair()
        client.setblocking(False)
        return self.hub.open(server_side, ANONYMOUS), client


def test_each_codec_frames_a_publication_once_for_all_its_subscribers():
    side = Hubside()
    shouting = Shouting()
    native, native_socket = side.connect()
    side.native.on_message(native, OP_TEXT, b'{"type":"subscribe","channel":"room","id":1}')
    others = [side.connect() for _ in range(3)]
    for conn, _ in others:
        side.hub.subscribe(conn, "room", "room", shouting, conn)
    for n in range(4):
        side.hub.publish("room", n)
    assert shouting.framed == 4
    pushes = frames(native_socket)
    assert [p["data"] for p in pushes if p["type"] == "message"] == [0, 1, 2, 3]
    for _conn, client in others:
        assert [p["shout"]["data"] for p in frames(client) if p["shout"]["type"] == "message"] == [0, 1, 2, 3]


def test_an_excluded_connection_is_skipped_by_every_codec():
    side = Hubside()
    shouting = Shouting()
    sender, sender_socket = side.connect()
    side.hub.subscribe(sender, "room", "room", shouting, sender)
    listener, listener_socket = side.connect()
    side.native.on_message(listener, OP_TEXT, b'{"type":"subscribe","channel":"room","id":1}')
    side.hub.publish("room", "not back to the sender", event="client-typing", exclude=sender.id)
    assert [p for p in frames(sender_socket) if p["shout"]["type"] == "message"] == []
    message = [p for p in frames(listener_socket) if p["type"] == "message"][0]
    assert message["event"] == "client-typing" and message["data"] == "not back to the sender"


def test_a_codec_hears_joins_the_native_one_pushes_only_on_presence_channels():
    side = Hubside()
    shouting = Shouting()
    watcher, watcher_socket = side.connect()
    side.hub.subscribe(watcher, "room", "room", shouting, watcher)
    native_watcher, native_socket = side.connect()
    side.native.on_message(native_watcher, OP_TEXT, b'{"type":"subscribe","channel":"room","id":1}')
    assert [p["shout"]["type"] for p in frames(watcher_socket)] == ["join"]
    assert [p["type"] for p in frames(native_socket)] == ["reply"]


def test_closing_a_connection_undoes_its_subscriptions_under_every_codec():
    side = Hubside()
    conn, _client = side.connect()
    side.hub.subscribe(conn, "a", "room", Shouting(), conn)
    side.hub.on_close(conn)
    assert side.hub.channels == {} and side.hub.local_channel_counts() == {}
