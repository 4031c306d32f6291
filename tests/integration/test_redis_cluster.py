"""Redis Cluster with sharded pub/sub: three masters and three replicas, all real `redis-server`
processes made a cluster by `redis-cli --cluster create`, under two Gunicorn instances.

Channels land in hash-tagged partitions spread over every master, each channel's keys and its
partition's shard channel in one slot; every feature works across the two instances; a slot that
moves to another master mid-stream is followed, and a master killed mid-stream is replaced by its
replica, with every gap told to the subscribers and the other masters' channels streaming on.
The tests share one cluster and one pair of instances, and the failover runs last.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
from pathlib import Path

import pytest
import redis

from switchboard_server.brokers.redis import shard_index
from switchboard_server.brokers.redis_cluster import partition_tags
from tests.integration.across import every_feature_across_two_instances
from tests.integration.servers import Server, free_port
from tests.integration.test_redis_outage import Publisher, RawSubscriber, check_told, wait_for

PARTITIONS = 16
MASTERS = 3


class ClusterNodeProcess:
    """A cluster-enabled redis-server on a free port, its node file in the test's folder."""

    def __init__(self, folder: Path) -> None:
        self.port = free_port()
        log = open(folder / f"redis-{self.port}.log", "ab")
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--cluster-enabled", "yes", "--cluster-config-file", f"nodes-{self.port}.conf",
             "--cluster-port", str(free_port()),  # not the default port + 10000, which may be taken or too high
             "--cluster-node-timeout", "1000", "--cluster-require-full-coverage", "no"],
            cwd=folder, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.client = redis.Redis(port=self.port, socket_timeout=5, decode_responses=True)
        wait_for(self._answers, timeout=10, what=f"redis-server on {self.port}")

    def _answers(self) -> bool:
        try:
            return self.client.ping()
        except redis.ConnectionError:
            return False

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def info(self) -> dict[str, str]:
        lines = self.client.execute_command("CLUSTER", "INFO").splitlines()
        return dict(line.split(":", 1) for line in lines if ":" in line)

    def node_id(self) -> str:
        return self.client.execute_command("CLUSTER", "MYID")

    def is_master(self) -> bool:
        return self.client.info("replication")["role"] == "master"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


class Cluster:
    """Six nodes made three masters with a replica each, by redis-cli, and what the tests ask of them."""

    def __init__(self, folder: Path) -> None:
        self.nodes = [ClusterNodeProcess(folder) for _ in range(2 * MASTERS)]
        subprocess.run(
            ["redis-cli", "--cluster", "create", *(node.address for node in self.nodes),
             "--cluster-replicas", "1", "--cluster-yes"],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip
        wait_for(lambda: all(node.info()["cluster_state"] == "ok" for node in self.nodes), what="cluster_state:ok")
        wait_for(self._replicas_in_sync, what="every replica in sync")

    def _replicas_in_sync(self) -> bool:
        return all(node.client.info("replication").get("master_link_status") == "up" for node in self.replicas())

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(node.address for node in self.nodes[:MASTERS])

    def live(self) -> list[ClusterNodeProcess]:
        return [node for node in self.nodes if node.process.poll() is None]

    def masters(self) -> list[ClusterNodeProcess]:
        return [node for node in self.live() if node.is_master()]

    def replicas(self) -> list[ClusterNodeProcess]:
        return [node for node in self.live() if not node.is_master()]

    def owner(self, slot: int) -> ClusterNodeProcess:
        """The master serving `slot`, as the cluster says."""
        asked = self.live()[0].client
        for start, end, master, *_ in asked.execute_command("CLUSTER", "SLOTS"):
            if start <= slot <= end:
                return next(node for node in self.nodes if node.port == int(master[1]))
        raise LookupError(slot)

    def replica_of(self, master: ClusterNodeProcess) -> ClusterNodeProcess:
        return next(node for node in self.replicas() if node.client.info("replication")["master_port"] == master.port)

    def keyslot(self, key: str) -> int:
        return int(self.live()[0].client.execute_command("CLUSTER", "KEYSLOT", key))

    def move_slot(self, slot: int, target: ClusterNodeProcess) -> None:
        """Migrate `slot`, keys and all, to `target`, as `redis-cli --cluster reshard` does for each slot."""
        source = self.owner(slot)
        target.client.execute_command("CLUSTER", "SETSLOT", slot, "IMPORTING", source.node_id())
        source.client.execute_command("CLUSTER", "SETSLOT", slot, "MIGRATING", target.node_id())
        while keys := source.client.execute_command("CLUSTER", "GETKEYSINSLOT", slot, 100):
            source.client.execute_command("MIGRATE", "127.0.0.1", target.port, "", 0, 5000, "KEYS", *keys)
        # The source last: it unsubscribes the slot's shard channels once it no longer serves it.
        for node in [target, *(m for m in self.masters() if m not in (source, target)), source]:
            node.client.execute_command("CLUSTER", "SETSLOT", slot, "NODE", target.node_id())

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def tag_of(channel: str) -> str:
    return partition_tags(PARTITIONS)[shard_index(channel, PARTITIONS)]


def slot_of(channel: str) -> int:
    return redis.crc.key_slot(tag_of(channel).encode())


def one_per_master(cluster: Cluster, prefix: str) -> list[str]:
    """A channel living on each master, in the masters' order."""
    masters = cluster.masters()
    names: dict[int, str] = {}
    number = 0
    while len(names) < len(masters):
        name = f"{prefix}{number}"
        names.setdefault(masters.index(cluster.owner(slot_of(name))), name)
        number += 1
    return [names[index] for index in range(len(masters))]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory) -> Cluster:
    if shutil.which("redis-cli") is None or shutil.which("redis-server") is None:
        pytest.fail("Redis Cluster tests need redis-server and redis-cli 7 or later: make system-deps")
    started = Cluster(tmp_path_factory.mktemp("cluster"))
    yield started
    started.stop()


