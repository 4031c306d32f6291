"""A Redis outage in the middle of a stream: every subscriber gets every message or is told of the
gap, on every protocol, and the clients recover; offsets never jump or restart without a word.

Two workers share a real redis-server, which the test stops while a publisher goes on publishing
numbered messages, retrying each refused one (as docs/protocol.md tells it to), and starts again:
once with its data kept, once empty (a new epoch). More than SWITCHBOARD_HISTORY_SIZE messages
are published after it is back, so a listener that came back late would find history too short.
"""

from __future__ import annotations

import json
import queue
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable

import pytest
import switchboard_client

from tests.integration.servers import ROOT, RedisServer, Server
from tests.pusher.deployments import WireClient

CHANNEL = "stream"
# Refusals (one every 10 ms) to wait for while Redis is down, and publishes stored after it is back.
OUTAGE_REFUSALS = 300
STORED_AFTER = 300


@pytest.fixture
def server(start_server, redis_server) -> Server:
    env = {
        "SWITCHBOARD_REDIS_URL": redis_server.url,
        "SWITCHBOARD_WORKERS": "2",
        "SWITCHBOARD_PUSHER_APPS": "1:k:s",
        "SWITCHBOARD_RATE_MESSAGES": "0",  # the publisher retries as fast as Redis refuses
    }
    return start_server(env)


