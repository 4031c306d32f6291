"""The hub: channels, fan-out and presence for the connections of one worker.

Everything a client can do happens here, in plain Python with no Flask and no socket, and in no
protocol's words: each protocol's session (protocols/: native, GraphQL, Pusher) turns its
messages into these calls and frames the answers, and each protocol's codec frames what channels
carry. Offsets, history and cluster-wide presence belong to the broker (in-process or Redis); the
broker hands every message back through `deliver` (the hub is the broker's `Receiver`), where each
codec on the channel frames it once for all of its local subscribers. The hub never imports a
protocol or a broker: whoever builds it (the Flask extension) hands it its broker.
"""

from __future__ import annotations

import logging
import secrets
import socket
import time
from collections import Counter, deque
from collections.abc import Callable, Collection
from typing import Any

import gevent
from gevent.event import Event
from gevent.hub import Waiter

from switchboard_server.brokers.base import Broker
from switchboard_server.core.auth import Identity, TokenAuthority
from switchboard_server.core.channels import Channel
from switchboard_server.core.codecs import Announcement, Codec, Gap, Publication, Subscriber, Subscription
from switchboard_server.core.config import Config
from switchboard_server.core.conflation import Conflation, latest_per_key
from switchboard_server.core.drain import DrainPlan
from switchboard_server.core.envelope import message_parts, validate_channel
from switchboard_server.core.errors import ProtocolError
from switchboard_server.core.hooks import Hooks, PresenceHooks, Publish, Refuse, client_of
from switchboard_server.core.limits import TokenBucket
from switchboard_server.core.namespaces import Namespace, Namespaces
from switchboard_server.core.session import Session, restart_reason
from switchboard_server.transport.connection import Connection, Flusher
from switchboard_server.transport.frames import (
    CLOSE_GOING_AWAY,
    CLOSE_POLICY_VIOLATION,
    CLOSE_SERVICE_RESTART,
    OP_PING,
    FrameParser,
    encode_frame,
)

log = logging.getLogger("switchboard.hub")

_PING_FRAME = encode_frame(b"", OP_PING)

# Subscribes handled in one turn of the event loop; more wait for the next turn.
SUBSCRIBES_PER_TURN = 100


def _who(conn: Connection) -> dict:
    """The fields that name a connection in a log line (never its token)."""
    return {"client": conn.id, "user": conn.user, "address": conn.address}


def _member_frame(codec: Codec, announcement: Announcement) -> Any:
    """A codec's frame for a join or leave; for a presence notice, only from codecs that frame them."""
    if announcement.is_notice and not getattr(codec, "notices", False):
        return None
    return codec.member_frame(announcement)


def _held_to_replay(name: str, namespace: Namespace, entries: list, since: int | None) -> list[Publication]:
    """What a subscribe replays of the history read: everything after `since` (None when its
    epoch is gone), or on a latest-value or conflated channel the latest of it per key only (a
    latest-value channel's is sent even without a position, as the channel's current state)."""
    if namespace.latest and since is not None:
        entries = [entry for entry in entries if entry[0] > since]
    elif not namespace.latest and since is None:
        entries = []  # offsets of another epoch mean nothing here
    publications = [Publication(name, offset, payload) for offset, payload in entries]
    if namespace.latest or namespace.conflate:
        return latest_per_key(publications, namespace)
    return publications


def _say_offsets_skip(result: dict, namespace: Namespace, replay: list[Publication]) -> None:
    """A subscribe's result on a latest-value or conflated channel: its offsets may skip (the
    messages a subscriber was spared), and the latest values replayed follow the reply's offset,
    as replayed messages always do, so a client that drops what it has seen keeps them."""
    result["offsets_skip"] = True
    if namespace.latest and replay:
        result["offset"] = replay[0].offset - 1


