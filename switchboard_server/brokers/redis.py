"""The Redis broker: one server out of many workers on many machines, over one or more Redis.

SWITCHBOARD_REDIS_URL names one Redis, or several (comma-separated) to spread the channels over:
each channel belongs to exactly one instance, chosen by a Jump consistent hash of the CRC32 of
its name, and everything about it (offsets, history, presence, pub/sub) lives there, handled by
that instance's `RedisShard`. A worker has its own connections, pipeline and pub/sub listener
per instance, so an instance that goes away stops only its own channels (their subscribers are
told of the gap), and adding an instance moves only about 1/N of the channels.

What is not one channel's is summed over the instances: subscriber counts per channel
(`channel_counts`) come from each instance's per-worker counts, and each instance keeps its own
registry of live workers (every worker heartbeats to all), so a dead worker's members are
reaped on every instance. Nothing lives on one instance for the whole cluster.

A `redis+sentinel://` URL names Sentinels and a master (`sentinel_client`); the shard's
connections find the current primary through them, and after a failover its listener
reconnects to the new one and catches up (see `redis_shard` for what a failover can lose and
how it reaches clients as a gap).
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import unquote, urlsplit

import gevent

from switchboard_server.brokers.base import BrokerUnavailable, History, Observers, Receiver
from switchboard_server.core.config import Config
from switchboard_server.core.namespaces import Namespaces

try:
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry
    from redis.sentinel import Sentinel, SentinelConnectionPool
except ImportError as exc:  # depends on the install
    raise ImportError("SWITCHBOARD_REDIS_URL is set but redis-py is missing: pip install -r requirements.txt") from exc

from switchboard_server.brokers.redis_shard import CONNECTING, RedisShard

# Connections per worker and instance: commands from many greenlets at once share them.
REDIS_CONNECTIONS = 50
SENTINEL_SCHEME = "redis+sentinel"
# Fail fast: a publish during an outage should be refused now, not after long retries. A PING
# on connections idle for 10 s finds a Redis that went away without a word.
_CONNECTION_OPTIONS = {
    "socket_timeout": 5,
    "socket_connect_timeout": 2,
    "health_check_interval": 10,
    "retry": Retry(NoBackoff(), 0),
}


def redis_urls(setting: str) -> list[str]:
    """The URLs of a SWITCHBOARD_REDIS_URL: comma-separated, where a piece without a scheme is one
    more Sentinel of the URL before it (`redis+sentinel://a:26379,b:26379/mymaster`)."""
    urls: list[str] = []
    for piece in (part.strip() for part in setting.split(",")):
        if not piece:
            continue
        if "://" in piece or not urls:
            urls.append(piece)
        else:
            urls[-1] += "," + piece
    return urls


def jump_hash(key: int, buckets: int) -> int:
    """Lamping and Veach's Jump consistent hash: a bucket in [0, buckets) for a 64-bit key; going
    from N buckets to N+1 moves only 1/(N+1) of the keys, all of them to the new bucket."""
    bucket, jump = -1, 0
    while jump < buckets:
        bucket = jump
        key = (key * 2862933555777941757 + 1) & 0xFFFFFFFFFFFFFFFF
        jump = int((bucket + 1) * (float(1 << 31) / float((key >> 33) + 1)))
    return bucket


@lru_cache(maxsize=65536)
def shard_index(channel: str, shards: int) -> int:
    """The instance a channel lives on: stable across processes and restarts (CRC32, never hash())."""
    return jump_hash(zlib.crc32(channel.encode()), shards) if shards > 1 else 0


class _BlockingSentinelPool(SentinelConnectionPool, redis.BlockingConnectionPool):
    """Sentinel's master discovery, with a pool that waits (briefly) when all its connections are
    busy: a burst of subscribes after a deploy must queue for a connection, not fail."""


def redis_client(url: str) -> redis.Redis:
    """A client for one instance: a plain Redis URL, or a Sentinel one."""
    if urlsplit(url).scheme == SENTINEL_SCHEME:
        return sentinel_client(url)
    pool = redis.BlockingConnectionPool.from_url(
        url, max_connections=REDIS_CONNECTIONS, timeout=5, **_CONNECTION_OPTIONS
    )
    return redis.Redis(connection_pool=pool)


def sentinel_client(url: str) -> redis.Redis:
    """`redis+sentinel://[[user]:password@]host:port[,host:port...]/master[/db]`: the Sentinels to
    ask, and the name of the master they watch. The credentials are the master's."""
    parts = urlsplit(url)
    path = [part for part in parts.path.split("/") if part]
    if not path:
        raise ValueError(f"{url!r}: name the master after the Sentinels, as in redis+sentinel://HOST:26379/mymaster")
    hosts = []
    for address in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = address.rpartition(":")
        hosts.append((host or address, int(port) if host else 26379))
    options = dict(_CONNECTION_OPTIONS, db=int(path[1]) if len(path) > 1 else 0)
    if parts.password is not None:
        options["password"] = unquote(parts.password)
    if parts.username:
        options["username"] = unquote(parts.username)
    sentinel = Sentinel(hosts, sentinel_kwargs={"socket_timeout": 2, "socket_connect_timeout": 2})
    return sentinel.master_for(
        path[0],
        connection_pool_class=_BlockingSentinelPool,
        max_connections=REDIS_CONNECTIONS,
        timeout=5,
        **options,
    )


