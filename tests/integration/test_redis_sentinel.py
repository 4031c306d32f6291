"""Sentinel failover mid-stream: a primary, a replica and three Sentinels, all real.

The replica follows the primary through a relay the test controls, so the test can hold back
the last writes (as a lagging network does) and then kill the primary: the replica promoted in
its place never had them, and new messages take their offsets. Every subscriber must be told
(never a silent jump or a reused offset), resubscribe and stream on from the new primary, and a
client that resumes later with an offset of the lost stretch must hear that it cannot be replayed.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import threading
from pathlib import Path

import pytest
import redis

from tests.integration.servers import RedisServer, free_port, redis_server_binary
from tests.integration.test_redis_outage import CHANNEL, Publisher, RawSubscriber, check_told, wait_for

MASTER = "mymaster"


class Relay(threading.Thread):
    """A TCP relay from the replica to the primary that can stop passing the primary's bytes on."""

    def __init__(self, target_port: int) -> None:
        super().__init__(daemon=True)
        self.port = free_port()
        self.target_port = target_port
        self.passing = threading.Event()
        self.passing.set()
        self.listener = socket.create_server(("127.0.0.1", self.port))
        self.sockets: list[socket.socket] = []

    def run(self) -> None:
        while True:
            try:
                replica, _ = self.listener.accept()
            except OSError:
                return  # cut
            primary = socket.create_connection(("127.0.0.1", self.target_port))
            self.sockets += [replica, primary]
            threading.Thread(target=self._pump, args=(replica, primary, None), daemon=True).start()
            threading.Thread(target=self._pump, args=(primary, replica, self.passing), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket, gate: threading.Event | None) -> None:
        try:
            while True:
                if gate is not None:
                    gate.wait()  # held back: the bytes stay with the primary
                data = source.recv(65536)
                if not data:
                    return
                sink.sendall(data)
        except OSError:
            return

    def cut(self) -> None:
        """Drop the link and whatever the primary sent that was held back."""
        self.listener.close()
        for sock in self.sockets:
            sock.close()
        self.passing.set()


class Sentinel:
    """`redis-server --sentinel` with a config file of its own."""

    def __init__(self, folder: Path, primary_port: int) -> None:
        self.port = free_port()
        config = folder / f"sentinel-{self.port}.conf"
        config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor {MASTER} 127.0.0.1 {primary_port} 2\n"
            f"sentinel down-after-milliseconds {MASTER} 1000\n"
            # Long, so no Sentinel "corrects" the replica following the relay's address meanwhile.
            f"sentinel failover-timeout {MASTER} 60000\n"
        )
        log = open(folder / f"sentinel-{self.port}.log", "ab")
        self.process = subprocess.Popen([redis_server_binary(), str(config), "--sentinel"], stdout=log, stderr=log)

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, decode_responses=True)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


@pytest.fixture
def replicated(tmp_path, redis_server):
    """The primary (`redis_server`), a replica behind a relay, three Sentinels watching them."""
    relay = Relay(redis_server.port)
    relay.start()
    replica_folder = tmp_path / "replica"
    replica_folder.mkdir()
    replica = RedisServer(replica_folder)
    with redis.Redis(port=replica.port) as direct:
        direct.replicaof("127.0.0.1", relay.port)
        wait_for(lambda: direct.info("replication")["master_link_status"] == "up", what="the replica in sync")
    sentinels = [Sentinel(tmp_path, redis_server.port) for _ in range(3)]

    def sentinels_agree() -> bool:
        try:
            return all(
                len(s.client().sentinel_slaves(MASTER)) == 1 and len(s.client().sentinel_sentinels(MASTER)) == 2
                for s in sentinels
            )
        except redis.ConnectionError:
            return False

    wait_for(sentinels_agree, what="the Sentinels to know the replica and each other")
    yield redis_server, replica, relay, sentinels
    relay.cut()
    for sentinel in sentinels:
        sentinel.stop()
    replica.stop()


