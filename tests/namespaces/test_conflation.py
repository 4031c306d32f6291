"""Conflation with a deliberately slow reader beside a fast one, with each broker: on a `ticker.`
channel (conflated per `symbol`, tests/namespaces/host.py), a raw socket that stops reading is
neither closed nor sent a queue of stale prices: once it reads, it gets the latest per symbol,
while the fast subscriber gets every message."""

from __future__ import annotations

import base64
import itertools
import json
import os
import socket
import struct
import time

from tests.integration.servers import Client, Server

SYMBOLS = [f"S{n}" for n in range(10)]
# Enough to fill the kernel's buffers between the server and the slow reader many times over.
ROUNDS, PER_ROUND, PADDING = 30, 50, "x" * 8000

_names = itertools.count()


class SlowReader:
    """A WebSocket client on a raw socket with a tiny receive buffer, which reads only when told."""

    def __init__(self, server: Server, path: str = "/ws") -> None:
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connect: a small window
        self.sock.connect(("127.0.0.1", server.port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        assert data, "the server closed the connection"
        return data

    def send(self, message: dict) -> None:
        """A masked text frame (the mask is zeros, so the payload reads as it is)."""
        payload = json.dumps(message).encode()
        assert len(payload) < 126
        self.sock.sendall(bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def frame(self) -> tuple[int, bytes]:
        """The next frame from the server: its opcode and payload."""
        while True:
            parsed = _parse(self.buffer)
            if parsed is not None:
                opcode, payload, self.buffer = parsed
                return opcode, payload
            self.buffer += self._recv()

    def close(self) -> None:
        self.sock.close()


def _parse(buffer: bytes) -> tuple[int, bytes, bytes] | None:
    if len(buffer) < 2:
        return None
    opcode, length, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
    if length == 126:
        if len(buffer) < 4:
            return None
        length, start = struct.unpack("!H", buffer[2:4])[0], 4
    elif length == 127:
        if len(buffer) < 10:
            return None
        length, start = struct.unpack("!Q", buffer[2:10])[0], 10
    if len(buffer) < start + length:
        return None
    return opcode, buffer[start : start + length], buffer[start + length :]


def publish_rounds(publisher: Client, fast: Client, channel: str) -> dict[str, int]:
    """Publish ROUNDS x PER_ROUND prices, each round once the fast subscriber has read the one
    before (so it keeps up, by construction); returns the last `n` published per symbol."""
    last: dict[str, int] = {}
    received = []
    n = 0
    for _round in range(ROUNDS):
        for _ in range(PER_ROUND):
            symbol = SYMBOLS[n % len(SYMBOLS)]
            publisher.send(
                {"type": "publish", "id": n, "channel": channel, "data": {"symbol": symbol, "n": n, "pad": PADDING}}
            )
            last[symbol] = n
            n += 1
        for _ in range(PER_ROUND):
            assert publisher.recv()["type"] == "reply"
        received += [message["offset"] for message in fast.messages(PER_ROUND)]
    assert received == list(range(1, n + 1))  # every message, in order, none skipped
    return last


def test_a_slow_reader_gets_the_latest_per_key_and_is_not_closed_while_a_fast_one_gets_every_message(host):
    channel = f"ticker.c{next(_names)}"
    slow = SlowReader(host)
    slow.send({"type": "subscribe", "id": 1, "channel": channel})
    fast, publisher = host.client(), host.client()
    fast.command("subscribe", channel=channel)
    last = publish_rounds(publisher, fast, channel)
    total = ROUNDS * PER_ROUND

    # Now the slow reader reads: everything it gets is in order, and it ends with each latest price.
    latest: dict[str, int] = {}
    offsets = []
    deadline = time.monotonic() + 30
    while latest != last:
        assert time.monotonic() < deadline, f"the latest prices never came: {latest} != {last}"
        opcode, payload = slow.frame()
        assert opcode != 0x8, f"the slow reader was closed: {payload!r}"
        message = json.loads(payload)
        if message["type"] == "message":
            offsets.append(message["offset"])
            latest[message["data"]["symbol"]] = message["data"]["n"]
    assert offsets == sorted(offsets)
    assert len(offsets) < total  # the stale ones were spared
    assert fast.command("ping")["type"] == "reply"
    for client in (slow, fast, publisher):
        client.close()
