"""What the hub asks of a connection's protocol: its messages, and the moments only it can word.

Each route picks a session for its connections: the native protocol's (hub/native.py), GraphQL's,
Pusher's, or the echo below. The hub itself stays protocol-neutral: it calls these hooks when a
token is about to expire or has, and when the server shuts down; each protocol says it its way.
"""

from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Any

from hub.connection import Connection, check_text
from hub.frames import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, OP_TEXT, encode_frame

if TYPE_CHECKING:
    from hub.brokers.base import Gap


class Session:
    """One protocol's handling of a connection. Stateless ones serve every connection at once."""

    def on_messages(self, conn: Connection, messages: list[tuple[int, bytes]]) -> None:
        """What one read brought, in order; a protocol may override this to batch its work."""
        for opcode, payload in messages:
            if conn.closing:
                return
            self.on_message(conn, opcode, payload)

    def on_message(self, conn: Connection, opcode: int, payload: bytes) -> None:
        raise NotImplementedError

    def token_expiring(self, conn: Connection) -> None:
        """The connection's token expires within the warning time (`conn.expires`)."""

    def token_expired(self, conn: Connection) -> None:
        conn.close(CLOSE_POLICY_VIOLATION, "token expired")

    def going_away(self, conn: Connection) -> None:
        """The server is shutting down: the client should come back (to another worker)."""
        conn.close(CLOSE_GOING_AWAY, "server shutting down")

    def messages_lost(self, conn: Connection, key: Any, gap: Gap) -> None:
        """Messages of the channel that the subscription `key` names were lost before reaching
        this worker (`gap`): tell the client, and end the subscription unless the protocol has no
        way to recover (`Hub.messages_lost`)."""

    def closed(self, conn: Connection) -> None:
        """The connection is gone and the hub has undone its subscriptions."""


class Echo(Session):
    """`/ws/echo`, the article's ping-pong: every message comes straight back."""

    def __init__(self, counters: Counter[str]) -> None:
        self._counters = counters

    def on_message(self, conn: Connection, opcode: int, payload: bytes) -> None:
        self._counters["in_echo"] += 1
        if opcode == OP_TEXT:
            check_text(payload)
        conn.send(encode_frame(payload, opcode))
