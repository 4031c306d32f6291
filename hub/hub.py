"""The hub: channels, fan-out, presence and history for the connections of one worker.

Everything a command can do happens here, in plain Python with no Flask and no socket: the
handlers hand it connections and HTTP calls, and it answers by queueing frames on connections.
A publish is encoded once and the same bytes go to every subscriber and into history.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections import Counter
from typing import Any

import gevent

from hub import commands
from hub.auth import Identity, TokenAuthority
from hub.channels import Channel
from hub.commands import Command, validate_channel
from hub.config import Config
from hub.connection import Connection, Flusher, check_text
from hub.errors import ProtocolError
from hub.frames import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    OP_PING,
    OP_TEXT,
    FrameParser,
    encode_frame,
    frame_payload,
)

log = logging.getLogger("switchboard.hub")

_PING_FRAME = encode_frame(b"", OP_PING)


class Hub:
    """One worker's engine. Create one per app; every method is called from greenlets of one thread."""

    def __init__(self, config: Config) -> None:
        self.config = config
        # Changes on every start, so a client holding offsets from before knows they are void.
        self.epoch = secrets.token_hex(4)
        self.tokens = TokenAuthority(config.token_secret)
        self.channels: dict[str, Channel] = {}
        self.connections: dict[str, Connection] = {}
        self.counters: Counter[str] = Counter()
        self.flusher = Flusher()
        self._maintenance: gevent.Greenlet | None = None

    # -- connections -----------------------------------------------------------------------

    def open(self, sock: socket.socket, identity: Identity, address: str = "") -> Connection:
        """Adopt a socket whose handshake is done and greet it; `serve` must run next."""
        client_id = secrets.token_urlsafe(9)
        conn = Connection(
            sock,
            self.flusher,
            client_id=client_id,
            user=identity.user or client_id,
            info=identity.info,
            address=address,
            max_messages=self.config.send_queue_messages,
            max_bytes=self.config.send_queue_bytes,
            on_slow=self._count_slow,
        )
        self.connections[client_id] = conn
        self.counters["connections_opened"] += 1
        self._start_maintenance()
        return conn

    def serve(self, conn: Connection) -> None:
        """Run a `/ws` connection until it ends (call in the connection's own greenlet)."""
        conn.send(commands.welcome_frame(conn.id, conn.user, conn.info))
        conn.serve(FrameParser(self.config.max_message_size), self.on_message, self.on_close)

    def serve_echo(self, conn: Connection) -> None:
        """Run a `/ws/echo` connection: every message comes straight back."""
        conn.serve(FrameParser(self.config.max_message_size), self._echo, self.on_close)

    def refuse(self, conn: Connection, error: ProtocolError) -> None:
        """Tell a client why it may not stay (say, an expired token), then close with 1008."""
        conn.enqueue(commands.error_frame(None, error.code, error.message))
        conn.close(CLOSE_POLICY_VIOLATION, error.message)
        conn.serve(FrameParser(self.config.max_message_size), self._echo, self.on_close)

    def _echo(self, conn: Connection, opcode: int, payload: bytes) -> None:
        if opcode == OP_TEXT:
            check_text(payload)
        conn.send(encode_frame(payload, opcode))

    def on_message(self, conn: Connection, opcode: int, payload: bytes) -> None:
        """One client message: run the command, or answer with the error it earned."""
        command = None
        try:
            if opcode != OP_TEXT:
                raise ProtocolError("bad_json", "binary frames are not accepted; send JSON text frames")
            command = commands.parse_command(payload)
            getattr(self, "_on_" + command.type)(conn, command)
        except ProtocolError as error:
            if error.code == "bad_json" and opcode == OP_TEXT:
                check_text(payload)  # not UTF-8 at all: RFC 6455 says close 1007
            self.counters["errors_" + error.code] += 1
            command_id = command.id if command is not None else error.id
            conn.send(commands.error_frame(command_id, error.code, error.message))

    def on_close(self, conn: Connection) -> None:
        """Forget a connection: leave every channel (pushing `leave` where it was the last tab)."""
        self.connections.pop(conn.id, None)
        for name in list(conn.channels):
            self._unsubscribe(conn, name)
        self.counters["connections_closed"] += 1

    def _count_slow(self, conn: Connection) -> None:
        self.counters["slow_consumers_closed"] += 1
        log.warning("closing slow consumer %s (user %s, %s)", conn.id, conn.user, conn.address)

    # -- commands --------------------------------------------------------------------------

    def _on_subscribe(self, conn: Connection, command: Command) -> None:
        name = command.channel
        channel = self._channel(name)
        frames: list[bytes] = []
        recovered = True
        if command.since is not None:
            if command.epoch is not None and command.epoch != self.epoch:
                recovered = False
            else:
                frames, recovered = channel.since(command.since)
        if name in conn.channels:
            frames = []  # already live: everything since then has been delivered
        result = {"channel": name, "epoch": self.epoch, "offset": channel.last_offset, "recovered": recovered}
        # Reply, then the missed messages, then live ones: nothing yields in between, so there is
        # no gap and no duplicate.
        conn.enqueue(commands.reply_frame(command.id, result))
        for frame in frames:
            conn.enqueue(frame)
        conn.flush()
        if name in conn.channels:
            return
        conn.channels.add(name)
        channel.subscribers[conn] = None
        if channel.add_member(conn.user, conn.info) and channel.announces:
            self._broadcast(channel, commands.member_frame("join", name, {"user": conn.user, "info": conn.info}), conn)

    def _on_unsubscribe(self, conn: Connection, command: Command) -> None:
        if command.channel not in conn.channels:
            raise ProtocolError("not_subscribed", f"not subscribed to {command.channel!r}")
        self._unsubscribe(conn, command.channel)
        conn.send(commands.reply_frame(command.id, {"channel": command.channel}))

    def _on_publish(self, conn: Connection, command: Command) -> None:
        offset = self.publish(command.channel, command.data, conn.user)
        self.counters["publishes_ws"] += 1
        conn.send(commands.reply_frame(command.id, {"channel": command.channel, "offset": offset}))

    def _on_presence(self, conn: Connection, command: Command) -> None:
        members = self.presence(command.channel)
        conn.send(commands.reply_frame(command.id, {"channel": command.channel, "members": members}))

    def _on_ping(self, conn: Connection, command: Command) -> None:
        conn.send(commands.reply_frame(command.id, {"pong": True}))

    # -- the operations the HTTP API shares ------------------------------------------------

    def publish(self, name: str, data: Any, sender: str | None = None) -> int:
        """Store and fan out one message; returns its offset. Never blocks on a subscriber."""
        channel = self._channel(validate_channel(name))
        offset, frame = channel.append(lambda number: commands.message_frame(name, number, data, sender))
        channel.last_active = time.monotonic()
        for conn in tuple(channel.subscribers):
            conn.enqueue(frame)
        return offset

    def presence(self, name: str) -> list[dict]:
        channel = self.channels.get(validate_channel(name))
        return channel.member_list() if channel else []

    def history(self, name: str, since: int = 0, limit: int | None = None) -> tuple[int, list[bytes]]:
        """The last offset and the JSON of each held message after `since` (oldest first)."""
        channel = self.channels.get(validate_channel(name))
        if channel is None:
            return 0, []
        frames, _ = channel.since(since)
        if limit is not None:
            frames = frames[:limit]
        return channel.last_offset, [frame_payload(frame) for frame in frames]

    def channel_counts(self) -> dict[str, int]:
        """Channels with at least one subscriber here, and how many."""
        return {name: len(channel.subscribers) for name, channel in self.channels.items() if channel.subscribers}

    # -- internals -------------------------------------------------------------------------

    def _channel(self, name: str) -> Channel:
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(name, self.config.history_size)
            channel.last_active = time.monotonic()
        return channel

    def _unsubscribe(self, conn: Connection, name: str) -> None:
        conn.channels.discard(name)
        channel = self.channels.get(name)
        if channel is None:
            return
        channel.subscribers.pop(conn, None)
        member = channel.remove_member(conn.user)
        if member is not None and channel.announces:
            self._broadcast(channel, commands.member_frame("leave", name, member), None)

    def _broadcast(self, channel: Channel, frame: bytes, skip: Connection | None) -> None:
        for conn in tuple(channel.subscribers):
            if conn is not skip:
                conn.enqueue(frame)

    def _start_maintenance(self) -> None:
        if self._maintenance is None:
            self._maintenance = gevent.spawn(self._maintain)

    def _maintain(self) -> None:
        """Every few seconds: ping quiet sockets, cut dead ones, drop idle channels."""
        interval = self.config.ping_interval
        while True:
            gevent.sleep(min(interval / 2, 5.0))
            now = time.monotonic()
            for conn in tuple(self.connections.values()):
                quiet = now - conn.last_seen
                if quiet > 2 * interval:
                    log.info("closing %s: nothing received for %.0f s", conn.id, quiet)
                    conn.abort()
                elif quiet > interval:
                    conn.enqueue(_PING_FRAME)
            for name, channel in tuple(self.channels.items()):
                if not channel.subscribers and now - channel.last_active > self.config.history_ttl:
                    del self.channels[name]

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close every connection with 1001 and wait (up to `timeout`) for the handshakes."""
        if self._maintenance is not None:
            self._maintenance.kill(block=False)
            self._maintenance = None
        connections = tuple(self.connections.values())
        for conn in connections:
            conn.close(CLOSE_GOING_AWAY, "server shutting down")
        deadline = time.monotonic() + timeout
        for conn in connections:
            if not conn.wait_closed(max(0.0, deadline - time.monotonic())):
                conn.abort()