def wait_for(condition: Callable[[], object], timeout: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited in vain for {what}")
        time.sleep(0.02)


def shutdown_saving(redis: RedisServer) -> None:
    """Stop redis-server with everything it holds saved, for the next start to load."""
    with socket.create_connection(("127.0.0.1", redis.port), timeout=5) as sock:
        sock.sendall(b"SHUTDOWN SAVE\r\n")
        sock.recv(64)  # nothing, or an error: the connection closes as the server exits
    redis.process.wait(10)


class Publisher(threading.Thread):
    """Publishes 0, 1, 2, ... with an idempotency key each, retrying a refused one after 10 ms."""

    def __init__(self, server: Server, channel: str = CHANNEL) -> None:
        super().__init__(daemon=True)
        self.client = server.client()
        self.channel = channel
        self.stored = 0  # messages stored so far: the next one is numbered this
        self.refused = 0
        self.stop = threading.Event()

    def run(self) -> None:
        with self.client:
            while not self.stop.is_set():
                reply = self.client.command(
                    "publish", channel=self.channel, data=self.stored, idempotency_key=f"n{self.stored}"
                )
                if reply["type"] == "reply":
                    self.stored += 1
                else:
                    assert reply["code"] == "unavailable", reply
                    self.refused += 1
                    time.sleep(0.01)


def check_told(events: list[tuple]) -> bool:
    """Events in arrival order: ("message", epoch, offset, n) and ("told", why). Each message
    follows the one before it (the next offset of the same epoch, the next number) unless the
    subscriber was told of a gap in between. Returns whether it was told of any.

    A message that comes again is let through: what a resubscription replays from history can
    also come live when its pub/sub copy reaches the worker late (a duplicate, which the Python
    client drops; nothing is lost).
    """
    told, previous, seen = False, None, {}
    for event in events:
        if event[0] == "told":
            told, previous = True, None
            continue
        _, epoch, offset, number = event
        if (epoch, offset) in seen:
            assert seen[epoch, offset] == number, (event, seen[epoch, offset])
            continue
        seen[epoch, offset] = number
        if previous is not None:
            assert (epoch, offset, number) == (previous[1], previous[2] + 1, previous[3] + 1), (previous, event)
        previous = event
    return told


class PythonSubscriber(threading.Thread):
    """The sync Python client, iterating; RecoveryErrors go to `on_unrecovered` and are recorded."""

    def __init__(self, server: Server, channel: str = CHANNEL) -> None:
        super().__init__(daemon=True)
        self.client = switchboard_client.connect(server.ws_url + "/ws", min_delay=0.05, max_delay=0.5)
        self.events: list[tuple] = []
        self.subscription = self.client.subscribe(
            channel, on_unrecovered=lambda error: self.events.append(("told", error.reason))
        )

    def run(self) -> None:
        for message in self.subscription:
            self.events.append(("message", message.epoch, message.offset, message.data))

    def last(self) -> int | None:
        messages = [event for event in self.events if event[0] == "message"]
        return messages[-1][3] if messages else None


class RawSubscriber(threading.Thread):
    """A raw `websockets` client speaking the protocol: on the `unrecoverable` error naming its
    channel, it subscribes again with `since` and `epoch`, as the protocol says."""

    def __init__(self, server: Server, channel: str = CHANNEL) -> None:
        super().__init__(daemon=True)
        self.client = server.client()
        self.channel = channel
        self.notices: list[dict] = []
        self.events: list[tuple] = []
        self.epoch = self.client.command("subscribe", channel=channel)["result"]["epoch"]
        self.offset: int | None = None
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                frame = self.client.recv(timeout=0.2)
            except TimeoutError:
                continue
            if frame["type"] == "message":
                self.offset = frame["offset"]
                self.events.append(("message", self.epoch, frame["offset"], frame["data"]))
            elif frame["type"] == "error" and frame["code"] == "unrecoverable":
                self.notices.append(frame)
                self.events.append(("told", frame["message"]))
                self.client.send(
                    {
                        "type": "subscribe",
                        "id": "again",
                        "channel": self.channel,
                        "since": self.offset,
                        "epoch": self.epoch,
                    }
                )
            elif frame["type"] == "reply" and frame["id"] == "again":
                self.epoch = frame["result"]["epoch"]
                if not frame["result"]["recovered"]:
                    self.events.append(("told", "recovered: false"))
            else:
                raise AssertionError(f"unexpected frame {frame}")

    def last(self) -> int | None:
        messages = [event for event in self.events if event[0] == "message"]
        return messages[-1][3] if messages else None


class BrowserSubscriber:
    """static/switchboard.js in Node (tests/client/outage_subscriber.mjs), reporting as it goes."""

    def __init__(self, server: Server) -> None:
        node = shutil.which("node")
        if node is None or not (ROOT / "node_modules" / "ws").is_dir():
            pytest.fail("the browser client's outage test needs Node.js and `npm ci`")
        self.process = subprocess.Popen(
            [node, "tests/client/outage_subscriber.mjs", server.ws_url + "/ws", CHANNEL],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[dict] = queue.Queue()
        self.events: list[tuple] = []
        self.subscriptions: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.put(json.loads(line))

    def _drain(self) -> None:
        while not self.lines.empty():
            line = self.lines.get()
            if "message" in line:
                message = line["message"]
                self.events.append(("message", message["epoch"], message["offset"], message["data"]))
            elif "subscribed" in line:
                self.subscriptions.append(line["subscribed"])
                if not line["subscribed"]["recovered"]:
                    self.events.append(("told", "recovered: false"))
            else:
                raise AssertionError(f"the browser client reported {line}")

    def subscribed(self) -> bool:
        self._drain()
        return bool(self.subscriptions)

    def last(self) -> int | None:
        self._drain()
        messages = [event for event in self.events if event[0] == "message"]
        return messages[-1][3] if messages else None

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def stream_through_an_outage(server: Server, redis: RedisServer, stop_redis: Callable[[RedisServer], None], extra=()):
    """Subscribers of every client kind, a publisher, Redis stopped and started under them;
    returns the subscribers once each has the last message."""
    python, raw, browser = PythonSubscriber(server), RawSubscriber(server), BrowserSubscriber(server)
    subscribers = (python, raw, browser)
    try:
        wait_for(browser.subscribed)
        python.start()
        raw.start()
        publisher = Publisher(server)
        publisher.start()
        wait_for(lambda: all((subscriber.last() or 0) >= 20 for subscriber in subscribers))
        stop_redis(redis)
        wait_for(lambda: publisher.refused >= OUTAGE_REFUSALS)
        redis.start()
        stored = publisher.stored
        wait_for(lambda: publisher.stored >= stored + STORED_AFTER)
        publisher.stop.set()
        publisher.join(10)
        last = publisher.stored - 1
        for subscriber in subscribers:
            wait_for(
                lambda subscriber=subscriber: subscriber.last() == last,
                what=f"{type(subscriber).__name__} to get {last}",
            )
        raw.done.set()
        raw.join(5)
    finally:
        browser.stop()
        python.client.close()
    return python, raw, browser


def test_redis_back_with_its_data_every_message_arrives_or_its_loss_is_told(server, redis_server):
    epoch = server.api("GET", f"/api/channels/{CHANNEL}/history")[1]["epoch"]
    python, raw, browser = stream_through_an_outage(server, redis_server, shutdown_saving)
    assert server.api("GET", f"/api/channels/{CHANNEL}/history")[1]["epoch"] == epoch, "Redis kept its data"
    for subscriber in (python, raw, browser):
        if not check_told(subscriber.events):
            # Nothing was announced lost, so nothing was: every number from the first.
            numbers = sorted({event[3] for event in subscriber.events})
            assert numbers == list(range(numbers[0], numbers[-1] + 1))
    for notice in raw.notices:
        assert notice["id"] is None and notice["channel"] == CHANNEL and notice["epoch"] == epoch


def test_redis_back_empty_every_subscriber_is_told_of_the_new_epoch(server, redis_server):
    """Redis lost everything: offsets start again from 1 in a new epoch. Every protocol says so;
    the clients resubscribe, learn the new epoch and go on with its messages."""
    old_epoch = server.api("GET", f"/api/channels/{CHANNEL}/history")[1]["epoch"]
    graphql = server.client("/graphql", subprotocols=["graphql-transport-ws"])
    graphql.send({"type": "connection_init", "payload": None})
    assert graphql.recv()["type"] == "connection_ack"
    graphql.send(
        {
            "id": "feed",
            "type": "subscribe",
            "payload": {"query": f'subscription {{ messages(channel: "{CHANNEL}") {{ offset epoch data }} }}'},
        }
    )
    pusher = WireClient(server, key="k")
    pusher.send("pusher:subscribe", {"channel": CHANNEL})
    pusher.next("pusher_internal:subscription_succeeded", CHANNEL)

    python, raw, browser = stream_through_an_outage(server, redis_server, RedisServer.stop)

    new_epoch = server.api("GET", f"/api/channels/{CHANNEL}/history")[1]["epoch"]
    assert new_epoch != old_epoch
    for subscriber in (python, raw, browser):
        assert check_told(subscriber.events), (type(subscriber).__name__, subscriber.events)
        assert subscriber.events[-1][1] == new_epoch
    notice = raw.notices[0]
    assert (notice["id"], notice["channel"], notice["epoch"]) == (None, CHANNEL, old_epoch)
    assert notice["offset"] >= 20
    assert browser.subscriptions[-1]["epoch"] == new_epoch and browser.subscriptions[-1]["resumed"] is True
    # GraphQL: the subscription ends with an `unrecoverable` error, as a resume history cannot serve.
    frames = [graphql.recv()]
    while frames[-1]["type"] == "next":
        frames.append(graphql.recv())
    assert frames[-1]["id"] == "feed" and frames[-1]["type"] == "error", frames[-1]
    extensions = frames[-1]["payload"][0]["extensions"]
    assert extensions["code"] == "unrecoverable" and extensions["epoch"] == old_epoch
    offsets = [frame["payload"]["data"]["messages"]["offset"] for frame in frames[:-1]]
    assert offsets == list(range(offsets[0], offsets[0] + len(offsets)))
    # Pusher: the subscription goes on, after a switchboard:unrecoverable event on the channel.
    lost = pusher.next("switchboard:unrecoverable", CHANNEL)
    assert lost["data"]["code"] == "unrecoverable" and lost["data"]["epoch"] == old_epoch
    graphql.close()
    pusher.ws.close()
