"""One `graphql-transport-ws` connection: the protocol's state machine over the hub.

The socket opens anonymous; `connection_init` must come within the init timeout (else 4408),
once (else 4429), and its token decides who the connection is (a refused one: 4403).
`subscribe` before the `connection_ack` is 4401, and an id already running is 4409; anything
the protocol does not define is 4400. Every refusal of one operation (validation, limits,
grants, an unrecoverable position) is an `error` message for that id, and the connection stays.
Queries and mutations answer with one `next` and a `complete`; subscriptions join the hub with
the operation id as their subscription id, so the hub's own limits and presence apply to each.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import gevent
import orjson
from graphql import GraphQLError, OperationType

from switchboard_server.core.auth import ANONYMOUS
from switchboard_server.core.errors import ProtocolError
from switchboard_server.core.hooks import connect_identity
from switchboard_server.core.session import Session
from switchboard_server.protocols.graphql import messages
from switchboard_server.protocols.graphql.feed import Frames, MessagesFeed, OperationSubscriber, presence_event, run
from switchboard_server.protocols.graphql.messages import BadMessage, Message
from switchboard_server.protocols.graphql.schema import Source, error
from switchboard_server.protocols.graphql.server import GraphQLServer, Refused
from switchboard_server.transport.connection import Connection, check_text
from switchboard_server.transport.frames import OP_TEXT
from switchboard_server.transport.handshake import Handshake

if TYPE_CHECKING:
    from graphql import Executor

    from switchboard_server.core.codecs import Gap
    from switchboard_server.protocols.graphql.documents import Document

log = logging.getLogger("switchboard.graphql")


def _token(payload: dict | None, header_token: str | None) -> str | None:
    """The connection token: `connection_init`'s `token` (or `Authorization: Bearer`), else the
    handshake's Authorization header."""
    if payload:
        token = payload.get("token")
        if token is None:
            scheme, _, token = str(payload.get("Authorization") or payload.get("authorization") or "").partition(" ")
            token = token.strip() if scheme.lower() == "bearer" else None
        if token:
            return str(token)
    return header_token