@pytest.fixture(scope="module")
def pair(cluster, tmp_path_factory):
    """Instances A and B of one worker each (so two workers for sure), over the cluster."""
    env = {
        "SWITCHBOARD_REDIS_URL": cluster.url,
        "SWITCHBOARD_REDIS_PARTITIONS": str(PARTITIONS),
        "SWITCHBOARD_WORKERS": "1",
        "SWITCHBOARD_RATE_MESSAGES": "0",
    }
    folder = tmp_path_factory.mktemp("servers")
    servers = [Server(folder, env).wait_ready(), Server(folder, env).wait_ready()]
    yield servers
    for server in servers:
        server.stop()


def test_partitions_spread_over_every_master_with_a_channel_and_its_bus_in_one_slot(cluster):
    tags = partition_tags(PARTITIONS)
    owners = {cluster.owner(redis.crc.key_slot(tag.encode())).port for tag in tags}
    assert owners == {master.port for master in cluster.masters()}
    for channel in ("room", "caf\u00e9 {1}", "a:b"):
        slots = {cluster.keyslot(f"sb:{{{tag_of(channel)}}}:{{{channel}}}:{part}") for part in "msuio"}
        slots.add(cluster.keyslot(f"sb:{{{tag_of(channel)}}}:bus:0"))
        assert slots == {slot_of(channel)}


def test_every_feature_across_two_instances_on_every_master(cluster, pair):
    a, b = pair
    channels = one_per_master(cluster, "presence-hall-")

    def placed(index: int, channel: str) -> None:
        # Presence and history, on the master that owns the channel's partition.
        owner = cluster.owner(slot_of(channel))
        assert owner.client.exists(f"sb:{{{tag_of(channel)}}}:{{{channel}}}:u")
        assert owner.client.xlen(f"sb:{{{tag_of(channel)}}}:{{{channel}}}:s") == 2

    with a.client(token=a.token("ann")) as ann:
        ben = every_feature_across_two_instances(a, b, ann, channels, placed)
        # An idempotency key repeated through the other instance stores nothing twice.
        first = ann.command("publish", channel=channels[0], data="once", idempotency_key="k1")["result"]
        again = ben.command("publish", channel=channels[0], data="once", idempotency_key="k1")["result"]
        assert first["offset"] == again["offset"]
        ben.close()


