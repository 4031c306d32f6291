"""What the hub asks of a connection's protocol: its messages, and the moments only it can word.

Each route picks a session for its connections: one of the protocols' (protocols/: native,
echo, GraphQL, Pusher). The hub itself stays protocol-neutral: it calls these hooks when a
token is about to expire or has, and when the server shuts down; each protocol says it its way.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from switchboard_server.transport.connection import Connection
from switchboard_server.transport.frames import CLOSE_GOING_AWAY, CLOSE_POLICY_VIOLATION, CLOSE_SERVICE_RESTART

if TYPE_CHECKING:
    from switchboard_server.core.codecs import Gap


def restart_reason(within_ms: int) -> str:
    """The close reason of a drain, read by the clients (docs/protocol.md): keep its words."""
    return f"server restarting: reconnect within {within_ms} ms"


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

    def restarting(self, conn: Connection, within_ms: int) -> None:
        """The worker is draining (core/drain.py): the client should come back, to another
        instance, at a random moment within `within_ms` milliseconds. 1012 (Service Restart) is
        the WebSocket code for it, and every client of ours and graphql-ws reconnect on it."""
        conn.close(CLOSE_SERVICE_RESTART, restart_reason(within_ms))

    def messages_lost(self, conn: Connection, sub_id: Any, gap: Gap) -> None:
        """Messages of the channel that the subscription `sub_id` names were lost before reaching
        this worker (`gap`): tell the client, and end the subscription unless the protocol has no
        way to recover (`Hub.messages_lost`)."""

    def closed(self, conn: Connection) -> None:
        """The connection is gone and the hub has undone its subscriptions."""
