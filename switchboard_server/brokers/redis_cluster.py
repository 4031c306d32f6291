"""Redis Cluster for the Redis broker: channels in hash-tagged partitions, heard once per node.

`redis+cluster://[[user]:password@]host:port[,host:port...]` names some nodes of a cluster (any
reachable one is enough: the others are found). Channels are spread over
SWITCHBOARD_REDIS_PARTITIONS partitions by the Jump hash the broker uses for a list of instances,
and partition p is a `PartitionShard`: a `RedisShard` whose keys and single bus all carry the
partition's hash tag (`sb:{<tag>}:...`). A channel's offsets, history and presence, its
partition's worker bookkeeping and the partition's shard channel (SSUBSCRIBE/SPUBLISH) are thus in
one slot; every script call touches that slot only, and the reaper of a dead worker works one
partition at a time. Tags are chosen so partition p's slot lies in the p-th of N equal slot
ranges, which spreads the partitions evenly over masters holding equal contiguous ranges (what
`redis-cli --cluster create` gives).

Commands go through redis-py's RedisCluster, which follows MOVED and ASK and re-reads the slot
map after a failure; each partition has its own pipeline, so a master that is down stalls only
its own partitions. Pub/sub is not left to redis-py's ClusterPubSub, which polls its per-node
connections in turn and, after a slot moves, resubscribes without a word about what went by
meanwhile. Here a `NodeListener` per master holds one connection with an SSUBSCRIBE for each of
the worker's partitions there, read by a greenlet of its own. When that connection fails, or
Redis unsubscribes a shard channel because its slot moved, the partitions concerned are placed
again by the slot map as it is now and subscribe on their node (`NodeListeners.follow`); each
of their channels is then caught up from history as in `redis_shard`, and what history no longer
holds, or what a failover lost, reaches the subscribers as a gap, never silently.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from functools import lru_cache
from urllib.parse import unquote, urlsplit

import gevent
import gevent.pool
import redis
from gevent.event import Event
from gevent.lock import RLock
from redis.backoff import NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot
from redis.exceptions import MovedError, RedisClusterException
from redis.retry import Retry

from switchboard_server.brokers.base import Observers
from switchboard_server.brokers.pipeline import CONNECTION_FAILURES, Pipeline
from switchboard_server.brokers.redis import RedisBroker, shard_index
from switchboard_server.brokers.redis_scripts import CONTROL, KeySpace
from switchboard_server.brokers.redis_shard import RedisShard
from switchboard_server.core.config import Config
from switchboard_server.core.namespaces import Namespaces

log = logging.getLogger("switchboard.redis")

# A listener's reconnect delays, in seconds (short, as in `redis_shard`: history is bounded), and
# how long a partition whose shard channel Redis dropped waits for the slot map to show its new node.
_RECONNECT_FIRST = 0.05
_RECONNECT_MAX = 0.25
_FOLLOW_TRIES = 20
_FOLLOW_PAUSE = 0.1
# Fail fast (one retry after re-reading the slot map), as a single Redis does.
_NODE_OPTIONS = {"socket_timeout": 5, "socket_connect_timeout": 2, "health_check_interval": 10}


def cluster_client(url: str) -> tuple[RedisCluster, dict]:
    """A RedisCluster for `redis+cluster://...`, and the options a node's own connection needs."""
    parts = urlsplit(url)
    nodes = []
    for address in parts.netloc.rsplit("@", 1)[-1].split(","):
        host, _, port = address.strip().rpartition(":")
        nodes.append(ClusterNode(host or address, int(port) if host else 6379))
    options = dict(_NODE_OPTIONS)
    if parts.password is not None:
        options["password"] = unquote(parts.password)
    if parts.username:
        options["username"] = unquote(parts.username)
    # Not every slot need be served: with one master down, the others' partitions go on.
    client = RedisCluster(startup_nodes=nodes, retry=Retry(NoBackoff(), 1), require_full_coverage=False, **options)
    return client, dict(options, retry=Retry(NoBackoff(), 0))