class Stream:
    """A numbered stream on each channel, published through one instance and heard on both."""

    def __init__(self, pair: list[Server], channels: list[str]) -> None:
        self.channels = channels
        self.subscribers = {channel: [RawSubscriber(server, channel) for server in pair] for channel in channels}
        self.publishers = {channel: Publisher(pair[i % 2], channel) for i, channel in enumerate(channels)}
        for channel in channels:
            for subscriber in self.subscribers[channel]:
                subscriber.start()
            self.publishers[channel].start()

    def stored(self, channel: str) -> int:
        return self.publishers[channel].stored

    def wait_for_more(self, channels: list[str], count: int = 50) -> None:
        """Until `count` more messages of each channel are stored and heard on both instances."""
        now = {channel: self.stored(channel) for channel in channels}
        for channel in channels:
            wait_for(lambda channel=channel: self.stored(channel) >= now[channel] + count, what=f"{channel} stored")
            for subscriber in self.subscribers[channel]:
                wait_for(
                    lambda s=subscriber, channel=channel: (s.last() or 0) >= now[channel] + count,
                    what=f"{channel} heard",
                )

    def finish(self) -> None:
        """Stop publishing; every subscriber gets to the last message stored."""
        for publisher in self.publishers.values():
            publisher.stop.set()
            publisher.join(10)
        for channel in self.channels:
            last = self.stored(channel) - 1
            for subscriber in self.subscribers[channel]:
                wait_for(lambda s=subscriber, last=last: s.last() == last, what=f"{channel} to get {last}")
                subscriber.done.set()
                subscriber.join(5)

    def unbroken(self, channel: str) -> bool:
        """Every subscriber of `channel` got every number in order, and was never told of a gap."""
        for subscriber in self.subscribers[channel]:
            if check_told(subscriber.events):
                return False
            numbers = [event[3] for event in subscriber.events]
            assert numbers == list(range(numbers[0], numbers[-1] + 1)), channel
        return True


def test_a_slot_that_moves_to_another_master_is_followed(cluster, pair):
    channels = one_per_master(cluster, "moving-")
    stream = Stream(pair, channels)
    try:
        stream.wait_for_more(channels, 20)
        slot = slot_of(channels[0])
        source = cluster.owner(slot)
        target = next(master for master in cluster.masters() if master is not source)
        cluster.move_slot(slot, target)
        assert cluster.owner(slot) is target
        stream.wait_for_more(channels)
    finally:
        stream.finish()
    assert target.client.exists(f"sb:{{{tag_of(channels[0])}}}:{{{channels[0]}}}:m")
    for channel in channels:
        # Whatever went by during the move was caught up from history or told: never skipped.
        for subscriber in stream.subscribers[channel]:
            check_told(subscriber.events)
    for channel in channels[1:]:
        assert stream.unbroken(channel)


def test_a_master_killed_mid_stream_stops_only_its_partitions_until_its_replica_takes_over(cluster, pair):
    """The replica is held back from failing over at first, so the dead master's channels are
    refused for a while (and the others' stream on); then it is let go, and is promoted."""
    a, b = pair
    channels = one_per_master(cluster, "failing-")
    stream = Stream(pair, channels)
    try:
        stream.wait_for_more(channels, 20)
        victim = cluster.owner(slot_of(channels[0]))
        replica = cluster.replica_of(victim)
        replica.client.config_set("cluster-replica-no-failover", "yes")
        victim.kill()
        refused = stream.publishers[channels[0]].refused
        wait_for(
            lambda: stream.publishers[channels[0]].refused >= refused + 50, what="the dead master's publishes refused"
        )
        stream.wait_for_more(channels[1:])
        assert a.health()[0] == 200 and b.health()[0] == 200
        replica.client.config_set("cluster-replica-no-failover", "no")
        wait_for(lambda: cluster.owner(slot_of(channels[0])) is replica, what="the replica promoted")
        stream.wait_for_more(channels)
    finally:
        stream.finish()
    for subscriber in stream.subscribers[channels[0]]:
        check_told(subscriber.events)  # caught up from the promoted replica, or told: never silent
    for channel in channels[1:]:
        assert stream.unbroken(channel)
