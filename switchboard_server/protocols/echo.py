"""`/ws/echo`, the article's ping-pong: the smallest protocol, a session and no codec."""

from __future__ import annotations

from typing import TYPE_CHECKING

from switchboard_server.core.session import Session
from switchboard_server.transport.connection import Connection, check_text
from switchboard_server.transport.frames import OP_TEXT, encode_frame

if TYPE_CHECKING:
    from switchboard_server.core.hub import Hub


class Echo(Session):
    """`/ws/echo`, the article's ping-pong: every message comes straight back."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self._counters = hub.counters

    def serve(self, conn: Connection) -> None:
        """Read the connection until it goes (in its own greenlet)."""
        self.hub.serve(conn, self)

    def on_message(self, conn: Connection, opcode: int, payload: bytes) -> None:
        self._counters["in_echo"] += 1
        if opcode == OP_TEXT:
            check_text(payload)
        conn.send(encode_frame(payload, opcode))