@lru_cache(maxsize=8)
def partition_tags(partitions: int) -> tuple[str, ...]:
    """Hash tags `p<p>` or `p<p>.<n>`, the first whose slot lies in partition p's share of the slots."""
    if not 1 <= partitions <= 4096:
        raise ValueError(f"SWITCHBOARD_REDIS_PARTITIONS={partitions}: a cluster takes 1 to 4096 partitions")
    tags = []
    for partition in range(partitions):
        low = partition * REDIS_CLUSTER_HASH_SLOTS // partitions
        high = (partition + 1) * REDIS_CLUSTER_HASH_SLOTS // partitions
        tag, number = f"p{partition}", 0
        while not low <= key_slot(tag.encode()) < high:
            number += 1
            tag = f"p{partition}.{number}"
        tags.append(tag)
    return tuple(tags)


class ClusterScriptPipeline(Pipeline):
    """The shard's pipeline through a cluster client.

    Each command goes to the node serving its first key's slot, named here: left to itself, a
    RedisCluster pipeline asks a default node for an EVALSHA's keys (COMMAND GETKEYS), one more
    round trip per script call, and one that fails for every partition while that node is down.
    A MOVED or ASK answer is still followed by the client. A node that forgot the scripts (a
    replica promoted, a master restarted) gets them from SCRIPT LOAD on every master.
    """

    def _load_scripts(self) -> None:
        for script in self._scripts:
            self._client.script_load(script.source)

    def _pipeline(self, commands: list[tuple]) -> list:
        pipe = self._client.pipeline(transaction=False)
        nodes = self._client.nodes_manager
        for command in commands:
            key = command[3] if command[0] == "EVALSHA" else command[1]
            pipe.execute_command(*command, target_nodes=nodes.get_node_from_slot(key_slot(_encoded(key))))
        return pipe.execute(raise_on_error=False)


class PartitionShard(RedisShard):
    """One partition of the cluster: its channels, whole, in the slot of its hash tag."""

    pipeline_type = ClusterScriptPipeline

    def __init__(
        self,
        *,
        config: Config,
        client: RedisCluster,
        worker: str,
        observers: Observers,
        namespaces: Namespaces | None = None,
        **placement,
    ) -> None:
        partition, tag, listeners = placement["partition"], placement["tag"], placement["listeners"]
        keys = KeySpace(prefix=f"sb:{{{tag}}}:", buses=1, publish="SPUBLISH")
        count = placement["partitions"]
        super().__init__(
            config=config,
            client=client,
            worker=worker,
            observers=observers,
            owns=lambda channel: shard_index(channel, count) == partition,
            keys=keys,
            namespaces=namespaces,
        )
        self.name = f"partition {partition} {{{tag}}}"
        self.slot = key_slot(tag.encode())
        self.bus = keys.bus("")  # one bus: every channel of the partition
        self._listeners: NodeListeners = listeners
        self.node: NodeListener | None = None

    def start(self) -> None:
        if self.node is None and not self._closed:
            self._listeners.place(self)

    def _send_subscription(self, command: str, bus: str) -> None:
        node = self.node
        if node is not None:
            node.send(self, "s" + command)

    def _drop_connections(self) -> None:
        """RedisCluster drops a failed node's connections itself."""

    def resubscribing(self) -> list[str]:
        """A connection is about to SSUBSCRIBE: catch each channel up once it is confirmed."""
        self._stale = set(self._delivered)
        return list(self._buses)

    def heard(self, pubsub: redis.client.PubSub, wake: Event) -> None:
        """The node's connection hears this partition now; a publish that gets through while it
        is away wakes that listener (`wake`)."""
        self._pubsub = pubsub
        self._redis_back = wake
        if self.problem is not None:
            self._recover()

    def wants_bus(self) -> bool:
        return self.bus in self._buses


