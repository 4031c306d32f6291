"""The Redis broker: one server out of many workers on many machines.

- Offsets and history: a Lua script assigns the channel's next offset, appends the message to a
  capped Stream and PUBLISHes it in one step, so every worker sees one channel's messages in
  offset order and recovery works whichever worker a client reconnects to.
- Fan-out: each worker SUBSCRIBEs only to channels it has local subscribers for; the message is
  JSON-encoded once for the cluster and framed once per worker (`Receiver.deliver`).
- Presence: each user on a channel counts the workers holding it; a worker heartbeats, and when
  one stops for `presence_ttl` seconds any other worker removes its members (pushing `leave`).
  This is eventually consistent, as in Centrifugo: a dead worker's members linger up to the TTL.
- Observers (BrokerObserver): the scripts that register a member, remove one, write a worker's
  subscriber counts and reap a dead worker return what changed cluster-wide (a user's first or
  last subscription anywhere, a channel's first or last occupying worker), so exactly one worker
  reports each. Counts are written a moment after they change (one writer greenlet), so a
  subscription shorter than that write may leave no occupied/vacated trace at all.
- Failures: the listener's lost connection marks the broker unavailable (`problem()`, shown on
  /healthz); it reconnects with a short backoff and jitter (at once when a publish gets through),
  resubscribes, and re-registers this worker's members; publishes meanwhile fail with
  `unavailable` rather than vanish. Pub/sub keeps nothing for a listener that was away, so each
  channel is caught up from history once its SUBSCRIBE is confirmed again. A single failed
  command is the caller's error, not a verdict on Redis.
- Gaps: when history no longer holds all that the listener missed, or the channel's epoch changed
  (Redis came back without its data), or pub/sub brings an offset that does not follow the last
  one, the hub is told (`Hub.messages_lost`) before anything after the gap is delivered: a
  message is delivered, or its loss announced, never silently skipped.

Keys (all prefixed `sb:`): `{C}:m` hash (epoch, offset), `{C}:s` stream (history), `{C}:k:<key>`
string (the offset a publish with that idempotency key got, for the window), `{C}:u` hash
(user -> workers holding it), `{C}:i` hash (user -> info JSON), `{C}:o` set (workers with
subscribers on it), `w:<id>` set (the channel\0user a worker holds), `n:<id>` hash (a worker's
subscribers per channel), `workers` sorted set (worker -> last heartbeat). Pub/sub channel: `sb:{C}`.
"""

from __future__ import annotations

import logging
import os
import random
import time
from collections.abc import Callable

import gevent
import orjson
from gevent.event import Event

from switchboard_server.brokers.base import BrokerUnavailable, History, Observers, Receiver, reaches_back
from switchboard_server.brokers.pipeline import CONNECTION_FAILURES, Pipeline, Script
from switchboard_server.core.codecs import Gap
from switchboard_server.core.config import Config
from switchboard_server.core.envelope import member_payload, presence_notice_payload
from switchboard_server.core.namespaces import Namespaces

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
except ImportError as exc:  # depends on the install
    raise ImportError("SWITCHBOARD_REDIS_URL is set but redis-py is missing: pip install -r requirements.txt") from exc

log = logging.getLogger("switchboard.redis")

_FAILURES = CONNECTION_FAILURES
_MAX_STREAM_ID = 2**64 - 1
# What the count script's answer says happened to the channel cluster-wide.
_OCCUPANCY = {1: "channel_occupied", -1: "channel_vacated"}
# Connections per worker: commands from many greenlets at once share them.
REDIS_CONNECTIONS = 50
_CONTROL = "sb:control"
_CONNECTING = "connecting to redis"  # subscribed always, so the listener has a connection even with no channels
# The listener's reconnect delays, in seconds: short, because what is published while it is away
# comes back only from history, which holds the last SWITCHBOARD_HISTORY_SIZE messages per channel
# (a busy channel's hundred can go by in a fraction of a second). A refused TCP connect a few
# times a second per worker costs Redis nothing while it is down.
_RECONNECT_FIRST = 0.05
_RECONNECT_MAX = 0.25

