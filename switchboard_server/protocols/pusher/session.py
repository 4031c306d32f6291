"""Pusher connections on the hub: `pusher:*` and `client-*` events in, hub calls, Pusher frames out.

One `PusherSession` per app serves all of that app's connections; what a connection subscribed to
lives in `conn.subscriptions` (keyed by Pusher channel name), as for every protocol. A valid channel
signature grants the hub channel to that connection, so the hub's own checks pass; a presence
subscription makes present the member its `channel_data` names. Bad input costs one `pusher:error`
(and, for a subscription, a `pusher:subscription_error` on the channel), never the connection;
the connection closes only where Pusher's clients expect it: 4200 at shutdown (reconnect at once)
and 4201 when a silent peer answered no ping.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import gevent
import orjson

from switchboard_server.core.errors import ProtocolError
from switchboard_server.core.session import Session, restart_reason
from switchboard_server.protocols.pusher import events
from switchboard_server.protocols.pusher.apps import App
from switchboard_server.protocols.pusher.codec import PusherCodec
from switchboard_server.protocols.pusher.events import PRESENCE, PusherError
from switchboard_server.protocols.pusher.signing import channel_auth_text, channel_auth_valid
from switchboard_server.transport.connection import Connection, check_text
from switchboard_server.transport.frames import OP_TEXT

if TYPE_CHECKING:
    from switchboard_server.core.codecs import Gap
    from switchboard_server.core.hub import Hub
    from switchboard_server.protocols.pusher.webhooks import WebhookDispatcher

log = logging.getLogger("switchboard.pusher")

PROTECTED = ("private-", PRESENCE)
ENCRYPTED = "private-encrypted-"
CLOSE_GOING_AWAY = 4200  # Pusher: reconnect immediately
CLOSE_NO_PONG = 4201  # Pusher: pong reply not received
UNAUTHORIZED = 4009
RATE_LIMITED = 4301
_KINDS = {"too_many_subscriptions": "LimitReached", "unavailable": "ServerUnavailable"}


class _Refused(Exception):
    """A subscription refused: `pusher:subscription_error` on the channel, and `pusher:error`."""

    def __init__(self, kind: str, status: int, code: int | None, message: str) -> None:
        super().__init__(message)
        self.kind, self.status, self.code, self.message = kind, status, code, message


def refuse(hub: Hub, conn: Connection, code: int, message: str) -> None:
    """Tell a connection why it may not stay (unknown app, over capacity...), then close with `code`."""
    conn.queue(events.error(code, message))
    conn.close(code, message)
    hub.serve(conn, Session())


class PusherSession(Session):
    """Every connection of one Pusher app on one hub."""

    def __init__(self, hub: Hub, app: App, webhooks: WebhookDispatcher | None = None) -> None:
        self.hub = hub
        self.app = app
        self.codec = PusherCodec(app)
        self.webhooks = webhooks
        self.counters = hub.counters
        self.connections: set[Connection] = set()
        self._sweeper: gevent.Greenlet | None = None
        # Clients ping after this much silence; the sweeper pings them after the same.
        self.activity_timeout = max(1, round(hub.config.ping_interval))

    def serve(self, conn: Connection) -> None:
        """Greet the client, then read its messages until it goes (in the connection's greenlet)."""
        conn.send(events.connection_established(conn.id, self.activity_timeout))
        self.connections.add(conn)
        if self._sweeper is None:
            self._sweeper = gevent.spawn(self._sweep)
        self.hub.serve(conn, self)

    def closed(self, conn: Connection) -> None:
        self.connections.discard(conn)

    def messages_lost(self, conn: Connection, sub_id: str, gap: Gap) -> None:
        """Pusher has no recovery, so the subscription goes on; the channel gets the
        `switchboard:unrecoverable` event, which clients may bind to (and reload what matters)."""
        conn.enqueue(events.messages_lost(sub_id, gap.epoch, gap.offset))
        self.counters["errors_pusher_unrecoverable"] += 1

    def going_away(self, conn: Connection) -> None:
        conn.queue(events.error(CLOSE_GOING_AWAY, "server shutting down: reconnect"))
        conn.close(CLOSE_GOING_AWAY, "server shutting down")

    def restarting(self, conn: Connection, within_ms: int) -> None:
        """Pusher's 4200 (reconnect at once): pusher-js has no way to be told a delay, so the
        drain's batches are the spread; the message says the delay for clients that read it."""
        message = f"Server restarting: reconnect within {within_ms} ms"
        conn.queue(events.error(CLOSE_GOING_AWAY, message))
        conn.close(CLOSE_GOING_AWAY, restart_reason(within_ms))

    def _sweep(self) -> None:
        """While this app has connections: `pusher:ping` the quiet ones, close 4201 the silent ones.

        The hub also pings at the WebSocket level (which every client answers) and cuts a socket
        silent for twice the interval; this names the cause to a peer that can still hear it.
        """
        interval = self.hub.config.ping_interval
        try:
            while self.connections:
                gevent.sleep(interval / 4)
                now = time.monotonic()
                for conn in tuple(self.connections):
                    quiet = now - conn.last_seen
                    if conn.closing or quiet <= interval:
                        continue
                    if quiet > 1.5 * interval:
                        conn.queue(events.error(CLOSE_NO_PONG, "Pong reply not received"))
                        conn.close(CLOSE_NO_PONG, "pong reply not received")
                    else:
                        conn.enqueue(events.PING)
        finally:
            self._sweeper = None

    # -- messages --------------------------------------------------------------------------

    def on_message(self, conn: Connection, opcode: int, payload: bytes) -> None:
        if not self.hub.within_rate(conn, len(payload)):
            if not conn.closing:
                self._error(conn, RATE_LIMITED, "rate limit exceeded: slow down")
            return
        try:
            if opcode != OP_TEXT:
                raise PusherError(None, "binary frames are not accepted; send JSON text frames")
            try:
                event, channel, data = events.parse(payload)
            except PusherError:
                check_text(payload)  # not UTF-8 at all: RFC 6455 says close 1007
                self.counters["in_invalid"] += 1
                raise
            if event.startswith("client-"):
                self.counters["in_client_event"] += 1
                self._client_event(conn, event, channel, data)
                return
            self.counters[("in_" + event.replace(":", "_")) if event in _EVENTS else "in_invalid"] += 1
            if event == "pusher:ping":
                conn.send(events.PONG)
            elif event == "pusher:subscribe":
                self._subscribe(conn, data)
            elif event == "pusher:unsubscribe":
                self._unsubscribe(conn, data)
            elif event == "pusher:signin":
                raise PusherError(None, "user authentication (pusher:signin) is not supported by this server")
            elif event != "pusher:pong":
                raise PusherError(None, f"unknown event {event[:40]!r}: expected pusher:subscribe, pusher:ping, ...")
        except PusherError as error:
            self._error(conn, error.code, error.message)

    def _error(self, conn: Connection, code: int | None, message: str) -> None:
        self.counters["out_error"] += 1
        self.counters[f"errors_pusher_{code or 'bad_input'}"] += 1
        log.debug("pusher error", extra={"client": conn.id, "code": code, "reason": message})
        conn.send(events.error(code, message))

    def _subscribe(self, conn: Connection, data: Any) -> None:
        name = data.get("channel") if isinstance(data, dict) else None
        if not isinstance(name, str):
            raise PusherError(None, 'pusher:subscribe needs "data": {"channel": NAME, ...}')
        try:
            hub_name = self.app.hub_channel(name)
            member = self._authorise(conn, name, hub_name, data)
            if name in conn.subscriptions:  # subscribing twice is harmless: the same answer again
                conn.send(self._succeeded(name, hub_name))
                return
            # A presence member is admitted once it is this subscribe's turn (the hub's), so those
            # who joined just before are counted.
            admit = (lambda: self._check_room(name, hub_name, member)) if member is not None else None
            self.hub.subscribe(
                conn, name, hub_name, self.codec, conn, reply=lambda _r: conn.queue(self._succeeded(name, hub_name)),
                member=member, admit=admit,
            )  # fmt: skip
            self.counters["out_reply"] += 1
        except _Refused as refused:
            self._refuse_subscription(conn, name, refused)
        except ProtocolError as error:  # the hub's limits, or the broker being away
            kind = _KINDS.get(error.code, "SubscriptionError")
            self._refuse_subscription(conn, name, _Refused(kind, error.http_status, None, error.message))

    def _refuse_subscription(self, conn: Connection, name: str, refused: _Refused) -> None:
        conn.queue(events.subscription_error(name, refused.kind, refused.message, refused.status))
        self._error(conn, refused.code, refused.message)

    def _authorise(self, conn: Connection, name: str, hub_name: str, data: dict) -> dict | None:
        """Check a subscription's name and signature; grant the hub channel; return its member."""
        app = self.app
        if not app.valid_channel(name):
            raise _Refused(
                "InvalidChannel", 400, None,
                f"a channel name is 1 to {app.max_channel} characters from A-Z a-z 0-9 _ - = @ , . ;",
            )  # fmt: skip
        if name.startswith(ENCRYPTED):
            raise _Refused("UnsupportedFeature", 400, None, "encrypted channels (private-encrypted-) are not supported")
        if not name.startswith(PROTECTED):
            if app.prefix:  # this app's public channels live under private-<id>: in the hub
                conn.grants.add_channel(hub_name, False)
            return None
        channel_data = data.get("channel_data") if name.startswith(PRESENCE) else None
        if name.startswith(PRESENCE) and not isinstance(channel_data, str):
            raise _Refused("AuthError", 401, UNAUTHORIZED, f"{name!r} needs channel_data from your auth endpoint")
        text = channel_auth_text(conn.id, name, channel_data)
        if not channel_auth_valid(app, text, data.get("auth")):
            raise _Refused(
                "AuthError", 401, UNAUTHORIZED,
                f"Invalid signature: auth must be <key>:<HMAC-SHA256 hex digest of {text} with the app's secret>",
            )  # fmt: skip
        conn.grants.add_channel(hub_name, True)
        return _member(channel_data) if channel_data is not None else None

    def _check_room(self, name: str, hub_name: str, member: dict) -> None:
        """Refuse a new member past the push limit, as Pusher refuses the 101st of a presence
        channel: its clients keep member lists from member_added/removed, which stop there.
        A user already present may open more tabs. Concurrent subscribes, here or on other
        workers, may pass the limit by a few (each counts the members before it joins)."""
        limit = self.hub.config.presence_push_limit
        if not limit:
            return
        members = self.hub.presence(hub_name)
        if len(members) >= limit and all(present["user"] != member["user"] for present in members):
            raise _Refused("LimitReached", 403, None, f"presence channel {name!r} is full: it has its {limit} members")

    def _succeeded(self, name: str, hub_name: str) -> bytes:
        if not name.startswith(PRESENCE):
            return events.subscription_succeeded(name)
        try:
            members = self.hub.presence(hub_name)
        except ProtocolError:  # the broker is away: this worker's members are all we know
            local = self.hub.channels.get(hub_name)
            members = local.member_list() if local is not None else []
        return events.subscription_succeeded(name, members)

    def _unsubscribe(self, conn: Connection, data: Any) -> None:
        name = data.get("channel") if isinstance(data, dict) else None
        if not isinstance(name, str):
            raise PusherError(None, 'pusher:unsubscribe needs "data": {"channel": NAME}')
        if self.hub.unsubscribe(conn, name):
            conn.grants.channels.pop(self.app.hub_channel(name), None)

    def _client_event(self, conn: Connection, event: str, channel: str | None, data: Any) -> None:
        """A `client-*` event: to every other subscriber, on private and presence channels only."""
        subscription = conn.subscriptions.get(channel) if channel is not None else None
        if subscription is None or not channel.startswith(PROTECTED):
            raise PusherError(
                UNAUTHORIZED, "client events are accepted only on private- and presence- channels you subscribed to"
            )
        if self.hub.namespaces.of(subscription.channel).client_publish is False:
            raise PusherError(UNAUTHORIZED, f"client events are not accepted on {channel!r}")
        user = subscription.member["user"]
        stored = events.stored_data(data)
        try:
            self.hub.publish(subscription.channel, stored, user, event=event, exclude=conn.id, by=conn)
        except ProtocolError as error:
            raise PusherError(None, error.message) from None
        self.counters["publishes_pusher_client"] += 1
        if self.webhooks is not None:
            presence_user = user if channel.startswith(PRESENCE) else None
            self.webhooks.client_event(self.app, channel, event, stored, conn.id, presence_user)


_EVENTS = ("pusher:ping", "pusher:pong", "pusher:subscribe", "pusher:unsubscribe", "pusher:signin")


def _member(channel_data: str) -> dict:
    """The member a presence `channel_data` names: `{"user_id", "user_info"?}` in JSON."""
    try:
        parsed = orjson.loads(channel_data)
    except orjson.JSONDecodeError:
        parsed = None
    user_id = parsed.get("user_id") if isinstance(parsed, dict) else None
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if not isinstance(user_id, str) or not 1 <= len(user_id) <= 200:
        raise _Refused("AuthError", 401, UNAUTHORIZED, 'channel_data must be JSON with a "user_id" (1-200 characters)')
    return {"user": user_id, "info": parsed.get("user_info")}