class Turns:
    """Lets `batch` callers through per turn of gevent's loop; the rest wait for later turns, in order.

    Thousands of clients subscribing at once are thousands of sockets readable in one turn. Handled
    in one pass, nothing they queue is written (the flusher runs after the pass) and no other
    channel's greenlet runs until the last is done: queues fill past their limit, closing clients
    that read at once as slow consumers, and bystanders stall. Between batches, the frames get
    written and everything else gets its turn.
    """

    def __init__(self, batch: int) -> None:
        self._batch = batch
        self._left = batch
        self._waiting: deque[Waiter] = deque()
        self._refill_due = False

    def take(self) -> None:
        """Return at once if this turn's batch has room, else when a later turn's has."""
        self._refill_soon()
        if self._left > 0 and not self._waiting:
            self._left -= 1
            return
        waiter = Waiter()
        self._waiting.append(waiter)
        try:
            waiter.get()
        except BaseException:  # woken by anything else (say, a kill): give up the place in line
            if waiter in self._waiting:
                self._waiting.remove(waiter)
            raise

    def _refill_soon(self) -> None:
        if not self._refill_due:
            self._refill_due = True
            gevent.get_hub().loop.run_callback(self._refill)

    def _refill(self) -> None:
        """The next turn's batch, first for those waiting; each is woken by a callback, so it runs
        after the callbacks queued before it (the flusher that writes the last batch's frames)."""
        self._refill_due = False
        self._left = self._batch
        loop = gevent.get_hub().loop
        while self._left and self._waiting:
            self._left -= 1
            loop.run_callback(self._waiting.popleft().switch, None)
        if self._waiting:
            self._refill_soon()


def _sent_already(channel: Channel, offset: int) -> set:
    """The subscribers that got the message at `offset` from history when they subscribed: the
    broker's copy reached this worker only after their history read (pub/sub and history come
    over different connections). A subscriber leaves `ahead` once the live stream reaches where
    its history ended; an offset going back (a new epoch) ends every such wait."""
    ahead = channel.ahead
    if offset <= channel.delivered:
        ahead.clear()
        return set()
    skip = {subscriber for subscriber, until in ahead.items() if offset <= until}
    for subscriber, until in tuple(ahead.items()):
        if offset >= until:
            del ahead[subscriber]
    return skip