# KEYS: meta, stream, pubsub channel, idempotency key. ARGV: head, tail, history size, epoch if
# new, ttl seconds, "1" when the publish has an idempotency key, the key's window in seconds,
# the connection to exclude ("" for none; ids never hold a space).
_PUBLISH = Script("""
if ARGV[6] == '1' then
  local seen = redis.call('GET', KEYS[4])
  if seen then return tonumber(seen) end
end
local offset = redis.call('HINCRBY', KEYS[1], 'offset', 1)
if ARGV[6] == '1' then redis.call('SET', KEYS[4], offset, 'EX', ARGV[7]) end
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[4])
local payload = ARGV[1] .. offset .. ARGV[2]
if tonumber(ARGV[3]) > 0 then
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[3], offset .. '-0', 'd', payload)
  redis.call('EXPIRE', KEYS[2], ARGV[5])
end
redis.call('EXPIRE', KEYS[1], ARGV[5])
local epoch = redis.call('HGET', KEYS[1], 'epoch')
redis.call('PUBLISH', KEYS[3], 'm' .. offset .. ' ' .. epoch .. ' ' .. ARGV[8] .. ' ' .. payload)
return offset
""")

# KEYS: meta, stream. ARGV: epoch if new, ttl seconds, first stream id wanted ("" for none), count
# ("" for all). A channel read before its first publish gets its epoch now, or the first publish
# would change it under the subscriber and void its offsets. One script, so no publish falls
# between the last offset and the entries read.
_HISTORY = Script("""
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[2])
local meta = redis.call('HMGET', KEYS[1], 'epoch', 'offset')
if ARGV[3] == '' then return {meta[1], meta[2] or '0'} end
local entries
if ARGV[4] == '' then
  entries = redis.call('XRANGE', KEYS[2], ARGV[3], '+')
else
  entries = redis.call('XRANGE', KEYS[2], ARGV[3], '+', 'COUNT', ARGV[4])
end
return {meta[1], meta[2] or '0', entries}
""")

# Join/leave are published only while the channel has at most the push limit of members (with
# the changing one counted in); crossing it publishes the notice instead (hub.channels.member_push).

# KEYS: users, infos, worker set, pubsub channel.
# ARGV: user, info JSON, held entry, join JSON, excluded connection id, push limit, notice JSON.
_JOIN = Script("""
if redis.call('SADD', KEYS[3], ARGV[3]) == 0 then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
if redis.call('HINCRBY', KEYS[1], ARGV[1], 1) == 1 then
  local members, limit = redis.call('HLEN', KEYS[1]), tonumber(ARGV[6])
  if members <= limit then
    redis.call('PUBLISH', KEYS[4], 'p' .. ARGV[5] .. ' ' .. ARGV[4])
  elseif members == limit + 1 and limit > 0 then
    redis.call('PUBLISH', KEYS[4], 'p' .. ARGV[5] .. ' ' .. ARGV[7])
  end
  return 1
end
return 0
""")

# KEYS: users, infos, worker set, pubsub channel. ARGV: user, held entry, leave JSON, push limit,
# notice JSON.
_LEAVE = Script("""
if redis.call('SREM', KEYS[3], ARGV[2]) == 0 then return 0 end
if redis.call('HINCRBY', KEYS[1], ARGV[1], -1) <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  local members, limit = redis.call('HLEN', KEYS[1]) + 1, tonumber(ARGV[4])
  if members <= limit then
    redis.call('PUBLISH', KEYS[4], 'p ' .. ARGV[3])
  elseif members == limit + 1 and limit > 0 then
    redis.call('PUBLISH', KEYS[4], 'p ' .. ARGV[5])
  end
  return 1
end
return 0
""")

