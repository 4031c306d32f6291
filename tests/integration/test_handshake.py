"""The `/ws` handshake as clients really send it: whole or split across packets. Switchboard's
worker answers whole handshakes itself and leaves the rest to Gunicorn and the Flask route
(switchboard_server/transport/worker.py); a client cannot tell which did."""

from __future__ import annotations

import json
import socket
import time

import pytest

from switchboard_server.transport.worker import FIRST_REQUEST_WAIT, _parse_head
from tests.integration.servers import masked_frame

PATHS = ("/ws", "/ws/echo")

HEAD = (
    b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


class Frames:
    """Reads the 101 response, then text frames, off a raw socket."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock, self.data = sock, b""
        while b"\r\n\r\n" not in self.data:
            self.data += self._recv()
        status, _, self.data = self.data.partition(b"\r\n\r\n")
        assert status.startswith(b"HTTP/1.1 101"), status

    def _recv(self) -> bytes:
        chunk = self.sock.recv(4096)
        if not chunk:
            raise ConnectionError("the server closed the connection")
        return chunk

    def next(self) -> dict:
        while len(self.data) < 2 or len(self.data) < 2 + (self.data[1] & 0x7F):
            self.data += self._recv()
        length = self.data[1] & 0x7F
        frame, self.data = json.loads(self.data[2 : 2 + length]), self.data[2 + length :]
        return frame


@pytest.mark.parametrize(
    "split", [None, 20, len(HEAD) - 2], ids=["whole", "split-in-the-request-line", "split-at-the-end"]
)
def test_a_handshake_in_one_or_two_packets(server, split):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if split is None:
            sock.sendall(HEAD)
        else:
            sock.sendall(HEAD[:split])
            sock.sendall(HEAD[split:])
        frames = Frames(sock)
        assert frames.next()["type"] == "welcome"
        sock.sendall(masked_frame(b'{"type":"ping","id":7}'))
        assert frames.next() == {"type": "reply", "id": 7, "result": {"pong": True}}


def test_a_request_that_arrives_after_the_keep_alive_time_is_still_answered(server):
    """As in a reconnect storm, when a client's first packets were dropped by a full listen queue
    and TCP resends them seconds later: the connection is not closed on a client on its way."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        time.sleep(3)  # Gunicorn's keep-alive (gunicorn.conf.py) is 2 seconds
        sock.sendall(HEAD)
        assert Frames(sock).next()["type"] == "welcome"


def test_a_connection_that_never_sends_a_request_is_closed(start_server):
    server = start_server()  # one broker is enough: the wait is the worker's, whatever the broker
    with socket.create_connection(("127.0.0.1", server.port), timeout=FIRST_REQUEST_WAIT + 10) as sock:
        started = time.monotonic()
        assert sock.recv(1) == b""
        assert time.monotonic() - started >= FIRST_REQUEST_WAIT - 1


def test_the_head_parser_takes_only_whole_websocket_requests_it_can_answer():
    path, query, headers, size = _parse_head(HEAD.replace(b"/ws ", b"/ws?token=a%20b ") + b"rest", PATHS)
    assert (path, query, size) == ("/ws", "token=a%20b", len(HEAD) + len("?token=a%20b"))
    assert headers["sec-websocket-version"] == "13" and headers["upgrade"] == "websocket"
    doubled = _parse_head(HEAD.replace(b"Connection: Upgrade", b"Connection: keep-alive\r\nConnection: Upgrade"), PATHS)
    assert doubled[2]["connection"] == "keep-alive, Upgrade"
    for other in (
        HEAD[:-2],  # not whole yet
        HEAD.replace(b"GET /ws ", b"GET /wsx "),  # another route
        HEAD.replace(b"GET /ws ", b"GET /api/channels "),
        HEAD.replace(b"HTTP/1.1", b"HTTP/1.0"),
        HEAD.replace(b"Upgrade: websocket", b"Upgrade : websocket"),  # malformed: Gunicorn says so
        b"POST /ws HTTP/1.1\r\n\r\n",
    ):
        assert _parse_head(other, PATHS) is None
