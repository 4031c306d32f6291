"""Synchronous-style routes: a plain function `def game(ws)` that reads and writes one WebSocket.

The `ws` it is given behaves like flask-sock's (`receive`, `send`, `close`, `connected`, and
`ConnectionClosed` once the socket is gone) and adds the hub's channels (`subscribe`, `publish`,
`presence`). Publications of a channel it subscribed to are framed once by the native codec and
go straight to the client socket in the fan-out, as on `/ws`; `receive` returns only what the
client sent.

One greenlet serves such a connection, as on `/ws`: the function's. The socket is read by gevent's
loop itself (`Connection.watch`): whenever it is readable, the loop reads it, answers pings, sees
the client's close and puts messages in the inbox, so pings are answered, a close is seen at once
and `connected` tells the truth while the function does anything else (sleeps, waits on a queue,
sends a clock tick), as flask-sock's reader thread does, at no greenlet's cost. Once the socket is
done, a greenlet that lives only for that forgets the connection in the hub (subscriptions,
presence, the disconnect hook), even if the function is still busy elsewhere.

This module never touches a socket or Flask: routes/sync.py gives it the function, wrapped in a
copy of the handshake's request context.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

import gevent
import greenlet
from gevent.hub import Waiter

from switchboard_server.core.session import Session
from switchboard_server.protocols.native import commands
from switchboard_server.protocols.native.codec import NATIVE
from switchboard_server.transport.connection import Connection, check_text
from switchboard_server.transport.frames import (
    CLOSE_INTERNAL_ERROR,
    CLOSE_NORMAL,
    CLOSE_POLICY_VIOLATION,
    OP_BINARY,
    OP_TEXT,
    encode_frame,
)

if TYPE_CHECKING:
    from switchboard_server.core.codecs import Gap
    from switchboard_server.core.hub import Hub

log = logging.getLogger("switchboard.sync")

# The close code a ConnectionClosed carries when the socket ended without any close frame.
CLOSE_ABNORMAL = 1006


class ConnectionClosed(Exception):
    """The WebSocket is closed, by the client or by the server: `reason` is the close code and
    `message` its text, as simple_websocket's exception (flask-sock's) has them."""

    def __init__(self, reason: int = CLOSE_ABNORMAL, message: str | None = None) -> None:
        super().__init__(f"Connection closed: {reason} {message or ''}".rstrip())
        self.reason = reason
        self.message = message


class SyncSession(Session):
    """One sync route connection's inbox: the loop's reading puts the client's messages in, the
    function takes them out.

    The inbox is bounded like the send queue (SWITCHBOARD_SEND_QUEUE_*): a client that sends
    faster than the function receives is closed with 1008, rather than parking the reading (which
    would stop it answering pings and seeing closes).
    """

    __slots__ = ("hub", "inbox", "ended", "_size", "_taker")

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.inbox: deque[str | bytes] = deque()
        self.ended = False  # the socket is done: nothing more will come
        self._size = 0
        self._taker: Waiter | None = None  # the function, waiting in `take`

    def on_messages(self, conn: Connection, messages: list[tuple[int, bytes]]) -> None:
        counters = self.hub.counters
        config = self.hub.config
        for opcode, payload in messages:
            if conn.closing:
                break
            if not self.hub.within_rate(conn, len(payload)):
                # No protocol here to word an error in: the client learns from the close.
                conn.close(CLOSE_POLICY_VIOLATION, "rate limit exceeded")
                break
            counters["in_sync"] += 1
            self.inbox.append(check_text(payload) if opcode == OP_TEXT else payload)
            self._size += len(payload)
            if len(self.inbox) > config.send_queue_messages or self._size > config.send_queue_bytes:
                conn.close(CLOSE_POLICY_VIOLATION, "the route is not keeping up: receive queue limit exceeded")
                break
        self._wake()

    def take(self, conn: Connection, timeout: float | None) -> str | bytes | None:
        """The next message (what was read before a close is still returned); None after
        `timeout` seconds without one; ConnectionClosed once the socket is closing or gone."""
        while not self.inbox:
            if self.ended or conn.closing:
                raise closed_error(conn)
            if timeout is not None and timeout <= 0:
                return None
            if not self._wait(timeout):
                return None
        message = self.inbox.popleft()
        self._size -= len(message)
        return message

    def _wait(self, timeout: float | None) -> bool:
        """Park the function until a message or the end wakes it (True) or `timeout` passes (False)."""
        waiter = self._taker = Waiter()
        timer = None
        if timeout is not None:
            timer = gevent.get_hub().loop.timer(timeout)
            timer.start(waiter.switch, False)
        try:
            return waiter.get()
        finally:
            self._taker = None
            if timer is not None:
                timer.close()

    def _wake(self) -> None:
        # From the loop's reading (the event loop's greenlet), straight to the function: it runs
        # until it waits again, then the read's callback returns. From any other greenlet a
        # switch to it is not allowed, so it goes through a loop callback.
        waiter, self._taker = self._taker, None
        if waiter is None:
            return
        event_loop = gevent.get_hub()
        if greenlet.getcurrent() is event_loop:
            waiter.switch(True)
        else:
            event_loop.loop.run_callback(waiter.switch, True)

    def messages_lost(self, conn: Connection, sub_id: Any, gap: Gap) -> None:
        """As on `/ws`: the subscription ends and the client is told `unrecoverable`."""
        self.hub.unsubscribe(conn, sub_id)
        conn.enqueue(commands.unrecoverable_frame(gap.channel, gap.epoch, gap.offset))

    def closed(self, conn: Connection) -> None:
        self.ended = True
        self._wake()


def closed_error(conn: Connection) -> ConnectionClosed:
    """The client's close code and text if it sent one, else the server's, else 1006."""
    return ConnectionClosed(conn.close_code or CLOSE_ABNORMAL, conn.close_reason or None)


class WebSocket:
    """What a sync route's function is given: flask-sock's `ws`, plus the hub's channels."""

    __slots__ = ("_hub", "_conn", "_session")

    def __init__(self, hub: Hub, conn: Connection, session: SyncSession) -> None:
        self._hub = hub
        self._conn = conn
        self._session = session

    def __repr__(self) -> str:
        return f"<WebSocket {self._conn.id} user={self._conn.user!r}>"

    @property
    def connected(self) -> bool:
        """False once either side has started to close."""
        return not self._conn.closing

    @property
    def user(self) -> str:
        """The token's user (`?token=` on the handshake), or the connection's id without one."""
        return self._conn.user

    def receive(self, timeout: float | None = None) -> str | bytes | None:
        """The client's next message, str for text and bytes for binary; None after `timeout`
        seconds (0: only what has arrived); ConnectionClosed once the socket closes."""
        return self._session.take(self._conn, timeout)

    def __iter__(self) -> Iterator[str | bytes]:
        """Every message until the socket closes (then the loop just ends)."""
        while True:
            try:
                yield self.receive()
            except ConnectionClosed:
                return

    def send(self, data: str | bytes) -> None:
        """Send bytes as a binary message, anything else as text (str of it). Never blocks: a
        client that does not read is closed as a slow consumer (1008) at the send queue limit."""
        self._check_open()
        if isinstance(data, bytes | bytearray | memoryview):
            self._conn.send(encode_frame(bytes(data), OP_BINARY))
        else:
            self._conn.send(encode_frame(str(data).encode("utf-8")))

    def close(self, reason: int | None = None, message: str | None = None) -> None:
        """Start the closing handshake with `reason` (1000 by default); ConnectionClosed if it
        was already closed, as in flask-sock."""
        self._check_open()
        self._conn.close(reason or CLOSE_NORMAL, message or "")

    def subscribe(self, channel: str, since: int | None = None) -> dict | None:
        """Have `channel`'s publications sent to this client (the native push, as a text frame),
        held ones after offset `since` first. Returns `{"epoch", "offset", "recovered"}`, or None
        if already subscribed. Raises ProtocolError when refused (a protected channel, too many)."""
        self._check_open()
        conn = self._conn
        if channel in conn.subscriptions:
            return None
        result = self._hub.subscribe(conn, channel, channel, NATIVE, conn, since)
        if self._session.ended:  # closed while the broker answered: the hub has already let go
            self._hub.unsubscribe(conn, channel)
            raise closed_error(conn)
        return result

    def unsubscribe(self, channel: str) -> bool:
        """Stop `channel`'s publications; False if it was not subscribed."""
        return self._hub.unsubscribe(self._conn, channel)

    def publish(self, channel: str, data: Any, *, event: str | None = None, idempotency_key: str | None = None) -> int:
        """Publish to every subscriber of `channel` (this client too, if subscribed), from this
        connection's user; returns the offset. Server code decides: no grant is checked."""
        offset = self._hub.publish(channel, data, sender=self._conn.user, idempotency_key=idempotency_key, event=event)
        self._hub.counters["publishes_sync"] += 1
        return offset

    def presence(self, channel: str) -> list[dict]:
        """Who is on `channel`, across every worker: `[{"user", "info"}, ...]`."""
        return self._hub.presence(channel)

    def _check_open(self) -> None:
        if self._conn.closing:
            raise closed_error(self._conn)


def runner(hub: Hub, function: Callable[[WebSocket], None], name: str) -> Callable[[Connection], None]:
    """What the handshake runs in the connection's greenlet: `function(ws)` on that connection."""
    return partial(_serve, hub, function, name)


def _serve(hub: Hub, function: Callable[[WebSocket], None], name: str, conn: Connection) -> None:
    """Have the loop read the socket, then run the function in this greenlet. Its return closes
    with 1000, an exception with 1011 and its traceback in the log, and ConnectionClosed (the
    client went) with nothing more to say."""
    session = SyncSession(hub)
    hub.watch(conn, session)
    code, reason = CLOSE_NORMAL, ""
    try:
        function(WebSocket(hub, conn, session))
    except ConnectionClosed:
        pass
    except Exception:  # the route's bug costs its own connection only
        log.exception("sync route %s failed on connection %s", name, conn.id)
        code, reason = CLOSE_INTERNAL_ERROR, "internal error"
    conn.close(code, reason)