class RedisBroker:
    """A broker shared by every worker that points at the same Redis instances.

    `shards` and `shard_of` are all it knows of how channels are spread: another layout (Redis
    Cluster's slots) is another list of shards and another function from a channel to one.
    """

    def __init__(self, config: Config, namespaces: Namespaces | None = None) -> None:
        self.worker = os.urandom(6).hex()
        self.observers = Observers()
        urls = redis_urls(config.redis_url)
        self.shards = [
            RedisShard(
                config=config,
                client=redis_client(url),
                worker=self.worker,
                observers=self.observers,
                owns=self._owned_by(index, len(urls)),
                namespaces=namespaces,
            )
            for index, url in enumerate(urls)
        ]
        count = len(self.shards)
        self.shard_of: Callable[[str], RedisShard] = lambda channel: self.shards[shard_index(channel, count)]

    @staticmethod
    def _owned_by(index: int, shards: int) -> Callable[[str], bool]:
        return lambda channel: shard_index(channel, shards) == index

    def attach(self, receiver: Receiver) -> None:
        for shard in self.shards:
            shard.attach(receiver)

    def publish(
        self, channel: str, head: bytes, tail: bytes, idempotency_key: str | None = None, exclude: str = ""
    ) -> int:
        result = self.publish_many([(channel, head, tail, idempotency_key, exclude)])[0]
        if isinstance(result, BrokerUnavailable):
            raise result
        return result

    def publish_many(self, messages: list[tuple[str, bytes, bytes, str | None, str]]) -> list[int | BrokerUnavailable]:
        if len(self.shards) == 1:
            return self.shards[0].publish_many(messages)
        # Each instance gets its share at once (in order within it), then answers go back in order.
        count = len(self.shards)
        groups: dict[int, list[int]] = {}
        for position, message in enumerate(messages):
            groups.setdefault(shard_index(message[0], count), []).append(position)
        waiting = [
            (positions, gevent.spawn(self.shards[index].publish_many, [messages[i] for i in positions]))
            for index, positions in groups.items()
        ]
        results: list[int | BrokerUnavailable] = [0] * len(messages)
        for positions, greenlet in waiting:
            for position, result in zip(positions, greenlet.get(), strict=True):
                results[position] = result
        return results

    def history(self, channel: str, since: int | None, limit: int | None = None) -> History:
        return self.shard_of(channel).history(channel, since, limit)

    def listen(self, channel: str) -> None:
        self.shard_of(channel).listen(channel)

    def unlisten(self, channel: str) -> None:
        self.shard_of(channel).unlisten(channel)

    def join(self, channel: str, member: dict, exclude: str) -> None:
        self.shard_of(channel).join(channel, member, exclude)

    def leave(self, channel: str, member: dict) -> None:
        self.shard_of(channel).leave(channel, member)

    def count(self, channel: str) -> None:
        self.shard_of(channel).count(channel)

    def channel_counts(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for shard in self.shards:
            totals.update(shard.channel_counts())  # each channel is counted on its own instance only
        return {name: count for name, count in totals.items() if count > 0}

    def members(self, channel: str) -> list[dict]:
        return self.shard_of(channel).members(channel)

    def member_count(self, channel: str) -> int:
        return self.shard_of(channel).member_count(channel)

    def maintain(self) -> None:
        for shard in self.shards:
            shard.maintain()

    def problem(self) -> str | None:
        """Why no channel can be served right now, or None. With several instances, one that is
        down stops only its channels (their subscribers are told, their publishes refused): the
        worker still serves the rest, so only all of them down makes it unhealthy."""
        for shard in self.shards:
            shard.start()
        for shard in self.shards:
            if shard.problem == CONNECTING:
                shard.connected.wait(2.0)  # a new worker's first health check waits for its first connect
        problems = [shard.problem for shard in self.shards]
        if all(problems):
            return "; ".join(problems)
        return None

    def close(self) -> None:
        for shard in self.shards:
            shard.close()
