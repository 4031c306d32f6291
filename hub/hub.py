"""The hub: channels, fan-out and presence for the connections of one worker.

Everything a command can do happens here, in plain Python with no Flask and no socket: the
handlers hand it connections and HTTP calls, and it answers by queueing frames on connections.
Offsets, history and cluster-wide presence belong to the broker (in-process or Redis); the broker
hands every message back through `deliver`, where it is framed once for all local subscribers.
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
from hub.brokers import Broker, make_broker
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
)
from hub.limits import TokenBucket

log = logging.getLogger("switchboard.hub")

_PING_FRAME = encode_frame(b"", OP_PING)


def _who(conn: Connection) -> dict:
    """The fields that name a connection in a log line (never its token)."""
    return {"client": conn.id, "user": conn.user, "address": conn.address}


class Hub:
    """One worker's engine. Create one per app; every method is called from greenlets of one thread."""

    def __init__(self, config: Config, broker: Broker | None = None) -> None:
        self.config = config
        self.broker = broker if broker is not None else make_broker(config)
        self.broker.attach(self)
        self.tokens = TokenAuthority(config.token_secret)
        self.channels: dict[str, Channel] = {}
        self.connections: dict[str, Connection] = {}
        self._per_address: dict[str, int] = {}
        self.counters: Counter[str] = Counter()
        self.flusher = Flusher()
        self._maintenance: gevent.Greenlet | None = None

    # -- connections -----------------------------------------------------------------------

    def admit(self, identity: Identity, address: str) -> None:
        """Refuse a handshake (before the upgrade) that would pass a connection limit."""
        if identity.user is None and not self.config.allow_anonymous:
            raise ProtocolError("unauthorized", "anonymous connections are not allowed: connect with ?token=<JWT>")
        if len(self.connections) >= self.config.max_connections:
            raise ProtocolError("server_full", "this worker is at its connection limit; try again later")
        per_address = self.config.max_connections_per_address
        if per_address and self._per_address.get(address, 0) >= per_address:
            raise ProtocolError("too_many_connections", f"at most {per_address} connections per client address")

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
        conn.grants = identity.grants()
        conn.expires = identity.expires
        if self.config.rate_messages:
            rate_bytes = max(self.config.rate_bytes, self.config.max_message_size)
            conn.bucket = TokenBucket(self.config.rate_messages, rate_bytes)
        self.connections[client_id] = conn
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self.counters["connections_opened"] += 1
        log.info("connect", extra=_who(conn))
        self._start_maintenance()
        return conn

    def serve(self, conn: Connection) -> None:
        """Run a `/ws` connection until it ends (call in the connection's own greenlet)."""
        conn.send(commands.welcome_frame(conn.id, conn.user, conn.info))
        self.counters["out_welcome"] += 1
        if conn.expires is not None:
            self._check_expiry(conn, time.time())
        conn.serve(FrameParser(self.config.max_message_size), self.on_message, self.on_close)

    def serve_echo(self, conn: Connection) -> None:
        """Run a `/ws/echo` connection: every message comes straight back."""
        conn.serve(FrameParser(self.config.max_message_size), self._echo, self.on_close)

    def refuse(self, conn: Connection, error: ProtocolError) -> None:
        """Tell a client why it may not stay (say, an expired token), then close with 1008."""
        conn.queue(commands.error_frame(None, error.code, error.message))
        self.counters["out_error"] += 1
        conn.close(CLOSE_POLICY_VIOLATION, error.message)
        conn.serve(FrameParser(self.config.max_message_size), self._echo, self.on_close)

    def _echo(self, conn: Connection, opcode: int, payload: bytes) -> None:
        self.counters["in_echo"] += 1
        if opcode == OP_TEXT:
            check_text(payload)
        conn.send(encode_frame(payload, opcode))

    def on_message(self, conn: Connection, opcode: int, payload: bytes) -> None:
        """One client message: run the command, or answer with the error it earned."""
        command = None
        bucket = conn.bucket
        if bucket is not None and not bucket.take(len(payload)):
            self.counters["in_rate_limited"] += 1
            self.counters["errors_rate_limited"] += 1
            if bucket.refused > self.config.rate_messages:
                # More than a second's worth refused in a row: not a burst, abuse.
                self.counters["closed_for_abuse"] += 1
                conn.close(CLOSE_POLICY_VIOLATION, "rate limit exceeded repeatedly")
            else:
                conn.send(commands.error_frame(None, "rate_limited", "too many messages: slow down"))
                self.counters["out_error"] += 1
            return
        try:
            if opcode != OP_TEXT:
                raise ProtocolError("bad_json", "binary frames are not accepted; send JSON text frames")
            command = commands.parse_command(payload)
            self.counters["in_" + command.type] += 1
            getattr(self, "_on_" + command.type)(conn, command)
            self.counters["out_reply"] += 1
        except ProtocolError as error:
            if error.code == "bad_json" and opcode == OP_TEXT:
                check_text(payload)  # not UTF-8 at all: RFC 6455 says close 1007
            if command is None:
                self.counters["in_invalid"] += 1
            self.counters["errors_" + error.code] += 1
            self.counters["out_error"] += 1
            command_id = command.id if command is not None else error.id
            # Debug only: a client can earn an error per message, and must not be able to flood the log.
            log.debug("command error", extra={**_who(conn), "code": error.code, "reason": error.message})
            conn.send(commands.error_frame(command_id, error.code, error.message))

    def on_close(self, conn: Connection) -> None:
        """Forget a connection: leave every channel (pushing `leave` where it was the last tab)."""
        self.connections.pop(conn.id, None)
        remaining = self._per_address.pop(conn.address, 1) - 1
        if remaining:
            self._per_address[conn.address] = remaining
        for name in list(conn.channels):
            self._unsubscribe(conn, name)
        self.counters["connections_closed"] += 1
        # No close frame at all is 1006 (RFC 6455 7.1.5); application codes share one label.
        code = conn.close_code or 1006
        self.counters[f"close_{code if code < 3000 else '3000-4999'}"] += 1
        log.info(
            "disconnect",
            extra={
                **_who(conn),
                "duration": round(time.monotonic() - conn.opened_at, 3),
                "code": code,
                "reason": conn.close_reason,
                "messages_in": conn.messages_in,
                "messages_out": conn.messages_out,
            },
        )

    def _count_slow(self, conn: Connection) -> None:
        self.counters["slow_consumers_closed"] += 1
        log.warning(
            "slow consumer closed",
            extra={**_who(conn), "channels": len(conn.channels), "messages_out": conn.messages_out},
        )

    # -- commands --------------------------------------------------------------------------

    def _on_subscribe(self, conn: Connection, command: Command) -> None:
        name = command.channel
        channel = self.channels.get(name)
        if channel is not None and conn in channel.subscribers:
            # Already live: everything since then has been delivered; just say where things stand.
            history = self.broker.history(name, None)
            result = {"channel": name, "epoch": history.epoch, "offset": history.offset, "recovered": True}
            conn.send(commands.reply_frame(command.id, result))
            return
        self._check_subscribe(conn, command)
        if channel is None:
            channel = self.channels[name] = Channel(name)
        # Subscribe first, read history second: messages arriving in between wait in the backlog.
        backlog: list = []
        channel.catching_up[conn] = backlog
        try:
            self.broker.listen(name)
            history = self.broker.history(name, command.since)
        except ProtocolError:
            self._drop_subscriber(channel, conn)
            raise
        if channel.catching_up.get(conn) is not backlog:
            return  # the connection went away while the broker answered
        # Be a member before the reply, so whoever hears the reply can see us.
        if channel.add_member(conn.user, conn.info):
            self.broker.join(name, {"user": conn.user, "info": conn.info}, conn.id)
        recovered = history.complete and (command.epoch is None or command.epoch == history.epoch)
        if command.epoch is not None and command.epoch != history.epoch:
            history.entries = []  # offsets of another epoch mean nothing here
        result = {"channel": name, "epoch": history.epoch, "offset": history.offset, "recovered": recovered}
        conn.queue(commands.reply_frame(command.id, result))
        self.counters["out_message"] += len(history.entries)
        for _offset, payload in history.entries:
            conn.queue(encode_frame(payload))
        for offset, frame in backlog:
            if offset > history.offset or offset == 0:
                conn.queue(frame)
        del channel.catching_up[conn]
        channel.subscribers[conn] = None
        conn.channels.add(name)
        conn.flush()
        self.broker.count(name, len(channel.subscribers))

    def _check_subscribe(self, conn: Connection, command: Command) -> None:
        """Refuse a subscription the connection may not have (before any state is touched)."""
        name = command.channel
        if command.token is not None:
            conn.grants.add_channel(name, self.tokens.verify_subscription(command.token, conn.user, name))
        if len(conn.channels) >= self.config.max_subscriptions:
            raise ProtocolError(
                "too_many_subscriptions", f"at most {self.config.max_subscriptions} channels per connection"
            )
        if not conn.grants.may_subscribe(name):
            raise ProtocolError(
                "forbidden", f"{name!r} is a protected channel: it needs a grant in your token or a subscription token"
            )

    def _on_refresh(self, conn: Connection, command: Command) -> None:
        """A fresh connection token for the same user, before the old one expires."""
        identity = self.tokens.verify(command.token)
        if identity.user != conn.user:
            raise ProtocolError("forbidden", "a refreshed token must be for the same user")
        subscription_grants = conn.grants.channels
        conn.grants = identity.grants()
        conn.grants.channels = subscription_grants
        conn.expires, conn.warned = identity.expires, False
        conn.send(commands.reply_frame(command.id, {"expires": identity.expires}))

    def _on_unsubscribe(self, conn: Connection, command: Command) -> None:
        if command.channel not in conn.channels:
            raise ProtocolError("not_subscribed", f"not subscribed to {command.channel!r}")
        self._unsubscribe(conn, command.channel)
        conn.send(commands.reply_frame(command.id, {"channel": command.channel}))

    def _on_publish(self, conn: Connection, command: Command) -> None:
        if not conn.grants.may_publish(command.channel, self.config.client_publish):
            raise ProtocolError("forbidden", f"clients may not publish on {command.channel!r}")
        offset = self.publish(command.channel, command.data, conn.user, command.key)
        self.counters["publishes_ws"] += 1
        conn.send(commands.reply_frame(command.id, {"channel": command.channel, "offset": offset}))

    def _on_presence(self, conn: Connection, command: Command) -> None:
        members = self.presence(command.channel)
        conn.send(commands.reply_frame(command.id, {"channel": command.channel, "members": members}))

    def _on_ping(self, conn: Connection, command: Command) -> None:
        conn.send(commands.reply_frame(command.id, {"pong": True}))

    # -- the operations the HTTP API shares ------------------------------------------------

    def publish(self, name: str, data: Any, sender: str | None = None, key: str | None = None) -> int:
        """Store and fan out one message everywhere; returns its offset. Never blocks on a subscriber.

        A publish with an idempotency `key` that the channel saw within the idempotency window
        delivers nothing and returns the first one's offset: a caller may retry without fear.
        """
        head, tail = commands.message_parts(validate_channel(name), data, sender)
        return self.broker.publish(name, head, tail, key)

    def deliver(self, name: str, offset: int, payload: bytes) -> None:
        """A message for local subscribers, from the broker: framed once, queued for each."""
        channel = self.channels.get(name)
        if channel is None:
            return
        frame = encode_frame(payload)
        # Counted once per message, not per recipient: this loop is the hot path, and it
        # allocates nothing per subscriber (a tuple per subscriber here cost 2x in garbage
        # collection on bursts to 5,000).
        self.counters["out_message"] += len(channel.subscribers)
        for conn in tuple(channel.subscribers):
            conn.enqueue(frame)
        for backlog in channel.catching_up.values():
            backlog.append((offset, frame))

    def announce(self, name: str, payload: bytes, skip: str) -> None:
        """A join or leave, from the broker, for local subscribers of a presence- channel."""
        channel = self.channels.get(name)
        if channel is None or not channel.announces:
            return
        frame = encode_frame(payload)
        for conn in tuple(channel.subscribers):
            if conn.id != skip:
                conn.enqueue(frame)
                self.counters["out_presence"] += 1
        for conn, backlog in channel.catching_up.items():
            if conn.id != skip:
                backlog.append((0, frame))

    def presence(self, name: str) -> list[dict]:
        return self.broker.members(validate_channel(name))

    def history(self, name: str, since: int = 0, limit: int | None = None) -> tuple[str, int, list[bytes]]:
        """The epoch, the last offset and the JSON of each held message after `since` (oldest first)."""
        history = self.broker.history(validate_channel(name), since, limit)
        return history.epoch, history.offset, [payload for _offset, payload in history.entries]

    def channel_counts(self) -> dict[str, int]:
        """Channels with at least one subscriber, and how many, across every worker."""
        return self.broker.channel_counts()

    def local_channel_counts(self) -> dict[str, int]:
        """Channels with at least one subscriber on this worker, and how many."""
        return {name: len(channel.subscribers) for name, channel in self.channels.items() if channel.subscribers}

    # -- internals -------------------------------------------------------------------------

    def _unsubscribe(self, conn: Connection, name: str) -> None:
        conn.channels.discard(name)
        channel = self.channels.get(name)
        if channel is None or conn not in channel.subscribers:
            return
        member = channel.remove_member(conn.user)
        self._drop_subscriber(channel, conn)
        self.broker.count(name, len(channel.subscribers))
        if member is not None:
            self.broker.leave(name, member)

    def _drop_subscriber(self, channel: Channel, conn: Connection) -> None:
        """Forget a subscriber; the last one out tells the broker and drops the channel here."""
        channel.subscribers.pop(conn, None)
        channel.catching_up.pop(conn, None)
        if not channel.subscribers and not channel.catching_up:
            del self.channels[channel.name]
            self.broker.unlisten(channel.name)

    def _start_maintenance(self) -> None:
        if self._maintenance is None:
            self._maintenance = gevent.spawn(self._maintain)

    def _maintain(self) -> None:
        """Every few seconds: ping quiet sockets, cut dead ones, let the broker do its upkeep."""
        interval = self.config.ping_interval
        while True:
            gevent.sleep(min(interval / 2, self.config.presence_ttl / 3, 5.0))
            now = time.monotonic()
            wall = time.time()
            for conn in tuple(self.connections.values()):
                if conn.expires is not None:
                    self._check_expiry(conn, wall)
                quiet = now - conn.last_seen
                if quiet > 2 * interval:
                    log.info("closing %s: nothing received for %.0f s", conn.id, quiet)
                    conn.abort()
                elif quiet > interval:
                    conn.enqueue(_PING_FRAME)
            self.broker.maintain()

    def _check_expiry(self, conn: Connection, now: float) -> None:
        """Warn a connection whose token is about to expire; close it once it has."""
        if now >= conn.expires:
            conn.queue(commands.error_frame(None, "unauthorized", "token expired"))
            self.counters["out_error"] += 1
            conn.close(CLOSE_POLICY_VIOLATION, "token expired")
        elif not conn.warned and conn.expires - now <= self.config.token_warning:
            conn.warned = True
            conn.send(commands.token_expiring_frame(conn.expires))
            self.counters["out_token_expiring"] += 1

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
        self.broker.close()
