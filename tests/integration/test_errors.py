"""Bad input gets a clear error and costs the client nothing more, except where RFC 6455 says close."""

from __future__ import annotations

import json
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.servers import RawSocket


@pytest.mark.parametrize(
    ("frame", "code", "echoed_id"),
    [
        ("{not json", "bad_json", None),
        ('["a", "list"]', "bad_command", None),
        ('{"type": "dance", "id": 5}', "bad_command", 5),
        ('{"type": "subscribe", "id": "s1"}', "invalid_channel", "s1"),
        ('{"type": "subscribe", "channel": "has spaces", "id": 6}', "invalid_channel", 6),
        ('{"type": "subscribe", "channel": "' + "x" * 129 + '", "id": 7}', "invalid_channel", 7),
        ('{"type": "unsubscribe", "channel": "never-joined", "id": 8}', "not_subscribed", 8),
        ('{"type": "publish", "channel": "room", "id": 9}', "bad_command", 9),
        ('{"type": "subscribe", "channel": "room", "since": -1, "id": 10}', "bad_command", 10),
        ('{"type": "ping", "id": {"nested": true}}', "bad_command", None),
        ('{"type": "publish", "channel": "room", "data": ' + "[" * 300 + "]" * 300 + ', "id": 11}', "bad_json", 11),
    ],
)
def test_each_bad_command_gets_its_error_and_keeps_the_connection(server, frame, code, echoed_id):
    with server.client() as client:
        client.send(frame)
        error = client.recv()
        assert error["type"] == "error" and error["code"] == code and error["id"] == echoed_id
        assert error["message"]
        # The connection is still fully usable.
        assert client.command("subscribe", channel="room")["type"] == "reply"


def test_binary_frames_are_refused_politely(server):
    with server.client() as client:
        client.send(b"\x00\x01")
        assert client.recv()["code"] == "bad_json"
        assert client.command("ping")["type"] == "reply"


def test_oversize_frame_closes_with_1009(start_server):
    server = start_server({"SWITCHBOARD_MAX_MESSAGE_SIZE": "1024"})
    with server.client() as bystander:
        bystander.command("subscribe", channel="room")
        raw = RawSocket(server.port)
        # Only the header announces 10 MB: the server must refuse before reading (or buffering) it.
        raw.send_frame(b"", length=10_000_000)
        assert raw.close_code() == 1009
        raw.close()
        with server.client() as sender:
            sender.command("publish", channel="room", data="still here")
        assert bystander.next_push("message")["data"] == "still here"


def test_invalid_utf8_text_closes_with_1007(server):
    raw = RawSocket(server.port)
    raw.send_frame(b'{"type":"ping","x":"\xff\xfe"}')
    assert raw.close_code() == 1007
    raw.close()


def test_unmasked_frames_close_with_1002(server):
    raw = RawSocket(server.port)
    raw.sock.sendall(b"\x81\x02hi")
    assert raw.close_code() == 1002
    raw.close()


def test_bad_token_is_told_unauthorized_then_closed(server):
    for token in ("not-a-jwt", server.token("zoe", ttl=0.001)):
        time.sleep(0.01)
        with pytest.raises(ConnectionClosed) as closed:
            with server.client(token=token) as client:
                assert client.welcome["type"] == "error" and client.welcome["code"] == "unauthorized"
                client.recv()
        assert closed.value.rcvd.code == 1008


def test_expired_token_message_says_expired(server):
    token = server.token("yan", ttl=0.001)
    time.sleep(0.01)
    raw = RawSocket(server.port, path=f"/ws?token={token}")
    opcode, payload = next(raw.frames())
    assert json.loads(payload) == {"type": "error", "id": None, "code": "unauthorized", "message": "token expired"}
    assert raw.close_code() == 1008
    raw.close()


def test_foreign_origin_is_refused_before_upgrade(start_server):
    server = start_server({"SWITCHBOARD_ALLOWED_ORIGINS": "https://app.example"})
    with pytest.raises(InvalidStatus) as refused:
        server.client(origin="https://evil.example")
    assert refused.value.response.status_code == 403
    assert "evil.example" in server.log()
    with server.client(origin="https://app.example") as allowed:
        assert allowed.welcome["type"] == "welcome"


def test_plain_http_on_the_websocket_route_is_refused(server):
    raw = RawSocket(server.port, headers={"Sec-WebSocket-Version": "8"})
    assert raw.status == 426
