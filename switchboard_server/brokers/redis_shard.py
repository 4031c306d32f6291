"""One Redis instance of the Redis broker: the channels whose names hash to it, whole.

- Offsets and history: a Lua script assigns each channel's next offset, appends the message to a
  capped Stream and PUBLISHes it in one step, so every worker sees one channel's messages in
  offset order and recovery works whichever worker a client reconnects to. The publishes every
  greenlet of a worker asks for at once go as one script call (one envelope per bus: see
  `redis_scripts`), queued while the previous call is out.
- Fan-out: each worker SUBSCRIBEs to the buses of the channels it has local subscribers for; a
  message is JSON-encoded once for the cluster and framed once per worker (`Receiver.deliver`).
- Presence: each user on a channel counts the workers holding it; a worker heartbeats, and when
  one stops for `presence_ttl` seconds any other worker removes its members (pushing `leave`).
  This is eventually consistent, as in Centrifugo: a dead worker's members linger up to the TTL.
- Observers (BrokerObserver): the scripts that register a member, remove one, write a worker's
  subscriber counts and reap a dead worker return what changed cluster-wide (a user's first or
  last subscription anywhere, a channel's first or last occupying worker), so exactly one worker
  reports each. Counts are written a moment after they change (one writer greenlet), so a
  subscription shorter than that write may leave no occupied/vacated trace at all.
- Failures: the listener's lost connection marks the instance unavailable (`problem`); it
  reconnects with a short backoff and jitter (at once when a publish gets through), resubscribes,
  and re-registers this worker's members; publishes meanwhile fail with `unavailable` rather than
  vanish. Pub/sub keeps nothing for a listener that was away, so each channel is caught up from
  history once its bus's SUBSCRIBE is confirmed again. A single failed command is the caller's
  error, not a verdict on Redis. Behind Sentinel, reconnecting finds the new primary.
- Gaps: when history no longer holds all that the listener missed, or the channel's epoch changed
  (Redis came back without its data), or pub/sub brings an offset that does not follow the last
  one, the hub is told (`Receiver.messages_lost`) before anything after the gap is delivered: a
  message is delivered, or its loss announced, never silently skipped. A failover can also lose
  the last writes a replica had not received yet, and hand their offsets to new messages: the
  catch-up finds the message it delivered last is no longer the one history holds at its offset
  (or the offset went back), moves the channel to a new epoch (`FORK`) and reports the gap.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable

import gevent
import orjson
import redis
from gevent.event import AsyncResult, Event

from switchboard_server.brokers import redis_scripts as scripts
from switchboard_server.brokers.base import BrokerUnavailable, History, Observers, Receiver, reaches_back
from switchboard_server.brokers.pipeline import CONNECTION_FAILURES, Pipeline
from switchboard_server.brokers.redis_scripts import CONTROL, KeySpace, envelope_records
from switchboard_server.core.codecs import Gap
from switchboard_server.core.config import Config
from switchboard_server.core.envelope import member_payload, presence_notice_payload
from switchboard_server.core.namespaces import Namespaces

log = logging.getLogger("switchboard.redis")

_FAILURES = CONNECTION_FAILURES
_MAX_STREAM_ID = 2**64 - 1
# What the count script's answer says happened to the channel cluster-wide.
_OCCUPANCY = {1: "channel_occupied", -1: "channel_vacated"}
CONNECTING = "connecting to redis"  # subscribed always, so the listener has a connection even with no channels
# The listener's reconnect delays, in seconds: short, because what is published while it is away
# comes back only from history, which holds the last SWITCHBOARD_HISTORY_SIZE messages per channel
# (a busy channel's hundred can go by in a fraction of a second). A refused TCP connect a few
# times a second per worker costs Redis nothing while it is down.
_RECONNECT_FIRST = 0.05
_RECONNECT_MAX = 0.25
# Messages per publish script call: a bigger burst goes as several calls, so one call never
# holds Redis for long.
_PUBLISH_BATCH = 500

# What one publish asks: channel, head, tail, idempotency key, the connection to exclude.
Message = tuple[str, bytes, bytes, str | None, str]


class RedisShard:
    """The channels of one Redis instance (or one Sentinel-managed primary), for one worker.

    A subclass may hear its buses another way (`redis_cluster.PartitionShard`, through a listener
    shared per cluster node): `start`, `_send_subscription` and `_drop_connections` are where.
    """

    # What sends this shard's commands (a cluster loads its scripts its own way).
    pipeline_type: type[Pipeline] = Pipeline

    def __init__(
        self,
        config: Config,
        client: redis.Redis,
        worker: str,
        observers: Observers,
        owns: Callable[[str], bool],
        keys: KeySpace | None = None,
        namespaces: Namespaces | None = None,
    ) -> None:
        # History size and TTL are per channel, from its namespace (`_history`).
        self._namespaces = namespaces or Namespaces(config)
        self._presence_ttl = config.presence_ttl
        self._push_limit = config.presence_push_limit
        self._key_window = max(1, int(config.idempotency_window))
        self._keys = keys or KeySpace(buses=max(1, config.redis_partitions))
        self.worker = worker
        self.observers = observers
        # Which of the worker's channels live here (the heartbeat registers only those).
        self._owns = owns
        self.redis = client
        self.name = _describe(client)
        # Publishes, history reads, presence and counts: one round trip for all that is asked at once.
        self._pipeline = self.pipeline_type(self.redis, scripts.ALL, self._note_failure)
        self._publishing: list[tuple[Message, AsyncResult]] = []
        self._publisher: gevent.Greenlet | None = None
        self._receiver: Receiver | None = None
        self._wanted: dict[str, Event] = {}  # channels with local subscribers -> set once live
        self._buses: dict[str, set[str]] = {}  # bus -> the wanted channels it carries
        self._live_buses: set[str] = set()
        # channel -> (epoch, offset, payload) of the last message handed to the hub (or, before
        # the first, where the channel stood when first read, with no payload), and the channels
        # to catch up from history after the listener lost its connection.
        self._delivered: dict[str, tuple[str, int, bytes | None]] = {}
        self._stale: set[str] = set()
        self._pubsub: redis.client.PubSub | None = None
        self._listener: gevent.Greenlet | None = None
        # Set when a publish gets through while the listener is away: Redis is back, so stop waiting.
        self._redis_back = Event()
        self.problem: str | None = CONNECTING
        self.connected = Event()
        self._last_heartbeat = 0.0
        self._resync = False
        self._closed = False

    def attach(self, receiver: Receiver) -> None:
        self._receiver = receiver

    # -- publishing and history ------------------------------------------------------------

    def publish_many(self, messages: list[Message]) -> list[int | BrokerUnavailable]:
        self.start()
        pending = [self._queue_publish(message) for message in messages]
        results: list[int | BrokerUnavailable] = []
        for result in pending:
            try:
                results.append(int(result.get()))
            except _FAILURES as exc:
                self._note_failure(exc)
                results.append(BrokerUnavailable(str(exc)))
        if self._pubsub is None and any(isinstance(result, int) for result in results):
            self._redis_back.set()  # stored, but nobody here hears it until the listener is back
        return results

    def _queue_publish(self, message: Message) -> AsyncResult:
        result = AsyncResult()
        self._publishing.append((message, result))
        if self._publisher is None:
            self._publisher = gevent.spawn(self._send_publishes)
        return result

    def _send_publishes(self) -> None:
        """Send what is queued as script calls in one round trip, wait for them, and again while
        more was queued meanwhile."""
        try:
            while self._publishing:
                queued, self._publishing = self._publishing, []
                chunks = [queued[i : i + _PUBLISH_BATCH] for i in range(0, len(queued), _PUBLISH_BATCH)]
                calls = [self._pipeline.call(*self._publish_command([m for m, _ in chunk])) for chunk in chunks]
                for chunk, call in zip(chunks, calls, strict=True):
                    try:
                        offsets = call.get()
                    except Exception as exc:  # each waiting caller gets it: a failed connection, or a bug
                        for _, result in chunk:
                            result.set_exception(exc)
                        continue
                    for (_, result), offset in zip(chunk, offsets, strict=True):
                        result.set(offset)
        finally:
            self._publisher = None

    def _history(self, channel: str) -> tuple[int, int]:
        """The channel's history size, and its TTL in whole seconds (as EXPIRE takes them), at
        least one: both from its namespace."""
        namespace = self._namespaces.of(channel)
        return namespace.history_size, max(1, int(namespace.history_ttl))

    def _publish_command(self, messages: list[Message]) -> tuple:
        keys: list = []
        args: list = [self._key_window, self._keys.publish]
        epoch = os.urandom(4).hex()  # the epoch of any channel in the batch that has none yet
        for channel, head, tail, idempotency_key, exclude in messages:
            keys += [self._keys.key(channel, "m"), self._keys.key(channel, "s")]
            keys.append(self._keys.key(channel, f"k:{idempotency_key or ''}"))
            args += [channel, self._keys.bus(channel), head, tail, epoch]
            args += ["1" if idempotency_key is not None else "0", exclude, *self._history(channel)]
        return scripts.PUBLISH.command(keys, args)

    def history(self, channel: str, since: int | None, limit: int | None = None) -> History:
        # Stream ids are unsigned 64-bit: an offset past the last possible one finds nothing.
        first = "" if since is None else f"{min(since + 1, _MAX_STREAM_ID)}-0"
        keys = [self._keys.key(channel, "m"), self._keys.key(channel, "s")]
        # XRANGE's COUNT 0 means no limit: for `limit=0` read one entry (for `complete`) and none back.
        args = [os.urandom(4).hex(), self._history(channel)[1], first, "" if limit is None else max(limit, 1)]
        try:
            reply = self._pipeline.execute(*scripts.HISTORY.command(keys, args))
        except _FAILURES as exc:
            self._note_failure(exc)
            raise BrokerUnavailable(str(exc)) from None
        epoch, last = reply[0].decode(), int(reply[1])
        live = self._wanted.get(channel)
        if live is not None and live.is_set() and channel not in self._delivered:
            # Nothing delivered here yet: where the channel stands is where a catch-up after an
            # outage starts, and what a new epoch is told apart from.
            self._delivered[channel] = (epoch, last, None)
        if since is None:
            return History(epoch, last)
        # Each stream entry is [id, [b"d", payload]].
        entries = [(int(entry_id.split(b"-", 1)[0]), fields[1]) for entry_id, fields in reply[2]]
        complete = reaches_back(since, last, entries)
        return History(epoch, last, entries[:limit] if limit is not None else entries, complete)

    # -- fan-out across workers ------------------------------------------------------------

    def listen(self, channel: str) -> None:
        self.start()
        live = self._wanted.get(channel)
        if live is None:
            live = self._wanted[channel] = Event()
            bus = self._keys.bus(channel)
            carried = self._buses.get(bus)
            if carried is None:
                self._buses[bus] = {channel}
                self._send_subscription("subscribe", bus)
            else:
                carried.add(channel)
                if bus in self._live_buses:
                    live.set()  # the bus is heard already: from now on, so are this channel's messages
        if not live.wait(timeout=5):
            raise BrokerUnavailable(self.problem or "no answer to SUBSCRIBE")

    def unlisten(self, channel: str) -> None:
        self._delivered.pop(channel, None)
        self._stale.discard(channel)
        if self._wanted.pop(channel, None) is None:
            return
        bus = self._keys.bus(channel)
        carried = self._buses.get(bus, set())
        carried.discard(channel)
        if not carried:
            self._buses.pop(bus, None)
            self._live_buses.discard(bus)
            self._send_subscription("unsubscribe", bus)

    def _send_subscription(self, command: str, bus: str) -> None:
        # Only sends: the listener greenlet reads the confirmation. If the connection is down,
        # the listener resubscribes every bus in `_buses` when it is back.
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            getattr(pubsub, command)(bus)
        except _FAILURES as exc:
            self._note_failure(exc)

    def start(self) -> None:
        if self._listener is None and not self._closed:
            self._listener = gevent.spawn(self._listen_forever)

    def _listen_forever(self) -> None:
        """Read pub/sub until closed; on any failure reconnect with backoff and jitter."""
        backoff = _RECONNECT_FIRST
        while not self._closed:
            pubsub = self.redis.pubsub()
            try:
                # After a failure, catch up each channel from history as its bus's SUBSCRIBE is confirmed.
                self._stale = set(self._delivered)
                buses = set(self._buses)
                pubsub.subscribe(CONTROL, *buses)
                self._pubsub = pubsub
                # Buses wanted while that first SUBSCRIBE was on its way found no connection to
                # send theirs on: send them now (later ones send their own).
                late = [bus for bus in self._buses if bus not in buses]
                if late:
                    pubsub.subscribe(*late)
                if self.problem is not None:
                    self._recover()
                backoff = _RECONNECT_FIRST
                while not self._closed:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_pubsub(message)
            except _FAILURES as exc:
                self._went_away(exc)
                try:
                    pubsub.close()
                except _FAILURES:
                    pass
                self._wait_to_reconnect(backoff)
                backoff = min(backoff * 2, _RECONNECT_MAX)

    def _went_away(self, exc: Exception) -> None:
        """The connection that heard the buses is gone: nothing is live until they are heard again."""
        self._lost(exc)
        for live in self._wanted.values():
            live.clear()
        self._live_buses.clear()
        self._pubsub = None

    def _wait_to_reconnect(self, backoff: float) -> None:
        """Wait out the backoff (with jitter), or less: a publish that gets through says Redis is
        back, and each moment away is messages the catch-up must find in a bounded history."""
        self._redis_back.clear()
        self._redis_back.wait(backoff * (0.5 + random.random()))

    def _on_pubsub(self, message: dict) -> None:
        kind = message["type"]
        bus = message["channel"].decode()
        if bus == CONTROL:
            return
        if kind in ("subscribe", "ssubscribe"):  # a bus, or a Redis Cluster shard channel
            self._bus_live(bus)
        elif kind in ("message", "smessage"):
            for channel, body in envelope_records(message["data"]):
                self._on_record(channel, body)

    def _bus_live(self, bus: str) -> None:
        """A bus's SUBSCRIBE is confirmed: its channels are live, each caught up after an outage."""
        self._live_buses.add(bus)
        for channel in tuple(self._buses.get(bus, ())):
            live = self._wanted.get(channel)
            if live is None or live.is_set():
                continue
            if channel in self._stale:
                self._catch_up(channel)
            else:
                # A new subscription: what arrived before it (the tail of an earlier one that
                # was left) says nothing about where this one starts.
                self._delivered.pop(channel, None)
            live.set()

    def _on_record(self, channel: str, body: bytes) -> None:
        live = self._wanted.get(channel)
        if live is None or not live.is_set():
            # Not held, or not yet live: a bus neighbour, the tail of a subscription this worker
            # left, or a message sent before the bus's SUBSCRIBE was confirmed, which history
            # brings instead (a subscription's catch-up, or the catch-up after an outage).
            return
        head, _, rest = body.partition(b" ")
        if head[:1] == b"m":
            epoch, _, rest = rest.partition(b" ")
            exclude, _, payload = rest.partition(b" ")
            self._deliver(channel, epoch.decode(), int(head[1:]), payload, exclude.decode())
        else:
            self._receiver.announce(channel, rest, head[1:].decode())

    def _deliver(self, channel: str, epoch: str, offset: int, payload: bytes, exclude: str = "") -> None:
        """Hand a message to the hub once (catching up and pub/sub may both bring it), after
        telling it of any gap between the last one and this one."""
        if channel not in self._wanted:
            return  # a subscription this worker has left (told of a gap just now)
        last = self._delivered.get(channel)
        if last is not None:
            if last[0] == epoch and offset <= last[1]:
                return
            if last[0] != epoch or offset != last[1] + 1:
                self._missed(channel, last, epoch, offset - 1)
                if channel not in self._wanted:
                    return  # every subscriber here was told, and left
        self._delivered[channel] = (epoch, offset, payload)
        self._receiver.deliver(channel, offset, payload, exclude)

    def _missed(self, channel: str, last: tuple[str, int, bytes | None], epoch: str, resume: int) -> None:
        """Messages after `last` never reached this worker: tell the hub, and go on after `resume`
        of `epoch`."""
        log.warning(
            "messages of %r lost on their way to this worker: after offset %d of epoch %s, up to %d of epoch %s",
            channel, last[1], last[0], resume, epoch,
        )  # fmt: skip
        self._delivered[channel] = (epoch, resume, None)
        self._receiver.messages_lost(Gap(channel, last[0], last[1], epoch))

    def _catch_up(self, channel: str) -> None:
        """Deliver what was published while this worker could not hear (Redis pub/sub keeps nothing),
        or announce the gap where history no longer holds it.

        Runs in the listener once the bus's SUBSCRIBE is confirmed, so everything after what
        history returns arrives by pub/sub, and `_deliver` drops what both bring. `_deliver` finds
        the gap before held messages that do not follow on; here, the gap with none held after it,
        and the fork a failover leaves (`_forked`). The read starts at the last message delivered,
        to compare it with what history now holds at its offset.
        """
        self._stale.discard(channel)
        last = self._delivered.get(channel)
        if last is None:
            return
        epoch, offset, payload = last
        try:
            history = self.history(channel, offset - 1 if payload is not None and offset > 0 else offset)
            if history.epoch != epoch:  # Redis lost its data: all of the new epoch is missed
                history = self.history(channel, 0)
            elif self._forked(last, history):
                self._fork(channel, last)
                return
        except BrokerUnavailable as exc:
            # Live messages would follow a hole: start again from the SUBSCRIBE, as after any
            # lost connection (the listener catches this), and catch up then.
            raise redis.ConnectionError(f"catching up {channel!r}: {exc.message}") from None
        entries = [entry for entry in history.entries if entry[0] > offset or history.epoch != epoch]
        if not entries and (history.epoch, history.offset) != (epoch, offset):
            self._missed(channel, last, history.epoch, history.offset)
        for number, message in entries:
            self._deliver(channel, history.epoch, number, message)

    @staticmethod
    def _forked(last: tuple[str, int, bytes | None], history: History) -> bool:
        """Whether the channel's history, in the same epoch, no longer holds what was delivered:
        its offset went back, or another message now has the last delivered one's offset."""
        _, offset, payload = last
        if history.offset < offset:
            return True
        held = dict(history.entries[:1])
        return payload is not None and offset in held and held[offset] != payload

    def _fork(self, channel: str, last: tuple[str, int, bytes | None]) -> None:
        """Move the channel to a new epoch and report the gap: its subscribers resubscribe, and
        recovery tells them nothing of the old epoch can be replayed."""
        reply = self._pipeline.execute(
            *scripts.FORK.command([self._keys.key(channel, "m")], [last[0], os.urandom(4).hex()])
        )
        epoch, offset = reply[0].decode(), int(reply[1])
        log.warning("history of %r forked on %s (a failover lost messages): epoch %s now", channel, self.name, epoch)
        self._missed(channel, last, epoch, offset)

    def _recover(self) -> None:
        """Back after a failure: say so, and re-register members this worker holds."""
        was = self.problem
        self.problem = None
        self.connected.set()
        if was != CONNECTING:
            log.info("redis %s is reachable again (was: %s)", self.name, was)
            self._receiver.broker_reconnected()
        self._heartbeat()

    def _note_failure(self, exc: Exception) -> None:
        """A command failed: log it, and have the next heartbeat write this worker's state again.

        Whether Redis is down is the listener's call (`_lost`).
        """
        log.warning("redis %s command failed: %s", self.name, exc)
        self._resync = True

    def _lost(self, exc: Exception) -> None:
        if self.problem is None:
            log.warning("redis %s unavailable: %s", self.name, exc)
            self._drop_connections()
        self.problem = f"redis {self.name}: {exc}"
        self.connected.clear()

    def _drop_connections(self) -> None:
        # The pool's connections died with it: without this, the first command on each after
        # Redis is back would fail (the catch-up's reads, a publish) on a socket long closed.
        self.redis.connection_pool.disconnect()

    # -- presence across workers -----------------------------------------------------------

    def join(self, channel: str, member: dict, exclude: str) -> None:
        # Waited for: whoever hears the subscriber's reply, on any worker, sees it as a member.
        try:
            added = self._pipeline.execute(*self._join_command(channel, member, exclude))
        except _FAILURES as exc:
            self._note_failure(exc)  # registered by the heartbeat once Redis is back
            return
        if added:
            self.observers.notify("member_added", channel, member)

    def _register(self, channel: str, member: dict) -> None:
        """A member this worker holds, written again after a failure (nobody waits for it)."""
        self._pipeline.send(
            *self._join_command(channel, member, ""), then=self._notify_if("member_added", channel, member)
        )

    def _presence_keys(self, channel: str) -> list[str]:
        keys = self._keys
        return [keys.key(channel, "u"), keys.key(channel, "i"), keys.held(self.worker), keys.bus(channel)]

    def _join_command(self, channel: str, member: dict, exclude: str) -> tuple:
        user = member["user"]
        payload = member_payload("join", channel, member)
        notice = presence_notice_payload(channel, False)
        args = [user, orjson.dumps(member["info"]), f"{channel}\0{user}", payload, exclude, self._push_limit]
        return scripts.JOIN.command(self._presence_keys(channel), [*args, notice, channel, self._keys.publish])

    def leave(self, channel: str, member: dict) -> None:
        user = member["user"]
        payload = member_payload("leave", channel, member)
        notice = presence_notice_payload(channel, True)
        self._pipeline.send(
            *scripts.LEAVE.command(
                self._presence_keys(channel),
                [user, f"{channel}\0{user}", payload, self._push_limit, notice, channel, self._keys.publish],
            ),
            then=self._notify_if("member_removed", channel, member),
        )

    def count(self, channel: str) -> None:
        self._store_count(channel, self._receiver.local_subscriber_count(channel))

    def _store_count(self, channel: str, subscribers: int) -> None:
        """Write this worker's subscriber count of `channel`; the observers hear when that made
        the channel occupied or vacated cluster-wide.

        Absolute counts, not increments: a write after a heartbeat's rewrite can never add twice.
        The pipeline keeps them in order, so the last one written is the count now; a failure is
        noted, and the heartbeat rewrites them all once Redis is back.
        """
        keys = [self._keys.counts(self.worker), self._keys.key(channel, "o")]
        self._pipeline.send(
            *scripts.COUNT.command(keys, [channel, subscribers, self.worker]),
            then=lambda change: change and self.observers.notify(_OCCUPANCY[change], channel),
        )

    def _notify_if(self, event: str, *args) -> Callable[[object], None]:
        """A reply callback: tell the observers `event` when the script answers that it happened."""

        def then(happened: object) -> None:
            if happened:
                self.observers.notify(event, *args)

        return then

    # Reads go through the pipeline too, so they see every join, leave and count queued before them.

    def channel_counts(self) -> dict[str, int]:
        """Subscribers per channel of this instance, across every worker (zero counts included)."""
        try:
            workers = self._pipeline.execute("ZRANGE", self._keys.workers, 0, -1)
            pending = [self._pipeline.call("HGETALL", self._keys.counts(worker.decode())) for worker in workers]
            totals: dict[str, int] = {}
            for result in pending:
                for name, count in result.get().items():
                    totals[name.decode()] = totals.get(name.decode(), 0) + int(count)
        except _FAILURES as exc:
            self._note_failure(exc)
            raise BrokerUnavailable(str(exc)) from None
        return totals

    def members(self, channel: str) -> list[dict]:
        try:
            infos = self._pipeline.execute("HGETALL", self._keys.key(channel, "i"))
        except _FAILURES as exc:
            self._note_failure(exc)
            raise BrokerUnavailable(str(exc)) from None
        return [{"user": user.decode(), "info": orjson.loads(info)} for user, info in infos.items()]

    def member_count(self, channel: str) -> int:
        try:
            return self._pipeline.execute("HLEN", self._keys.key(channel, "u"))
        except _FAILURES as exc:
            self._note_failure(exc)
            raise BrokerUnavailable(str(exc)) from None

    def maintain(self) -> None:
        """Heartbeat every third of the TTL, and remove the members of workers that stopped."""
        if time.monotonic() - self._last_heartbeat >= self._presence_ttl / 3:
            self._heartbeat()

    def _heartbeat(self) -> None:
        self.start()
        now = time.time()
        try:
            # Channels with subscribers here keep their epoch and offsets however quiet they are.
            pipe = self.redis.pipeline(transaction=False)
            for name in self._wanted:
                pipe.expire(self._keys.key(name, "m"), self._history(name)[1])
            pipe.execute()
            if self.redis.zadd(self._keys.workers, {self.worker: now}) or self._resync:
                self._resync = False
                self._register_again()
            for worker in self.redis.zrangebyscore(self._keys.workers, "-inf", now - self._presence_ttl):
                self._reap(worker.decode())
            self._last_heartbeat = time.monotonic()
        except _FAILURES as exc:
            self._note_failure(exc)

    def _register_again(self) -> None:
        """We were not registered (Redis lost its data, or presumed us dead and removed our
        members), or a write failed: register everything this worker holds here again. Counts
        Redis holds for channels we no longer have are written as zero."""
        stale = {name.decode() for name in self.redis.hkeys(self._keys.counts(self.worker))}
        for name in stale | {name for name in self._receiver.local_channel_counts() if self._owns(name)}:
            self.count(name)
        held = set()
        for name in tuple(self._receiver.local_channels()):
            if not self._owns(name):
                continue
            for member in self._receiver.local_members(name):
                held.add(f"{name}\0{member['user']}".encode())
                self._register(name, member)
        for entry in self.redis.smembers(self._keys.held(self.worker)) - held:
            # A leave that failed earlier: the user is gone from here, so take it out.
            name, user = entry.decode().split("\0", 1)
            info = self.redis.hget(self._keys.key(name, "i"), user)
            self.leave(name, {"user": user, "info": orjson.loads(info) if info else None})

    def _reap(self, worker: str) -> None:
        keys = [self._keys.workers, self._keys.held(worker), self._keys.counts(worker)]
        args = [worker, self._push_limit, self._keys.buses, self._keys.prefix, self._keys.publish]
        reaped = self._pipeline.execute(*scripts.REAP.command(keys, args))
        if reaped is not None:
            log.info("removed the members of worker %s: no heartbeat for %.0f s", worker, self._presence_ttl)
            self._report_reaped(reaped[1], reaped[2])

    def _report_reaped(self, removed: list[bytes], vacated: list[bytes]) -> None:
        """Tell the observers whom a dead worker's reaping removed, and which channels it vacated."""
        for i in range(0, len(removed), 3):
            channel, user, info = removed[i].decode(), removed[i + 1].decode(), orjson.loads(removed[i + 2])
            self.observers.notify("member_removed", channel, {"user": user, "info": info})
        for channel in vacated:
            self.observers.notify("channel_vacated", channel.decode())

    # -- shutdown --------------------------------------------------------------------------

    def close(self) -> None:
        """Leave the cluster cleanly: members were already removed as connections closed."""
        self._closed = True
        try:
            # Channels this worker still counts as occupied are left now, not at the next reap.
            for name in self._pipeline.execute("HKEYS", self._keys.counts(self.worker)):
                self._store_count(name.decode(), 0)
            self._pipeline.execute("ZREM", self._keys.workers, self.worker)
            self._pipeline.execute("DEL", self._keys.held(self.worker), self._keys.counts(self.worker))
        except _FAILURES:
            pass
        if self._listener is not None:
            self._listener.kill(block=False)


def _describe(client: redis.Redis) -> str:
    """How logs and /healthz name an instance: host:port, or the Sentinel master's name."""
    if not hasattr(client, "connection_pool"):
        return "cluster"  # a cluster client names no one node: a partition says which it is
    kwargs = client.connection_pool.connection_kwargs
    service = getattr(client.connection_pool, "service_name", None)
    return f"sentinel:{service}" if service else f"{kwargs.get('host')}:{kwargs.get('port')}"