class GraphQLSession(Session):
    """The state of one connection; the hub calls its hooks like any protocol's."""

    def __init__(
        self, server: GraphQLServer, header_token: str | None = None, handshake: Handshake | None = None
    ) -> None:
        self.server = server
        # What the application's connect hook decides on at connection_init, with the token.
        self._handshake = handshake
        self.hub = server.hub
        self.counters = server.hub.counters
        self._header_token = header_token
        self._initialised = False
        self._acknowledged = False
        # The init timeout: a loop timer, as a closing connection's deadline is, not a greenlet
        # per connection; stopped when connection_init comes or the connection closes.
        self._timer: Any = None

    def serve(self, conn: Connection) -> None:
        """Wait for `connection_init`, then run the connection (in its own greenlet)."""
        self._timer = gevent.get_hub().loop.timer(self.hub.config.graphql_init_timeout)
        self._timer.start(self._init_timeout, conn)
        self.hub.serve(conn, self)

    def refuse_subprotocol(self, conn: Connection) -> None:
        """A client that did not offer `graphql-transport-ws`: 4406, as the protocol's servers do."""
        conn.close(messages.CLOSE_SUBPROTOCOL, f"Subprotocol not acceptable: offer {messages.SUBPROTOCOL}")
        self.hub.serve(conn, self)

    def _init_timeout(self, conn: Connection) -> None:
        """Runs in the event loop's own greenlet: it may queue a close frame, never wait."""
        self._timer = None
        if not self._initialised:
            self.counters["refused_graphql_init_timeout"] += 1
            conn.close(messages.CLOSE_INIT_TIMEOUT, "Connection initialisation timeout")

    # -- the hub's hooks -------------------------------------------------------------------

    def on_message(self, conn: Connection, opcode: int, payload: bytes) -> None:
        if opcode != OP_TEXT:
            conn.close(
                messages.CLOSE_BAD_REQUEST, "Invalid message received: binary frames are not part of the protocol"
            )
            return
        try:
            message = messages.parse_message(payload)
        except BadMessage as bad:
            check_text(payload)  # not UTF-8 at all: RFC 6455 says 1007
            self.counters["in_graphql_invalid"] += 1
            conn.close(messages.CLOSE_BAD_REQUEST, bad.reason)
            return
        self.counters["in_graphql_" + message.type] += 1
        within_rate = self.hub.within_rate(conn, len(payload))
        if conn.closing:  # the rate limit closed it
            return
        if message.type == "connection_init":
            self._on_init(conn, message)
        elif message.type == "subscribe":
            self._on_subscribe(conn, message, within_rate)
        elif message.type == "complete":
            # Always honoured, over the rate too: it only frees what the client holds.
            self.hub.unsubscribe(conn, message.id)
        elif message.type == "ping" and within_rate:
            conn.send(messages.pong_frame(message.payload))

    def token_expired(self, conn: Connection) -> None:
        conn.close(messages.CLOSE_FORBIDDEN, "Forbidden: token expired")

    def closed(self, conn: Connection) -> None:
        self._stop_timer()

    def messages_lost(self, conn: Connection, sub_id: str, gap: Gap) -> None:
        """A `messages` subscription ends with an `unrecoverable` error, as a resume that history
        cannot serve does: the client subscribes again with `since` and `epoch` from the last
        message it has. Presence subscriptions carry no messages, and go on."""
        subscription = conn.subscriptions.get(sub_id)
        if subscription is None or not isinstance(subscription.codec, MessagesFeed):
            return
        self.hub.unsubscribe(conn, sub_id)
        message = (
            f"messages of {gap.channel!r} after offset {gap.offset} of epoch {gap.epoch} were lost on their way to "
            "this server: subscribe again with since and epoch from the last message you have"
        )
        lost = GraphQLError(message, extensions={"code": "unrecoverable", "epoch": gap.epoch, "offset": gap.offset})
        self.counters["errors_graphql_unrecoverable"] += 1
        conn.enqueue(messages.error_frame(messages.encode_id(sub_id), [lost.formatted]))

    def _stop_timer(self) -> None:
        if self._timer is not None:
            self._timer.stop()
            self._timer = None

    # -- messages --------------------------------------------------------------------------

    def _on_init(self, conn: Connection, message: Message) -> None:
        if self._initialised:
            conn.close(messages.CLOSE_TOO_MANY_INITS, "Too many initialisation requests")
            return
        self._initialised = True
        self._stop_timer()
        token = _token(message.payload, self._header_token)
        try:
            identity = self.hub.tokens.verify(token) if token else ANONYMOUS
            if self._handshake is not None:
                identity = connect_identity(self.hub.hooks, self._handshake, identity)
            if identity.user is None and not self.hub.config.allow_anonymous:
                raise ProtocolError("unauthorized", "anonymous connections are not allowed: send a token")
        except ProtocolError as refused:
            self.counters["refused_graphql_" + refused.code] += 1
            log.warning(
                "connection_init refused",
                extra={"client": conn.id, "address": conn.address, "code": refused.code, "reason": refused.message},
            )
            conn.close(messages.CLOSE_FORBIDDEN, f"Forbidden: {refused.message}")
            return
        self.hub.authenticate(conn, identity)
        self._acknowledged = True
        conn.send(messages.ack_frame({"client": conn.id, "user": conn.user, "info": conn.info}))

    def _on_subscribe(self, conn: Connection, message: Message, within_rate: bool) -> None:
        if not self._acknowledged:
            conn.close(messages.CLOSE_UNAUTHORIZED, "Unauthorized")
            return
        if message.id in conn.subscriptions:
            reason = f"Subscriber for {message.id} already exists"
            conn.close(messages.CLOSE_DUPLICATE, reason)
            return
        encoded_id = messages.encode_id(message.id)
        try:
            if not within_rate:
                raise Refused([error("rate_limited", "too many messages: slow down")])
            document, kind = self.server.prepare(message.query, message.operation_name)
            if kind is OperationType.SUBSCRIPTION:
                self._subscribe(conn, message, document, encoded_id)
                return
            result = self.server.execute(document, message.operation_name, message.variables, self.server.caller(conn))
        except Refused as refused:
            self._error(conn, encoded_id, refused.errors)
            return
        conn.queue(messages.next_frame(encoded_id, orjson.dumps(result)))
        conn.send(messages.complete_frame(encoded_id))

    def _subscribe(self, conn: Connection, message: Message, document: Document, encoded_id: bytes) -> None:
        """Join the hub stream the subscription names, framed by its shared feed."""
        source, feed = self.server.source(message.query, document, message.operation_name, message.variables)
        subscriber = OperationSubscriber(conn, encoded_id)
        failures: list[ProtocolError] = []

        def reply(result: dict) -> None:
            if isinstance(feed, MessagesFeed):
                feed.epoch = result["epoch"]
            else:
                self._members(source, feed.executor, subscriber, failures)

        try:
            self.hub.subscribe(
                conn, message.id, source.channel, feed, subscriber, source.since, source.epoch, reply, strict=True
            )
        except ProtocolError as refused:
            self._error(conn, encoded_id, [error(refused.code, refused.message).formatted])
            return
        if failures:
            self.hub.unsubscribe(conn, message.id)
            self._error(conn, encoded_id, [error(failures[0].code, failures[0].message).formatted])

    def _members(self, source: Source, executor: Executor, subscriber: OperationSubscriber, failures: list) -> None:
        """A presence subscription starts with every member (the subscriber is one already)."""
        try:
            members = self.hub.presence(source.channel)
        except ProtocolError as unavailable:
            failures.append(unavailable)  # raising here would leave the hub's subscribe half done
            return
        subscriber.queue(Frames(run(executor, presence_event("members", source.channel, members=members))))

    def _error(self, conn: Connection, encoded_id: bytes, errors: list[dict]) -> None:
        code = (errors[0].get("extensions") or {}).get("code", "invalid")
        self.counters["errors_graphql_" + str(code)] += 1
        conn.send(messages.error_frame(encoded_id, errors))