# KEYS: the worker's counts, the channel's occupying workers. ARGV: channel, subscribers, worker.
# Returns 1 when the channel just got its first occupying worker, -1 when it lost its last, else 0.
_COUNT = Script("""
if tonumber(ARGV[2]) > 0 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if redis.call('SADD', KEYS[2], ARGV[3]) == 1 and redis.call('SCARD', KEYS[2]) == 1 then return 1 end
  return 0
end
redis.call('HDEL', KEYS[1], ARGV[1])
if redis.call('SREM', KEYS[2], ARGV[3]) == 1 and redis.call('SCARD', KEYS[2]) == 0 then return -1 end
return 0
""")

# KEYS: workers, the dead worker's set and counts. ARGV: worker id, push limit. Only the first reaper gets past
# ZREM. Returns nil, or {entries held, {channel, user, info JSON, ...} of the members who left,
# {channel, ...} the channels it was the last occupant of}.
_REAP = Script("""
if redis.call('ZREM', KEYS[1], ARGV[1]) == 0 then return false end
local held = redis.call('SMEMBERS', KEYS[2])
local removed, vacated = {}, {}
local limit = tonumber(ARGV[2])
for _, entry in ipairs(held) do
  local sep = string.find(entry, '\\0', 1, true)
  local channel = string.sub(entry, 1, sep - 1)
  local user = string.sub(entry, sep + 1)
  local users = 'sb:{' .. channel .. '}:u'
  local infos = 'sb:{' .. channel .. '}:i'
  if redis.call('HINCRBY', users, user, -1) <= 0 then
    local info = redis.call('HGET', infos, user) or 'null'
    redis.call('HDEL', users, user)
    redis.call('HDEL', infos, user)
    local members = redis.call('HLEN', users) + 1
    if members <= limit then
      local leave = '{"type":"leave","channel":' .. cjson.encode(channel) ..
        ',"member":{"user":' .. cjson.encode(user) .. ',"info":' .. info .. '}}'
      redis.call('PUBLISH', 'sb:{' .. channel .. '}', 'p ' .. leave)
    elseif members == limit + 1 and limit > 0 then
      local notice = '{"type":"presence","channel":' .. cjson.encode(channel) .. ',"pushes":true}'
      redis.call('PUBLISH', 'sb:{' .. channel .. '}', 'p ' .. notice)
    end
    table.insert(removed, channel)
    table.insert(removed, user)
    table.insert(removed, info)
  end
end
for _, channel in ipairs(redis.call('HKEYS', KEYS[3])) do
  local occupying = 'sb:{' .. channel .. '}:o'
  if redis.call('SREM', occupying, ARGV[1]) == 1 and redis.call('SCARD', occupying) == 0 then
    table.insert(vacated, channel)
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
return {#held, removed, vacated}
""")


def _redis_key(channel: str, part: str) -> str:
    return f"sb:{{{channel}}}:{part}"


def _pubsub_channel(channel: str) -> str:
    return f"sb:{{{channel}}}"