class NodeListener:
    """One pub/sub connection to one cluster node, for every partition of the worker there."""

    def __init__(self, listeners: NodeListeners, address: str, options: dict) -> None:
        host, _, port = address.rpartition(":")
        self.address = address
        self.shards: dict[str, PartitionShard] = {}  # bus -> its partition
        self._client = redis.Redis(host=host, port=int(port), **options)
        self._listeners = listeners
        self._pubsub: redis.client.PubSub | None = None
        self._leaving: Counter[str] = Counter()  # SUNSUBSCRIBEs we sent, not yet confirmed
        self.wake = Event()
        self.closed = False
        self._greenlet = gevent.spawn(self._listen_forever)

    def add(self, shard: PartitionShard) -> None:
        self.shards[shard.bus] = shard
        shard.node = self
        if self._pubsub is not None:
            self._subscribe([shard], self._pubsub)

    def remove(self, shard: PartitionShard) -> None:
        self.shards.pop(shard.bus, None)
        shard.node = None
        if not self.shards:
            self.closed = True  # the loop ends within a second (no greenlet kills itself)

    def send(self, shard: PartitionShard, command: str) -> None:
        """SSUBSCRIBE or SUNSUBSCRIBE a partition's bus; while the connection is down, nothing:
        the next connection subscribes what is wanted then."""
        pubsub = self._pubsub
        if pubsub is None or self.shards.get(shard.bus) is not shard:
            return
        if command == "sunsubscribe":
            self._leaving[shard.bus] += 1
        try:
            getattr(pubsub, command)(shard.bus)
        except CONNECTION_FAILURES as exc:
            shard._note_failure(exc)  # the listener finds the connection gone and starts again

    def _subscribe(self, shards: list[PartitionShard], pubsub: redis.client.PubSub) -> None:
        for shard in shards:
            for bus in shard.resubscribing():
                pubsub.ssubscribe(bus)  # one at a time: shard channels of two slots in one SSUBSCRIBE are refused
        for shard in shards:
            shard.heard(pubsub, self.wake)

    def _listen_forever(self) -> None:
        backoff = _RECONNECT_FIRST
        while not self.closed:
            pubsub = self._client.pubsub()
            try:
                pubsub.subscribe(CONTROL)  # a connection even while no partition here has channels
                shards = list(self.shards.values())
                self._subscribe(shards, pubsub)
                self._pubsub = pubsub
                late = [shard for shard in self.shards.values() if shard not in shards]
                if late:
                    self._subscribe(late, pubsub)
                backoff = _RECONNECT_FIRST
                self._read(pubsub)
            except CONNECTION_FAILURES as exc:
                self._pubsub = None
                self._leaving.clear()
                for shard in list(self.shards.values()):
                    shard._went_away(exc)
                self._close(pubsub)
                self._listeners.follow()  # partitions whose slot another node serves now go there
                self.wake.clear()
                self.wake.wait(backoff * 1.5)
                backoff = min(backoff * 2, _RECONNECT_MAX)
        self._pubsub = None
        self._close(pubsub)

    def _read(self, pubsub: redis.client.PubSub) -> None:
        while not self.closed:
            try:
                message = pubsub.get_message(timeout=1.0)
            except MovedError as exc:  # an SSUBSCRIBE that reached this node after its slot left
                self._listeners.follow_slot(exc.slot_id)
                continue
            if message is not None:
                self._on_message(message)

    def _on_message(self, message: dict) -> None:
        bus = message["channel"].decode()
        shard = self.shards.get(bus)
        if message["type"] == "sunsubscribe":
            if self._leaving[bus] > 0:
                self._leaving[bus] -= 1  # one we asked for
            elif shard is not None and shard.wants_bus():
                self._listeners.moved(shard, self)  # Redis dropped it: the slot went to another node
            return
        if shard is not None:
            shard._on_pubsub(message)

    @staticmethod
    def _close(pubsub: redis.client.PubSub) -> None:
        try:
            pubsub.close()
        except CONNECTION_FAILURES:
            pass  # already gone

    def stop(self) -> None:
        self.closed = True
        self._greenlet.kill(block=False)


