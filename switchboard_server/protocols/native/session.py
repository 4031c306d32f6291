"""The native `/ws` protocol on the hub (docs/protocol.md): commands in, hub calls, replies out.

`commands.py` beside it parses and frames; this module decides what each command does, with the
hub's protocol-neutral operations, and counts what happened; `codec.py` frames what channels carry.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING

from switchboard_server.core.auth import ANONYMOUS, Identity
from switchboard_server.core.channels import PRESENCE_PREFIX, pushes_members
from switchboard_server.core.errors import ProtocolError
from switchboard_server.core.hooks import client_of, connect_identity
from switchboard_server.core.session import Session
from switchboard_server.protocols.native import commands
from switchboard_server.protocols.native.codec import NATIVE
from switchboard_server.protocols.native.commands import Command
from switchboard_server.transport.connection import Connection, check_text
from switchboard_server.transport.frames import CLOSE_POLICY_VIOLATION, OP_TEXT
from switchboard_server.transport.handshake import Handshake, Refusal, log_refusal

if TYPE_CHECKING:
    from switchboard_server.core.codecs import Gap
    from switchboard_server.core.hub import Hub

log = logging.getLogger("switchboard.hub")


def _who(conn: Connection) -> dict:
    """The fields that name a connection in a log line (never its token)."""
    return {"client": conn.id, "user": conn.user, "address": conn.address}


class NativeSession(Session):
    """Every `/ws` connection of a hub; the protocol keeps no state beyond the connection's own."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.counters = hub.counters

    def serve(self, conn: Connection) -> None:
        """Greet the client, then read its commands until it goes (in the connection's greenlet)."""
        conn.send(commands.welcome_frame(conn.id, conn.user, conn.info))
        self.counters["out_welcome"] += 1
        self.hub.serve(conn, self)

    def entry(self, handshake: Handshake) -> tuple[Callable[[Connection], None], Identity]:
        """How a `/ws` handshake will run: served, or told after the upgrade why it may not stay.

        Connection limits refuse before the upgrade (`Refusal`, with a status). A bad token and the
        application's connect hook refusing are told after it, since browsers cannot read a refused
        handshake. Plain values in, so the Flask route and the Gunicorn worker's fast path decide alike.
        """
        address = handshake.address
        identity = ANONYMOUS
        try:
            token = handshake.args.get("token")
            if token is not None:
                identity = self.hub.tokens.verify(token)
            identity = connect_identity(self.hub.hooks, handshake, identity)
            self.hub.admit(identity, address)
        except ProtocolError as error:
            if error.code not in ("unauthorized", "forbidden", "internal"):
                raise Refusal(error.code, error.message, error.http_status) from None
            log_refusal(self.counters, address, error.code, error.message)
            return partial(self.refuse, error=error), identity
        return self.serve, identity

    def refuse(self, conn: Connection, error: ProtocolError) -> None:
        """Tell a client why it may not stay (say, an expired token), then close with 1008."""
        conn.queue(commands.error_frame(None, error.code, error.message))
        self.counters["out_error"] += 1
        conn.close(CLOSE_POLICY_VIOLATION, error.message)
        self.hub.serve(conn, self)

    def on_messages(self, conn: Connection, messages: list[tuple[int, bytes]]) -> None:
        """What one read brought: each command runs in order, except that a run of publishes goes
        to the broker together (one Redis round trip for a client's burst, not one each)."""
        publishes: list[Command] = []
        for opcode, payload in messages:
            if conn.closing:
                break
            command = self._parse(conn, opcode, payload)
            if command is None:
                continue
            if command.type == "publish":
                publishes.append(command)
                continue
            if publishes:
                self._publish(conn, publishes)
                publishes = []
            self._run(conn, command)
        if publishes:
            self._publish(conn, publishes)

    def on_message(self, conn: Connection, opcode: int, payload: bytes) -> None:
        self.on_messages(conn, [(opcode, payload)])

    def _parse(self, conn: Connection, opcode: int, payload: bytes) -> Command | None:
        """The message's command, or None once it has been answered with the error it earned."""
        if not self.hub.within_rate(conn, len(payload)):
            if not conn.closing:
                conn.send(commands.error_frame(None, "rate_limited", "too many messages: slow down"))
                self.counters["out_error"] += 1
            return None
        try:
            if opcode != OP_TEXT:
                raise ProtocolError("bad_json", "binary frames are not accepted; send JSON text frames")
            command = commands.parse_command(payload)
        except ProtocolError as error:
            if error.code == "bad_json" and opcode == OP_TEXT:
                check_text(payload)  # not UTF-8 at all: RFC 6455 says close 1007
            self.counters["in_invalid"] += 1
            self._refuse_command(conn, error.id, error)
            return None
        self.counters["in_" + command.type] += 1
        return command

    def _run(self, conn: Connection, command: Command) -> None:
        try:
            getattr(self, "_on_" + command.type)(conn, command)
            self.counters["out_reply"] += 1
        except ProtocolError as error:
            self._refuse_command(conn, command.id, error)

    def _refuse_command(self, conn: Connection, command_id: object, error: ProtocolError) -> None:
        self.counters["errors_" + error.code] += 1
        self.counters["out_error"] += 1
        # Debug only: a client can earn an error per message, and must not be able to flood the log.
        log.debug("command error", extra={**_who(conn), "code": error.code, "reason": error.message})
        conn.send(commands.error_frame(command_id, error.code, error.message))

    def token_expiring(self, conn: Connection) -> None:
        conn.send(commands.token_expiring_frame(conn.expires))
        self.counters["out_token_expiring"] += 1

    def token_expired(self, conn: Connection) -> None:
        conn.queue(commands.error_frame(None, "unauthorized", "token expired"))
        self.counters["out_error"] += 1
        super().token_expired(conn)

    def messages_lost(self, conn: Connection, sub_id: object, gap: Gap) -> None:
        """End the subscription with an `unrecoverable` error naming its channel: the client
        subscribes again with `since` and `epoch`, and the reply's `recovered` says what could
        be replayed, as after any reconnect."""
        self.hub.unsubscribe(conn, sub_id)
        conn.enqueue(commands.unrecoverable_frame(gap.channel, gap.epoch, gap.offset))
        self.counters["out_error"] += 1
        self.counters["errors_unrecoverable"] += 1

    # -- commands --------------------------------------------------------------------------

    def _on_subscribe(self, conn: Connection, command: Command) -> None:
        name = command.channel
        if name in conn.subscriptions:
            # Already live: everything since then has been delivered; just say where things stand.
            history = self.hub.broker.history(name, None)
            result = {"channel": name, "epoch": history.epoch, "offset": history.offset, "recovered": True}
            conn.send(commands.reply_frame(command.id, {**result, **self._presence_state(name)}))
            return
        if command.token is not None:
            conn.grants.add_channel(name, self.hub.tokens.verify_subscription(command.token, conn.user, name))

        def reply(result: dict) -> None:
            body = {"channel": name, **result, **self._presence_state(name)}
            conn.queue(commands.reply_frame(command.id, body))

        self.hub.subscribe(conn, name, name, NATIVE, conn, command.since, command.epoch, reply)

    def _presence_state(self, name: str) -> dict:
        """For a `presence-` channel's subscribe reply: its member count, and whether join/leave
        are pushed (past the push limit the client asks with `presence` instead). Nothing when
        the broker cannot say: the reply must not fail on it."""
        if not name.startswith(PRESENCE_PREFIX):
            return {}
        try:
            members = self.hub.member_count(name)
        except ProtocolError:
            return {}
        return {"members": members, "presence_pushes": pushes_members(members, self.hub.config.presence_push_limit)}

    def _on_refresh(self, conn: Connection, command: Command) -> None:
        """A fresh connection token for the same user, before the old one expires."""
        expires = self.hub.refresh(conn, command.token)
        conn.send(commands.reply_frame(command.id, {"expires": expires}))

    def _on_unsubscribe(self, conn: Connection, command: Command) -> None:
        if not self.hub.unsubscribe(conn, command.channel):
            raise ProtocolError("not_subscribed", f"not subscribed to {command.channel!r}")
        conn.send(commands.reply_frame(command.id, {"channel": command.channel}))

    def _publish(self, conn: Connection, publishes: list[Command]) -> None:
        """A run of publish commands: the permitted ones stored together, each answered in order."""
        refused = {
            i: ProtocolError("forbidden", f"clients may not publish on {c.channel!r}")
            for i, c in enumerate(publishes)
            if not self.hub.may_client_publish(conn.grants, c.channel)
        }
        allowed = [c for i, c in enumerate(publishes) if i not in refused]
        offsets = iter(
            self.hub.publish_many(
                [(c.channel, c.data, conn.user, c.idempotency_key, c.event) for c in allowed], by=conn
            )
        )
        for i, command in enumerate(publishes):
            result = refused.get(i) or next(offsets)
            if isinstance(result, ProtocolError):
                self._refuse_command(conn, command.id, result)
                continue
            self.counters["publishes_ws"] += 1
            self.counters["out_reply"] += 1
            conn.queue(commands.reply_frame(command.id, {"channel": command.channel, "offset": result}))
        conn.flush()

    def _on_presence(self, conn: Connection, command: Command) -> None:
        members = self.hub.presence(command.channel)
        conn.send(commands.reply_frame(command.id, {"channel": command.channel, "members": members}))

    def _on_rpc(self, conn: Connection, command: Command) -> None:
        """Call the application's function by name, in this connection's greenlet; its result is
        the reply's `data`."""
        function = self.hub.hooks.rpc.get(command.method)
        if function is None:
            raise ProtocolError("not_found", f"no RPC method {command.method[:64]!r} on this server")
        result = self.hub.hooks.call(f"rpc {command.method!r}", function, client_of(conn), command.data)
        try:
            frame = commands.reply_frame(command.id, {"data": result})
        except TypeError:  # orjson's JSONEncodeError
            log.error("RPC method %r returned %r, which is not JSON", command.method, type(result).__name__)
            raise ProtocolError("internal", f"the server's rpc {command.method!r} hook failed") from None
        conn.send(frame)

    def _on_ping(self, conn: Connection, command: Command) -> None:
        conn.send(commands.reply_frame(command.id, {"pong": True}))