class Hub:
    """One worker's engine. Create one per app; every method is called from greenlets of one thread."""

    def __init__(self, config: Config, broker: Broker, namespaces: Namespaces | None = None) -> None:
        self.config = config
        # Options per channel-name prefix; the broker is given the same for history size and TTL.
        self.namespaces = namespaces or Namespaces(config)
        self.broker = broker
        self.broker.attach(self)
        self.tokens = TokenAuthority(config.token_secret)
        self.channels: dict[str, Channel] = {}
        self.connections: dict[str, Connection] = {}
        self._per_address: dict[str, int] = {}
        self.counters: Counter[str] = Counter()
        # What lagging connections are spared on conflated channels.
        self.conflation = Conflation(self.counters)
        # The application's own functions on events (the extension fills it in).
        self.hooks = Hooks()
        self.broker.observers.add(PresenceHooks(lambda: self.hooks))
        self.flusher = Flusher()
        self._turns = Turns(SUBSCRIBES_PER_TURN)
        self._maintenance: gevent.Greenlet | None = None
        # Set once the last connection has gone, while shutting down.
        self._drained: Event | None = None
        # True from the start of a drain (core/drain.py): handshakes are refused, /healthz is 503.
        self.draining = False

    # -- connections -----------------------------------------------------------------------

    def admit(self, identity: Identity, address: str) -> None:
        """Refuse a handshake (before the upgrade) that would pass a connection limit, or that
        reached a draining worker (a 503 nginx retries on another instance)."""
        if self.draining:
            raise ProtocolError("draining", "this server is restarting: connect to another instance")
        if identity.user is None and not self.config.allow_anonymous:
            raise ProtocolError("unauthorized", "anonymous connections are not allowed: connect with ?token=<JWT>")
        if len(self.connections) >= self.config.max_connections:
            raise ProtocolError("server_full", "this worker is at its connection limit; try again later")
        per_address = self.config.max_connections_per_address
        if per_address and self._per_address.get(address, 0) >= per_address:
            raise ProtocolError("too_many_connections", f"at most {per_address} connections per client address")

    def open(
        self, sock: socket.socket, identity: Identity, address: str = "", client_id: str | None = None
    ) -> Connection:
        """Adopt a socket whose handshake is done; a session's `serve` must run next.

        `client_id` is for protocols whose clients expect ids of their own shape (Pusher's).
        """
        client_id = client_id or secrets.token_urlsafe(9)
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
        self.authenticate(conn, identity)
        if self.config.rate_messages:
            rate_bytes = max(self.config.rate_bytes, self.config.max_message_size)
            conn.bucket = TokenBucket(self.config.rate_messages, rate_bytes)
        self.connections[client_id] = conn
        self._per_address[address] = self._per_address.get(address, 0) + 1
        self.counters["connections_opened"] += 1
        log.info("connect", extra=_who(conn))
        self._start_maintenance()
        return conn

    def authenticate(self, conn: Connection, identity: Identity) -> None:
        """Give a connection what its token grants (at the handshake, or in a protocol's own
        first message, as GraphQL's `connection_init` carries it)."""
        if identity.user is not None:
            conn.user, conn.info = identity.user, identity.info
        conn.grants = identity.grants()
        conn.expires, conn.warned = identity.expires, False

    def serve(self, conn: Connection, session: Session) -> None:
        """Read a connection until it ends, handing its messages to `session` (call in the
        connection's own greenlet)."""
        self._attach(conn, session)
        conn.serve(FrameParser(self.config.max_message_size), session.on_messages, self.on_close)

    def watch(self, conn: Connection, session: Session) -> None:
        """As `serve`, but return at once and let gevent's loop do the reading, so the calling
        greenlet can run something else; `session.on_messages` is then called from the loop and
        must never block."""
        self._attach(conn, session)
        conn.watch(FrameParser(self.config.max_message_size), session.on_messages, self.on_close)

    def _attach(self, conn: Connection, session: Session) -> None:
        conn.session = session
        if conn.expires is not None:
            self._check_expiry(conn, time.time())

    def within_rate(self, conn: Connection, size: int) -> bool:
        """Spend one message of the connection's rate; False when over it. Sustained abuse (over a
        second's worth refused in a row) also closes the connection with 1008."""
        bucket = conn.bucket
        if bucket is None or bucket.take(size):
            return True
        self.counters["in_rate_limited"] += 1
        self.counters["errors_rate_limited"] += 1
        if bucket.refused > self.config.rate_messages:
            self.counters["closed_for_abuse"] += 1
            conn.close(CLOSE_POLICY_VIOLATION, "rate limit exceeded repeatedly")
        return False

    def on_close(self, conn: Connection) -> None:
        """Forget a connection: undo every subscription (pushing `leave` where it was the last tab)."""
        self.connections.pop(conn.id, None)
        self.conflation.forget(conn)
        if self._drained is not None and not self.connections:
            self._drained.set()
        remaining = self._per_address.pop(conn.address, 1) - 1
        if remaining:
            self._per_address[conn.address] = remaining
        for sub_id in list(conn.subscriptions):
            self.unsubscribe(conn, sub_id)
        if conn.session is not None:
            conn.session.closed(conn)
        if self.hooks.disconnect is not None:
            try:
                self.hooks.call("disconnect", self.hooks.disconnect, client_of(conn), conn.close_code or 1006)
            except ProtocolError:
                pass  # refused or failed (logged): the connection is gone either way
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
            extra={**_who(conn), "channels": len(conn.subscriptions), "messages_out": conn.messages_out},
        )

    # -- subscriptions ---------------------------------------------------------------------

    def subscribe(
        self,
        conn: Connection,
        sub_id: Any,
        name: str,
        codec: Codec,
        subscriber: Subscriber,
        since: int | None = None,
        epoch: str | None = None,
        reply: Callable[[dict], None] | None = None,
        *,
        member: dict | None = None,
        strict: bool = False,
        admit: Callable[[], None] | None = None,
    ) -> dict | None:
        """Subscribe `subscriber` (the connection, or a protocol's subscription on it) to `name`.

        `sub_id` names the subscription on the connection (a channel name, a GraphQL id). With
        `since`, the messages held after that offset are replayed first, framed by `codec`, and
        nothing falls between them and the live ones. `reply(result)` runs before the replay, so
        a protocol can queue its answer ahead of it; `result` is `{"epoch", "offset",
        "recovered"}`. `strict` refuses (`unrecoverable`) rather than replay with a gap.
        `member` is who the subscription makes present: the connection's user by default.
        `admit()` is a protocol's own check, which raises to refuse (nothing is touched yet); it
        runs once it is this subscribe's turn, so a cap on members counts those who joined just before.
        Returns the result, or None if the connection went away while the broker answered.
        """
        self._turns.take()
        info = self.check_subscribe(conn, name)
        if admit is not None:
            admit()
        channel = self.channels.get(name)
        if channel is None:
            channel = self.channels[name] = Channel(name, self.namespaces.of(name))
        namespace = channel.namespace
        # Without recovery a position is not replayed: the reply says so (`recovered` false).
        unrecovered = since is not None and not namespace.recovery
        if not namespace.recovery:
            since = epoch = None
        # Subscribe first, read history second: messages arriving in between wait in the backlog.
        backlog: list = []
        channel.catching_up[subscriber] = backlog
        try:
            self.broker.listen(name)
            history = self.broker.history(name, 0 if namespace.latest else since)
        except ProtocolError:
            self._drop_subscriber(channel, codec, subscriber)
            raise
        if channel.catching_up.get(subscriber) is not backlog:
            return None  # the connection went away while the broker answered
        same_epoch = epoch is None or epoch == history.epoch
        # A latest-value channel is current once its latest value is sent, whatever history holds.
        recovered = same_epoch and (history.complete or namespace.latest) and not unrecovered
        if strict and since is not None and not recovered:
            self._drop_subscriber(channel, codec, subscriber)
            raise ProtocolError(
                "unrecoverable",
                f"{name!r} no longer holds every message after offset {since} of epoch {epoch}: "
                "subscribe without a position and reload what is missing",
            )
        # Be a member before the reply, so whoever hears the reply can see us.
        member = member or {"user": conn.user, "info": conn.info if info is None else info}
        if namespace.presence and channel.add_member(member["user"], member["info"]):
            self.broker.join(name, member, conn.id)
        # What history holds after `since`, then what arrived while it was read; a codec may have
        # no frame for some of it (None), like the hub's live fan-out.
        replay: list = _held_to_replay(name, namespace, history.entries, since if same_epoch else None)
        result = {"epoch": history.epoch, "offset": history.offset, "recovered": recovered}
        if namespace.latest or namespace.conflate:
            _say_offsets_skip(result, namespace, replay)
        if reply is not None:
            reply(result)
        for item in backlog:
            if isinstance(item, Publication):
                if item.offset > history.offset and item.exclude != conn.id:
                    replay.append(item)
            elif item.exclude != conn.id and not self._outdated(channel, item):
                replay.append(item)
        for item in replay:
            is_message = isinstance(item, Publication)
            frame = codec.message_frame(item) if is_message else _member_frame(codec, item)
            if frame is not None:
                subscriber.queue(frame)
                self.counters["out_message"] += is_message
        del channel.catching_up[subscriber]
        if history.offset > channel.delivered and epoch in (None, history.epoch):
            channel.ahead[subscriber] = history.offset
        channel.add_subscriber(codec, subscriber)
        conn.subscriptions[sub_id] = Subscription(name, codec, subscriber, member)
        conn.flush()
        self.broker.count(name)
        return result

    def check_subscribe(self, conn: Connection, name: str) -> dict | None:
        """Refuse a subscription the connection may not have (before any state is touched).

        The application's subscribe hook decides last: False refuses, a dict is the presence info
        the connection joins the channel with (returned), anything else allows."""
        validate_channel(name)
        if len(conn.subscriptions) >= self.config.max_subscriptions:
            raise ProtocolError(
                "too_many_subscriptions", f"at most {self.config.max_subscriptions} subscriptions per connection"
            )
        if not conn.grants.may_subscribe(name):
            raise ProtocolError(
                "forbidden", f"{name!r} is a protected channel: it needs a grant in your token or a subscription token"
            )
        hook = self.hooks.subscribe
        if hook is None:
            return None
        allowed = self.hooks.call("subscribe", hook, client_of(conn), name)
        if allowed is False:
            raise Refuse(f"the server refused the subscription to {name!r}")
        return allowed if isinstance(allowed, dict) else None

    def unsubscribe(self, conn: Connection, sub_id: Any) -> bool:
        """End one of the connection's subscriptions; False if it had none under `sub_id`."""
        subscription = conn.subscriptions.pop(sub_id, None)
        if subscription is None:
            return False
        name = subscription.channel
        channel = self.channels.get(name)
        if channel is None:
            return True
        user = subscription.member["user"]
        member = channel.remove_member(user)
        self._drop_subscriber(channel, subscription.codec, subscription.subscriber)
        self.conflation.drop(conn, subscription.subscriber, name)
        self.broker.count(name)
        if member is not None:
            self.broker.leave(name, member)
        return True

    def _drop_subscriber(self, channel: Channel, codec: Codec, subscriber: Subscriber) -> None:
        """Forget a subscriber; the last one out tells the broker and drops the channel here."""
        channel.remove_subscriber(codec, subscriber)
        channel.catching_up.pop(subscriber, None)
        channel.ahead.pop(subscriber, None)
        if channel.is_empty():
            del self.channels[channel.name]
            self.broker.unlisten(channel.name)

    def refresh(self, conn: Connection, token: str) -> float | None:
        """Take a fresh connection token for the same user, before the old one expires; returns
        its expiry. Grants from subscription tokens are kept."""
        identity = self.tokens.verify(token)
        if identity.user != conn.user:
            raise ProtocolError("forbidden", "a refreshed token must be for the same user")
        subscription_grants = conn.grants.channels
        self.authenticate(conn, identity)
        conn.grants.channels = subscription_grants
        return identity.expires

    # -- the operations every protocol and the HTTP API share ------------------------------

    def publish(
        self,
        name: str,
        data: Any,
        sender: str | None = None,
        idempotency_key: str | None = None,
        event: str | None = None,
        exclude: str = "",
        *,
        by: Connection | None = None,
        api: bool = False,
    ) -> int:
        """Store and fan out one message everywhere; returns its offset. Never blocks on a subscriber.

        A publish with an `idempotency_key` that the channel saw within the idempotency window
        delivers nothing and returns the first one's offset: a caller may retry without fear.
        `event` names the message (Pusher's event names); `exclude` is a connection id that is
        not sent this message (Pusher's `socket_id`, and a client event's sender). `by` is the
        publishing connection, `api` says the HTTP API publishes: the publish hook sees the first
        always, the second where the application asked.
        """
        data = self._publish_hook(validate_channel(name), data, event, by, api)
        head, tail = message_parts(name, data, sender, event)
        return self.broker.publish(name, head, tail, idempotency_key, exclude)

    def publish_many(
        self, requests: list[tuple[str, Any, str | None, str | None, str | None]], by: Connection | None = None
    ) -> list[int | ProtocolError]:
        """`publish` for each (channel, data, sender, idempotency key, event), in order, sent to the broker together:
        a client's run of publishes costs one Redis round trip, not one each. Each result is the
        offset, or the error that publish earned."""
        results: list[int | ProtocolError] = []
        messages, slots = [], []
        for name, data, sender, idempotency_key, event in requests:
            try:
                data = self._publish_hook(validate_channel(name), data, event, by, False)
                head, tail = message_parts(name, data, sender, event)
            except ProtocolError as error:
                results.append(error)
                continue
            slots.append(len(results))
            results.append(0)
            messages.append((name, head, tail, idempotency_key, ""))
        for slot, offset in zip(slots, self.broker.publish_many(messages), strict=True):
            results[slot] = offset
        return results

    def _publish_hook(self, name: str, data: Any, event: str | None, by: Connection | None, api: bool) -> Any:
        """The data to store, once the application's publish hook has seen (and maybe changed) it."""
        hook = self.hooks.publish
        if hook is None or (by is None and not (api and self.hooks.publish_api)):
            return data
        publish = Publish(name, data, event, client_of(by) if by is not None else None)
        self.hooks.call("publish", hook, publish)
        return publish.data

    def deliver(self, name: str, offset: int, payload: bytes, exclude: str = "") -> None:
        """A message for local subscribers, from the broker: framed once per codec, queued for each."""
        channel = self.channels.get(name)
        if channel is None:
            return
        publication = Publication(name, offset, payload, exclude)
        skip = _sent_already(channel, offset) if channel.ahead else None
        channel.delivered = offset
        if channel.namespace.conflate:
            self._deliver_conflated(channel, publication, skip)
            return
        # The hot path: it allocates nothing per subscriber (a tuple per subscriber here cost 2x
        # in garbage collection on bursts to 5,000), and counts once per codec, not per recipient.
        for codec, subscribers in channel.codecs.items():
            frame = codec.message_frame(publication)
            if frame is None:
                continue  # this codec's subscribers do not get messages (a presence feed)
            self.counters["out_message"] += len(subscribers)
            if exclude or skip:
                for subscriber in tuple(subscribers):
                    if subscriber.id != exclude and not (skip and subscriber in skip):
                        subscriber.enqueue(frame)
            else:
                for subscriber in tuple(subscribers):
                    subscriber.enqueue(frame)
        for backlog in channel.catching_up.values():
            backlog.append(publication)

    def _deliver_conflated(self, channel: Channel, publication: Publication, skip: set | None) -> None:
        """`deliver` on a conflated channel: each subscriber that lags is held its latest frame per
        key instead (core/conflation.py); the others get every one, but for those `skip` names
        (their history already gave it)."""
        namespace = channel.namespace
        exclude = publication.exclude
        connections = self.connections
        conflation = self.conflation
        holding = conflation.holding  # the connections with frames held: usually none
        # As the hot path of `deliver`, but for one look per subscriber at whether it lags, which
        # is all a subscriber that keeps up pays: a ticker's fan-out is as large as any other.
        for codec, subscribers in channel.codecs.items():
            frame = codec.message_frame(publication)
            if frame is None:
                continue
            queued = 0
            for subscriber in tuple(subscribers):
                subscriber_id = subscriber.id
                if subscriber_id == exclude or (skip and subscriber in skip):
                    continue
                conn = connections.get(subscriber_id)
                if (
                    conn is not None
                    and (subscriber_id in holding or conn.lagging())
                    and conflation.offer(conn, subscriber, publication, frame, namespace)
                ):
                    continue
                subscriber.enqueue(frame)
                queued += 1
            self.counters["out_message"] += queued
        for backlog in channel.catching_up.values():
            backlog.append(publication)

    def messages_lost(self, gap: Gap) -> None:
        """Messages of a channel never reached this worker (from the broker, before anything after
        them): each local subscription on it is told, in its protocol's words. Most protocols end
        the subscription, so that its client subscribes again from the last offset it has and the
        usual recovery decides what can be replayed: nothing is skipped without a word."""
        channel = self.channels.get(gap.channel)
        if channel is None:
            return
        self.counters["message_gaps"] += 1
        for subscribers in tuple(channel.codecs.values()):
            for subscriber in tuple(subscribers):
                conn = self.connections.get(subscriber.id)
                if conn is None or conn.session is None:
                    continue
                for sub_id, subscription in tuple(conn.subscriptions.items()):
                    if subscription.subscriber is subscriber and subscription.channel == gap.channel:
                        conn.session.messages_lost(conn, sub_id, gap)

    def announce(self, name: str, payload: bytes, exclude: str) -> None:
        """A join or leave (or a presence notice), from the broker: framed once per codec that
        pushes it on this channel."""
        channel = self.channels.get(name)
        if channel is None:
            return
        join_leave = channel.namespace.join_leave
        if join_leave is False:
            return
        announcement = Announcement(name, payload, exclude)
        announcement.pushed = join_leave is True
        if self._outdated(channel, announcement):
            return
        for codec, subscribers in channel.codecs.items():
            frame = _member_frame(codec, announcement)
            if frame is None:
                continue
            for subscriber in tuple(subscribers):
                if subscriber.id != exclude:
                    subscriber.enqueue(frame)
                    self.counters["out_presence"] += 1
        for backlog in channel.catching_up.values():
            backlog.append(announcement)

    def _outdated(self, channel: Channel, announcement: Announcement) -> bool:
        """A join or leave sent while the channel was within the push limit, which it has passed
        since: with Redis, a burst of joins outruns their delivery, and each would reach the whole
        crowd (and every backlog of those still subscribing). The notice that pushes stopped was
        sent after it, so dropping it leaves no member's list wrong without saying so."""
        return not announcement.is_notice and len(channel.members) > self.config.presence_push_limit

    # -- what the broker asks of this worker (brokers.base.Receiver) -------------------------

    def local_channels(self) -> Collection[str]:
        return self.channels.keys()

    def local_subscriber_count(self, name: str) -> int:
        channel = self.channels.get(name)
        return channel.subscriber_count() if channel is not None else 0

    def local_members(self, name: str) -> list[dict]:
        channel = self.channels.get(name)
        return channel.member_list() if channel is not None else []

    def local_member_count(self, name: str) -> int:
        channel = self.channels.get(name)
        return len(channel.members) if channel is not None else 0

    def broker_reconnected(self) -> None:
        self.counters["broker_reconnects"] += 1

    # -- reading -------------------------------------------------------------------------------

    def presence(self, name: str) -> list[dict]:
        namespace = self.namespaces.of(validate_channel(name))
        if not namespace.presence:
            raise ProtocolError("forbidden", f"presence is off on {name!r} (namespace {namespace.prefix!r})")
        return self.broker.members(name)

    def may_client_publish(self, grants: Any, name: str) -> bool:
        """Whether a client holding `grants` (core/access.py) may publish on `name`: its namespace's
        `client_publish`, else the global rule."""
        allowed = self.namespaces.of(name).client_publish
        if allowed is False:
            return False
        return grants.may_publish(name, self.config.client_publish if allowed is None else allowed)

    def member_count(self, name: str) -> int:
        """How many members the channel has, across every worker."""
        return self.broker.member_count(validate_channel(name))

    def history(self, name: str, since: int = 0, limit: int | None = None) -> tuple[str, int, list[bytes]]:
        """The epoch, the last offset and the JSON of each held message after `since` (oldest first)."""
        history = self.broker.history(validate_channel(name), since, limit)
        return history.epoch, history.offset, [payload for _offset, payload in history.entries]

    def channel_counts(self) -> dict[str, int]:
        """Channels with at least one subscriber, and how many, across every worker."""
        return self.broker.channel_counts()

    def local_channel_counts(self) -> dict[str, int]:
        """Channels with at least one subscriber on this worker, and how many."""
        counts = {name: channel.subscriber_count() for name, channel in self.channels.items()}
        return {name: count for name, count in counts.items() if count}

    # -- internals -------------------------------------------------------------------------

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
        if conn.session is None or conn.closing:
            return
        if now >= conn.expires:
            conn.session.token_expired(conn)
        elif not conn.warned and conn.expires - now <= self.config.token_warning:
            conn.warned = True
            conn.session.token_expiring(conn)

    def drain(self, window: float, batch: int) -> None:
        """Refuse new connections from now on, then close the open ones in batches of at most
        `batch` spread over `window` seconds, each told when to come back (core/drain.py).
        Returns once the last batch was told; `shutdown` then waits for the closes. A window of
        0 only refuses, leaving every connection to `shutdown`'s 1001."""
        self.draining = True
        connections = list(self.connections.values())
        if window <= 0:
            log.info("draining", extra={"connections": len(connections), "window": 0})
            return
        plan = DrainPlan.spread(len(connections), batch, window)
        log.info("draining", extra={"connections": plan.count, "batches": plan.batches, "within_ms": plan.within_ms})
        for index in range(plan.batches):
            if index:
                gevent.sleep(plan.gap)
            for conn in plan.batch(index, connections):
                if conn.closing:
                    continue
                self.counters["drain_closed"] += 1
                if conn.session is not None:
                    conn.session.restarting(conn, plan.within_ms)
                else:  # still in its handshake's last step: no protocol has spoken yet
                    conn.close(CLOSE_SERVICE_RESTART, restart_reason(plan.within_ms))

    def shutdown(self, timeout: float = 5.0) -> None:
        """Tell every connection the server is going away, wait (up to `timeout`) for the closes,
        then let go of the broker."""
        self.conflation.stop()
        if self._maintenance is not None:
            self._maintenance.kill(block=False)
            self._maintenance = None
        self._drained = Event()
        for conn in tuple(self.connections.values()):
            if conn.session is not None:
                conn.session.going_away(conn)
            else:  # still in its handshake's last step: no protocol has spoken yet
                conn.close(CLOSE_GOING_AWAY, "server shutting down")
        if self.connections and not self._drained.wait(timeout):
            for conn in tuple(self.connections.values()):
                conn.abort()
            self._drained.wait(1.0)
        self.broker.close()