class NodeListeners:
    """Which node hears which partition for this worker, by the cluster's slot map."""

    def __init__(self, cluster: RedisCluster, options: dict) -> None:
        self._cluster = cluster
        self._options = options
        self._nodes: dict[str, NodeListener] = {}
        self._moving = RLock()  # one re-placement at a time, whichever listener asks
        self._followers = gevent.pool.Group()

    def place(self, shard: PartitionShard) -> None:
        """Hand the partition to the listener of the node that serves its slot now."""
        with self._moving:
            address = self._owner(shard.slot)
            listener = self._nodes.get(address)
            if listener is None or listener.closed:
                listener = self._nodes[address] = NodeListener(self, address, self._options)
            listener.add(shard)

    def _owner(self, slot: int) -> str:
        return self._cluster.nodes_manager.get_node_from_slot(slot).name

    def follow(self) -> None:
        """Read the slot map again, and move every partition whose slot another node serves now."""
        with self._moving:
            try:
                self._cluster.nodes_manager.initialize()
            except (RedisClusterException, *CONNECTION_FAILURES) as exc:
                log.warning("redis cluster: cannot read the slot map: %s", exc)
                return
            for listener in list(self._nodes.values()):
                for shard in list(listener.shards.values()):
                    if self._owner(shard.slot) != listener.address:
                        self._move(shard, listener)

    def follow_slot(self, slot: int) -> None:
        log.info("redis cluster: slot %d moved", slot)
        self._followers.spawn(self.follow)

    def moved(self, shard: PartitionShard, listener: NodeListener) -> None:
        """Redis unsubscribed the partition's bus: its slot moved. Its channels are not heard until
        it subscribes on the new node (caught up from history then)."""
        log.info("redis cluster: %s left %s (slot %d moved)", shard.name, listener.address, shard.slot)
        shard._went_away(redis.ConnectionError(f"slot {shard.slot} moved away from {listener.address}"))
        self._followers.spawn(self._follow_moved, shard, listener)

    def _follow_moved(self, shard: PartitionShard, listener: NodeListener) -> None:
        """Wait for the slot map to show the slot's new node (every node learns it in turn); if it
        never does, subscribe again where it is: a MOVED answer says where to go."""
        for _ in range(_FOLLOW_TRIES):
            self.follow()
            if shard.node is not listener:
                return
            gevent.sleep(_FOLLOW_PAUSE)
        listener.send(shard, "ssubscribe")

    def _move(self, shard: PartitionShard, listener: NodeListener) -> None:
        listener.remove(shard)
        if listener.closed:
            self._nodes.pop(listener.address, None)
        if shard._pubsub is not None:
            shard._went_away(redis.ConnectionError(f"slot {shard.slot} moved away from {listener.address}"))
        self.place(shard)

    def close(self) -> None:
        self._followers.kill(block=False)
        for listener in self._nodes.values():
            listener.stop()


class RedisClusterBroker(RedisBroker):
    """The Redis broker over a Redis Cluster: one shard per partition (see the module's docstring)."""

    def __init__(self, config: Config, namespaces: Namespaces | None = None) -> None:
        # Not RedisBroker's __init__, which reads a list of instances: the same fields, by partition.
        self.worker = os.urandom(6).hex()
        self.observers = Observers()
        client, options = cluster_client(config.redis_url)
        self.listeners = NodeListeners(client, options)
        tags = partition_tags(max(1, config.redis_partitions))
        self.shards = [
            PartitionShard(
                config=config,
                client=client,
                worker=self.worker,
                observers=self.observers,
                namespaces=namespaces,
                partition=partition,
                partitions=len(tags),
                tag=tag,
                listeners=self.listeners,
            )
            for partition, tag in enumerate(tags)
        ]
        count = len(self.shards)
        self.shard_of = lambda channel: self.shards[shard_index(channel, count)]

    def close(self) -> None:
        super().close()
        self.listeners.close()


def _encoded(key: str | bytes) -> bytes:
    return key.encode() if isinstance(key, str) else key