def test_a_failover_that_lost_writes_is_told_to_every_subscriber(start_server, replicated):
    primary, replica, relay, sentinels = replicated
    hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
    server = start_server(
        {
            "SWITCHBOARD_REDIS_URL": f"redis+sentinel://{hosts}/{MASTER}/0",
            "SWITCHBOARD_WORKERS": "2",
            "SWITCHBOARD_RATE_MESSAGES": "0",
        }
    )
    subscribers = [RawSubscriber(server) for _ in range(4)]
    for subscriber in subscribers:
        subscriber.start()
    away = server.client()  # a client that will be offline through the failover, then resume
    away_epoch = away.command("subscribe", channel=CHANNEL)["result"]["epoch"]
    publisher = Publisher(server)
    publisher.start()
    try:
        wait_for(lambda: publisher.stored >= 20)
        relay.passing.clear()  # from here the replica hears nothing more
        held_from = publisher.stored
        wait_for(lambda: publisher.stored >= held_from + 30)
        # Every subscriber has messages the replica never got.
        wait_for(lambda: all((s.last() or 0) >= held_from + 20 for s in subscribers))
        last_seen = away.messages(held_from + 20)[-1]
        away.close()

        primary.process.send_signal(signal.SIGKILL)
        primary.process.wait(10)
        relay.cut()
        with sentinels[0].client() as sentinel:
            wait_for(
                lambda: int(sentinel.sentinel_get_master_addr_by_name(MASTER)[1]) == replica.port,
                what="the Sentinels to promote the replica",
            )
        stored = publisher.stored
        wait_for(lambda: publisher.stored >= stored + 150, what="publishes to the new primary")
        wait_for(
            lambda: all(s.notices and s.events[-1][0] == "message" for s in subscribers),
            what="every subscriber told, and streaming again",
        )
    finally:
        publisher.stop.set()
        publisher.join(10)
    caught_up(publisher, subscribers)
    for subscriber in subscribers:
        assert check_told(subscriber.events), subscriber.events

    # The new primary really lacks what was held back.
    with redis.Redis(port=replica.port) as direct:
        held = [
            int(fields[b"d"].split(b'"data":')[1].split(b",")[0]) for _, fields in direct.xrange(f"sb:{{{CHANNEL}}}:s")
        ]
    assert last_seen["data"] not in held

    # A client back with an offset of the lost stretch hears that it cannot be replayed.
    with server.client() as back:
        reply = back.command("subscribe", channel=CHANNEL, since=last_seen["offset"], epoch=away_epoch)["result"]
        assert not reply["recovered"] and reply["epoch"] != away_epoch


def test_sentinel_failover_on_command_subscribers_resume(start_server, replicated):
    """`SENTINEL FAILOVER` mid-stream: the replica takes over, the old primary steps down; the
    worker reconnects to the new primary and subscribers go on, told of anything lost."""
    primary, replica, relay, sentinels = replicated
    hosts = ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in sentinels)
    server = start_server(
        {"SWITCHBOARD_REDIS_URL": f"redis+sentinel://{hosts}/{MASTER}", "SWITCHBOARD_RATE_MESSAGES": "0"}
    )
    subscribers = [RawSubscriber(server) for _ in range(2)]
    for subscriber in subscribers:
        subscriber.start()
    publisher = Publisher(server)
    publisher.start()
    try:
        wait_for(lambda: publisher.stored >= 20)
        with sentinels[0].client() as sentinel:
            sentinel.execute_command("SENTINEL", "FAILOVER", MASTER)
            wait_for(
                lambda: int(sentinel.sentinel_get_master_addr_by_name(MASTER)[1]) == replica.port,
                what="the failover",
            )
        # Until the Sentinels turn the old primary into a replica, it still takes writes (lost
        # when it does: a fork, which subscribers are told of); then it drops its clients.
        with redis.Redis(port=primary.port) as direct:
            wait_for(lambda: direct.info("replication")["role"] == "slave", what="the old primary demoted")
        stored = publisher.stored
        wait_for(lambda: publisher.stored >= stored + 100, what="publishes to the new primary")
    finally:
        publisher.stop.set()
        publisher.join(10)
    last = caught_up(publisher, subscribers)
    for subscriber in subscribers:
        if not check_told(subscriber.events):
            numbers = [event[3] for event in subscriber.events]
            assert numbers == list(range(numbers[0], numbers[-1] + 1))
    # The stream went on on the new primary.
    with redis.Redis(port=replica.port) as direct:
        assert last_number(direct) == last


def caught_up(publisher, subscribers: list) -> int:
    """Once the publisher has stopped: wait until every subscriber has the last message stored,
    stop them, and return its number."""
    last = publisher.stored - 1
    for subscriber in subscribers:
        wait_for(lambda subscriber=subscriber: subscriber.last() == last, what=f"a subscriber to get {last}")
        subscriber.done.set()
        subscriber.join(5)
    return last


def last_number(direct: redis.Redis) -> int:
    """The number the publisher gave the last message the channel's history holds."""
    _, fields = direct.xrevrange(f"sb:{{{CHANNEL}}}:s", count=1)[0]
    return int(fields[b"d"].split(b'"data":')[1].split(b",")[0])