class RedisBroker:
    """A broker shared by every worker that points at the same Redis."""

    def __init__(self, config: Config, namespaces: Namespaces | None = None) -> None:
        # History size and TTL are per channel, from its namespace (`_history_ttl`).
        self._namespaces = namespaces or Namespaces(config)
        self._presence_ttl = config.presence_ttl
        self._push_limit = config.presence_push_limit
        self._key_window = max(1, int(config.idempotency_window))
        self.worker = os.urandom(6).hex()
        # Fail fast: a publish during an outage should be refused now, not after long retries.
        # A PING on connections idle for 10 s finds a Redis that went away without a word. The
        # pool blocks (briefly) when all its connections are busy: a burst of subscribes after a
        # deploy must queue for a connection, not fail.
        pool = redis.BlockingConnectionPool.from_url(
            config.redis_url,
            max_connections=REDIS_CONNECTIONS,
            timeout=5,
            socket_timeout=5,
            socket_connect_timeout=2,
            health_check_interval=10,
            retry=Retry(NoBackoff(), 0),
        )
        self.redis = redis.Redis(connection_pool=pool)
        # Publishes, history reads, presence and counts: one round trip for all that is asked at once.
        self._pipeline = Pipeline(self.redis, [_PUBLISH, _HISTORY, _JOIN, _LEAVE, _COUNT, _REAP], self._note_failure)
        self._receiver: Receiver | None = None
        self.observers = Observers()
        self._wanted: dict[str, Event] = {}  # channels with local subscribers -> set once live
        # channel -> (epoch, offset) of the last message handed to the hub (or, before the first,
        # where the channel stood when first read), and the channels to catch up from history
        # after the listener lost its connection.
        self._delivered: dict[str, tuple[str, int]] = {}
        self._stale: set[str] = set()
        self._pubsub: redis.client.PubSub | None = None
        self._listener: gevent.Greenlet | None = None
        # Set when a publish gets through while the listener is away: Redis is back, so stop waiting.
        self._redis_back = Event()
        self._problem: str | None = _CONNECTING
        self._connected = Event()
        self._last_heartbeat = 0.0
        self._resync = False
        self._closed = False

    def attach(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def _history_ttl(self, channel: str) -> int:
        """Whole seconds, as EXPIRE takes them, at least one."""
        return max(1, int(self._namespaces.of(channel).history_ttl))

    # -- publishing and history ------------------------------------------------------------

    def publish(
        self, channel: str, head: bytes, tail: bytes, idempotency_key: str | None = None, exclude: str = ""
    ) -> int:
        result = self.publish_many([(channel, head, tail, idempotency_key, exclude)])[0]
        if isinstance(result, BrokerUnavailable):
            raise result
        return result

    def publish_many(self, messages: list[tuple[str, bytes, bytes, str | None, str]]) -> list[int | BrokerUnavailable]:
        self._start()
        pending = []
        for channel, head, tail, idempotency_key, exclude in messages:
            keys = [
                _redis_key(channel, "m"),
                _redis_key(channel, "s"),
                _pubsub_channel(channel),
                _redis_key(channel, f"k:{idempotency_key or ''}"),
            ]
            namespace = self._namespaces.of(channel)
            args = [head, tail, namespace.history_size, os.urandom(4).hex(), self._history_ttl(channel)]
            args += ["1" if idempotency_key is not None else "0", self._key_window, exclude]
            pending.append(self._pipeline.call(*_PUBLISH.command(keys, args)))
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

    def history(self, channel: str, since: int | None, limit: int | None = None) -> History:
        # Stream ids are unsigned 64-bit: an offset past the last possible one finds nothing.
        first = "" if since is None else f"{min(since + 1, _MAX_STREAM_ID)}-0"
        keys = [_redis_key(channel, "m"), _redis_key(channel, "s")]
        # XRANGE's COUNT 0 means no limit: for `limit=0` read one entry (for `complete`) and none back.
        args = [os.urandom(4).hex(), self._history_ttl(channel), first, "" if limit is None else max(limit, 1)]
        try:
            reply = self._pipeline.execute(*_HISTORY.command(keys, args))
        except _FAILURES as exc:
            self._note_failure(exc)
            raise BrokerUnavailable(str(exc)) from None
        epoch, last = reply[0].decode(), int(reply[1])
        live = self._wanted.get(channel)
        if live is not None and live.is_set() and channel not in self._delivered:
            # Nothing delivered here yet: where the channel stands is where a catch-up after an
            # outage starts, and what a new epoch is told apart from.
            self._delivered[channel] = (epoch, last)
        if since is None:
            return History(epoch, last)
        # Each stream entry is [id, [b"d", payload]].
        entries = [(int(entry_id.split(b"-", 1)[0]), fields[1]) for entry_id, fields in reply[2]]
        complete = reaches_back(since, last, entries)
        return History(epoch, last, entries[:limit] if limit is not None else entries, complete)

    # -- fan-out across workers ------------------------------------------------------------

    def listen(self, channel: str) -> None:
        self._start()
        live = self._wanted.get(channel)
        if live is None:
            live = self._wanted[channel] = Event()
            self._send_subscription("subscribe", channel)
        if not live.wait(timeout=5):
            raise BrokerUnavailable(self._problem or "no answer to SUBSCRIBE")

    def unlisten(self, channel: str) -> None:
        self._delivered.pop(channel, None)
        self._stale.discard(channel)
        if self._wanted.pop(channel, None) is not None:
            self._send_subscription("unsubscribe", channel)

    def _send_subscription(self, command: str, channel: str) -> None:
        # Only sends: the listener greenlet reads the confirmation. If the connection is down,
        # the listener resubscribes everything in `_wanted` when it is back.
        pubsub = self._pubsub
        if pubsub is None:
            return
        try:
            getattr(pubsub, command)(_pubsub_channel(channel))
        except _FAILURES as exc:
            self._note_failure(exc)

    def _start(self) -> None:
        if self._listener is None and not self._closed:
            self._listener = gevent.spawn(self._listen_forever)

    def _listen_forever(self) -> None:
        """Read pub/sub until closed; on any failure reconnect with backoff and jitter."""
        backoff = _RECONNECT_FIRST
        while not self._closed:
            pubsub = self.redis.pubsub()
            try:
                # After a failure, catch up each channel from history as its SUBSCRIBE is confirmed.
                self._stale = set(self._delivered)
                wanted = set(self._wanted)
                pubsub.subscribe(_CONTROL, *(_pubsub_channel(name) for name in wanted))
                self._pubsub = pubsub
                # Channels wanted while that first SUBSCRIBE was on its way found no connection
                # to send theirs on: send them now (later ones send their own).
                late = [_pubsub_channel(name) for name in self._wanted if name not in wanted]
                if late:
                    pubsub.subscribe(*late)
                if self._problem is not None:
                    self._recover()
                backoff = _RECONNECT_FIRST
                while not self._closed:
                    message = pubsub.get_message(timeout=1.0)
                    if message is not None:
                        self._on_pubsub(message)
            except _FAILURES as exc:
                self._lost(exc)
                for live in self._wanted.values():
                    live.clear()
                self._pubsub = None
                try:
                    pubsub.close()
                except _FAILURES:
                    pass
                self._wait_to_reconnect(backoff)
                backoff = min(backoff * 2, _RECONNECT_MAX)

    def _wait_to_reconnect(self, backoff: float) -> None:
        """Wait out the backoff (with jitter), or less: a publish that gets through says Redis is
        back, and each moment away is messages the catch-up must find in a bounded history."""
        self._redis_back.clear()
        self._redis_back.wait(backoff * (0.5 + random.random()))

    def _on_pubsub(self, message: dict) -> None:
        kind = message["type"]
        name = message["channel"].decode()
        if kind == "subscribe":
            channel = name[4:-1]
            live = self._wanted.get(channel) if name != _CONTROL else None
            if live is not None:
                if channel in self._stale:
                    self._catch_up(channel)
                else:
                    # A new subscription: what arrived before it (the tail of an earlier one
                    # that was left) says nothing about where this one starts.
                    self._delivered.pop(channel, None)
                live.set()
            return
        if kind != "message" or name == _CONTROL:
            return
        channel = name[4:-1]
        data: bytes = message["data"]
        head, _, rest = data.partition(b" ")
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
            return  # the tail of a subscription this worker has left
        last = self._delivered.get(channel)
        if last is not None:
            if last[0] == epoch and offset <= last[1]:
                return
            if last[0] != epoch or offset != last[1] + 1:
                self._missed(channel, last, epoch, offset - 1)
                if channel not in self._wanted:
                    return  # every subscriber here was told, and left
        self._delivered[channel] = (epoch, offset)
        self._receiver.deliver(channel, offset, payload, exclude)

    def _missed(self, channel: str, last: tuple[str, int], epoch: str, resume: int) -> None:
        """Messages after `last` never reached this worker: tell the hub, and go on after `resume`
        of `epoch`."""
        log.warning(
            "messages of %r lost on their way to this worker: after offset %d of epoch %s, up to %d of epoch %s",
            channel, last[1], last[0], resume, epoch,
        )  # fmt: skip
        self._delivered[channel] = (epoch, resume)
        self._receiver.messages_lost(Gap(channel, last[0], last[1], epoch))

    def _catch_up(self, channel: str) -> None:
        """Deliver what was published while this worker could not hear (Redis pub/sub keeps nothing),
        or announce the gap where history no longer holds it.

        Runs in the listener once the channel's SUBSCRIBE is confirmed, so everything after what
        history returns arrives by pub/sub, and `_deliver` drops what both bring. `_deliver` finds
        the gap before held messages that do not follow on; here, the gap with none held after it.
        """
        self._stale.discard(channel)
        last = self._delivered.get(channel)
        if last is None:
            return
        try:
            history = self.history(channel, last[1])
            if history.epoch != last[0]:  # Redis lost its data: all of the new epoch is missed
                history = self.history(channel, 0)
        except BrokerUnavailable as exc:
            # Live messages would follow a hole: start again from the SUBSCRIBE, as after any
            # lost connection (the listener catches this), and catch up then.
            raise redis.ConnectionError(f"catching up {channel!r}: {exc.message}") from None
        if not history.entries and (history.epoch, history.offset) != last:
            self._missed(channel, last, history.epoch, history.offset)
        for number, payload in history.entries:
            self._deliver(channel, history.epoch, number, payload)

    def _recover(self) -> None:
        """Back after a failure: tell /healthz, and re-register members this worker holds."""
        was = self._problem
        self._problem = None
        self._connected.set()
        if was != _CONNECTING:
            log.info("redis is reachable again (was: %s)", was)
            self._receiver.broker_reconnected()
        self._heartbeat()

    def _note_failure(self, exc: Exception) -> None:
        """A command failed: log it, and have the next heartbeat write this worker's state again.

        Whether Redis is down is the listener's call (`_lost`).
        """
        log.warning("redis command failed: %s", exc)
        self._resync = True

    def _lost(self, exc: Exception) -> None:
        if self._problem is None:
            log.warning("redis unavailable: %s", exc)
            # The pool's connections died with it: without this, the first command on each after
            # Redis is back would fail (the catch-up's reads, a publish) on a socket long closed.
            self.redis.connection_pool.disconnect()
        self._problem = f"redis: {exc}"
        self._connected.clear()

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

    def _join_command(self, channel: str, member: dict, exclude: str) -> tuple:
        user = member["user"]
        payload = member_payload("join", channel, member)
        notice = presence_notice_payload(channel, False)
        keys = [_redis_key(channel, "u"), _redis_key(channel, "i"), f"sb:w:{self.worker}", _pubsub_channel(channel)]
        held = f"{channel}\0{user}"
        return _JOIN.command(
            keys, [user, orjson.dumps(member["info"]), held, payload, exclude, self._push_limit, notice]
        )

    def leave(self, channel: str, member: dict) -> None:
        user = member["user"]
        payload = member_payload("leave", channel, member)
        notice = presence_notice_payload(channel, True)
        keys = [_redis_key(channel, "u"), _redis_key(channel, "i"), f"sb:w:{self.worker}", _pubsub_channel(channel)]
        self._pipeline.send(
            *_LEAVE.command(keys, [user, f"{channel}\0{user}", payload, self._push_limit, notice]),
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
        keys = [f"sb:n:{self.worker}", _redis_key(channel, "o")]
        self._pipeline.send(
            *_COUNT.command(keys, [channel, subscribers, self.worker]),
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
        try:
            workers = self._pipeline.execute("ZRANGE", "sb:workers", 0, -1)
            pending = [self._pipeline.call("HGETALL", f"sb:n:{worker.decode()}") for worker in workers]
            totals: dict[str, int] = {}
            for result in pending:
                for name, count in result.get().items():
                    totals[name.decode()] = totals.get(name.decode(), 0) + int(count)
        except _FAILURES as exc:
            self._note_failure(exc)
            raise BrokerUnavailable(str(exc)) from None
        return {name: count for name, count in totals.items() if count > 0}

    def members(self, channel: str) -> list[dict]:
        try:
            infos = self._pipeline.execute("HGETALL", _redis_key(channel, "i"))
        except _FAILURES as exc:
            self._note_failure(exc)
            raise BrokerUnavailable(str(exc)) from None
        return [{"user": user.decode(), "info": orjson.loads(info)} for user, info in infos.items()]

    def member_count(self, channel: str) -> int:
        try:
            return self._pipeline.execute("HLEN", _redis_key(channel, "u"))
        except _FAILURES as exc:
            self._note_failure(exc)
            raise BrokerUnavailable(str(exc)) from None

    def maintain(self) -> None:
        """Heartbeat every third of the TTL, and remove the members of workers that stopped."""
        if time.monotonic() - self._last_heartbeat >= self._presence_ttl / 3:
            self._heartbeat()

    def _heartbeat(self) -> None:
        self._start()
        now = time.time()
        try:
            # Channels with subscribers here keep their epoch and offsets however quiet they are.
            pipe = self.redis.pipeline(transaction=False)
            for name in self._wanted:
                pipe.expire(_redis_key(name, "m"), self._history_ttl(name))
            pipe.execute()
            if self.redis.zadd("sb:workers", {self.worker: now}) or self._resync:
                self._resync = False
                # We were not registered (Redis lost its data, or presumed us dead and removed
                # our members), or a write failed: register everything this worker holds again.
                # Counts Redis holds for channels we no longer have are written as zero.
                stale = {name.decode() for name in self.redis.hkeys(f"sb:n:{self.worker}")}
                for name in stale | set(self._receiver.local_channel_counts()):
                    self.count(name)
                held = set()
                for name in tuple(self._receiver.local_channels()):
                    for member in self._receiver.local_members(name):
                        held.add(f"{name}\0{member['user']}".encode())
                        self._register(name, member)
                for entry in self.redis.smembers(f"sb:w:{self.worker}") - held:
                    # A leave that failed earlier: the user is gone from here, so take it out.
                    name, user = entry.decode().split("\0", 1)
                    info = self.redis.hget(_redis_key(name, "i"), user)
                    self.leave(name, {"user": user, "info": orjson.loads(info) if info else None})
            for worker in self.redis.zrangebyscore("sb:workers", "-inf", now - self._presence_ttl):
                worker = worker.decode()
                reaped = self._pipeline.execute(
                    *_REAP.command(["sb:workers", f"sb:w:{worker}", f"sb:n:{worker}"], [worker, self._push_limit])
                )
                if reaped is not None:
                    log.info("removed the members of worker %s: no heartbeat for %.0f s", worker, self._presence_ttl)
                    self._report_reaped(reaped[1], reaped[2])
            self._last_heartbeat = time.monotonic()
        except _FAILURES as exc:
            self._note_failure(exc)

    def _report_reaped(self, removed: list[bytes], vacated: list[bytes]) -> None:
        """Tell the observers whom a dead worker's reaping removed, and which channels it vacated."""
        for i in range(0, len(removed), 3):
            channel, user, info = removed[i].decode(), removed[i + 1].decode(), orjson.loads(removed[i + 2])
            self.observers.notify("member_removed", channel, {"user": user, "info": info})
        for channel in vacated:
            self.observers.notify("channel_vacated", channel.decode())

    # -- health and shutdown ---------------------------------------------------------------

    def problem(self) -> str | None:
        self._start()
        if self._problem == _CONNECTING:
            self._connected.wait(2.0)  # a new worker's first health check waits for its first connect
        return self._problem

    def close(self) -> None:
        """Leave the cluster cleanly: members were already removed as connections closed."""
        self._closed = True
        try:
            # Channels this worker still counts as occupied are left now, not at the next reap.
            for name in self._pipeline.execute("HKEYS", f"sb:n:{self.worker}"):
                self._store_count(name.decode(), 0)
            self._pipeline.execute("ZREM", "sb:workers", self.worker)
            self._pipeline.execute("DEL", f"sb:w:{self.worker}", f"sb:n:{self.worker}")
        except _FAILURES:
            pass
        if self._listener is not None:
            self._listener.kill(block=False)
