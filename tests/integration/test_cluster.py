"""Many workers as one server: two Gunicorn instances of two workers each, sharing one Redis."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import threading
import time

import pytest

from tests.integration.servers import ROOT, Endpoint, Nginx, RawSocket, masked_frame
from tests.integration.test_metrics import scrape


@pytest.fixture
def cluster(start_server, redis_server):
    """Instances A and B, two workers each, one Redis; dead workers' members leave within 2 s."""
    env = {"SWITCHBOARD_REDIS_URL": redis_server.url, "SWITCHBOARD_WORKERS": "2", "SWITCHBOARD_PRESENCE_TTL": "2"}
    return start_server(env), start_server(env)


def established_connections(port: int) -> int:
    """TCP connections established to a local port, read from /proc/net/tcp."""
    with open("/proc/net/tcp") as table:
        rows = [line.split() for line in table.readlines()[1:]]
    return sum(1 for row in rows if int(row[1].split(":")[1], 16) == port and row[3] == "01")


def wait_for(condition, timeout: float = 15.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise TimeoutError("condition never held")


def test_clients_on_different_instances_chat_and_share_presence(cluster):
    a, b = cluster
    with a.client(token=a.token("ann")) as ann, b.client(token=b.token("ben")) as ben:
        ann.command("subscribe", channel="presence-hall")
        ben.command("subscribe", channel="presence-hall")
        assert ann.next_push("join")["member"]["user"] == "ben"

        ann.command("publish", channel="presence-hall", data="hi from A")
        ben.command("publish", channel="presence-hall", data="hi from B")
        for client in (ann, ben):
            assert [message["data"] for message in client.messages(2)] == ["hi from A", "hi from B"]

        for server, client in ((a, ann), (b, ben)):
            members = client.command("presence", channel="presence-hall")["result"]["members"]
            assert sorted(member["user"] for member in members) == ["ann", "ben"]
            status, body = server.api("GET", "/api/channels/presence-hall/presence")
            assert sorted(member["user"] for member in body["members"]) == ["ann", "ben"]

        # HTTP publishes on either instance reach both, in one order, with cluster-wide offsets.
        offsets = [
            server.api("POST", "/api/publish", {"channel": "presence-hall", "data": n})[1]["offset"]
            for n, server in enumerate((a, b, a))
        ]
        assert offsets == sorted(offsets) and len(set(offsets)) == 3
        for client in (ann, ben):
            assert [(m["offset"], m["data"]) for m in client.messages(3)] == list(zip(offsets, [0, 1, 2], strict=True))


def test_one_user_on_two_instances_is_one_member(cluster):
    a, b = cluster
    token = a.token("cat")
    with a.client(token=a.token("dan")) as dan:
        dan.command("subscribe", channel="presence-room")
        tab_a = a.client(token=token)
        tab_a.command("subscribe", channel="presence-room")
        assert dan.next_push("join")["member"]["user"] == "cat"
        tab_b = b.client(token=token)
        tab_b.command("subscribe", channel="presence-room")
        tab_a.close()
        members = dan.command("presence", channel="presence-room")["result"]["members"]
        assert sorted(member["user"] for member in members) == ["cat", "dan"]
        assert [frame for frame in dan.pushes if frame["type"] in ("join", "leave")] == []
        tab_b.close()
        assert dan.next_push("leave")["member"]["user"] == "cat"


def test_recovery_after_reconnecting_to_the_other_instance(cluster):
    a, b = cluster
    with a.client() as publisher:
        reader = a.client()
        subscribed = reader.command("subscribe", channel="feed")["result"]
        for n in range(3):
            publisher.command("publish", channel="feed", data=n)
        last = reader.messages(3)[-1]["offset"]
        reader.close()
        for n in range(3, 7):
            publisher.command("publish", channel="feed", data=n)

        with b.client() as reader:
            reply = reader.command("subscribe", channel="feed", since=last, epoch=subscribed["epoch"])
            assert reply["result"]["recovered"] is True and reply["result"]["epoch"] == subscribed["epoch"]
            publisher.command("publish", channel="feed", data=7)
            replayed = reader.messages(5)
            assert [message["data"] for message in replayed] == [3, 4, 5, 6, 7]
            assert [message["offset"] for message in replayed] == list(range(last + 1, last + 6))
            reader.command("ping")
            assert [frame for frame in reader.pushes if frame["type"] == "message"] == []


def test_a_killed_worker_s_members_leave_within_the_bound(cluster):
    a, b = cluster
    with a.client(token=a.token("eve")) as eve:
        eve.command("subscribe", channel="presence-ops")
        doomed = b.client(token=b.token("fay"))
        doomed.command("subscribe", channel="presence-ops")
        assert eve.next_push("join")["member"]["user"] == "fay"
        for pid in b.worker_pids():
            os.kill(pid, signal.SIGKILL)  # no cleanup at all: only the heartbeat can tell
        killed_at = time.monotonic()
        assert eve.next_push("leave", timeout=15)["member"]["user"] == "fay"
        # TTL 2 s, checked every TTL/3: the bound is TTL plus a check, with slack for a busy box.
        assert time.monotonic() - killed_at < 10
        members = eve.command("presence", channel="presence-ops")["result"]["members"]
        assert [member["user"] for member in members] == ["eve"]


def test_redis_outage_is_reported_refused_and_recovered(cluster, redis_server):
    a, b = cluster
    with a.client() as reader, b.client() as writer:
        old_epoch = reader.command("subscribe", channel="news")["result"]["epoch"]
        writer.command("publish", channel="news", data="before")
        assert reader.next_push("message")["data"] == "before"

        redis_server.stop()
        status, body = wait_for(lambda: (lambda h: h if h[0] == 503 else None)(b.health()))
        assert body["status"] == "degraded" and "redis" in body["reason"]
        refused = writer.command("publish", channel="news", data="during")
        assert refused["type"] == "error" and refused["code"] == "unavailable"
        status, body = b.api("POST", "/api/publish", {"channel": "news", "data": "during"})
        assert (status, body["code"]) == (503, "unavailable")

        redis_server.start()
        wait_for(lambda: a.health()[0] == 200 and b.health()[0] == 200, timeout=20)
        # Redis kept nothing, so the epoch changed: the reader is told, and its subscription ends;
        # subscribing again from where it was says the messages of the new epoch were not recovered.
        notice = reader.next_push("error")
        assert (notice["code"], notice["channel"], notice["epoch"]) == ("unrecoverable", "news", old_epoch)
        again = reader.command("subscribe", channel="news", since=1, epoch=old_epoch)["result"]
        assert again["recovered"] is False and again["epoch"] != old_epoch
        # Service restored: the same sockets get new messages without reconnecting.
        wait_for(lambda: writer.command("publish", channel="news", data="after")["type"] == "reply", timeout=20)
        assert reader.next_push("message")["data"] == "after"
        # Offsets from before cannot be recovered by anyone.
        with a.client() as late:
            reply = late.command("subscribe", channel="news", since=1, epoch=old_epoch)
            assert reply["result"]["recovered"] is False
        assert [frame for frame in reader.pushes if frame.get("data") == "during"] == []
        # Workers that were listening reconnected; /metrics adds up an instance's workers (each
        # worker passes on its counts within a second).
        for server in (a, b):
            wait_for(lambda server=server: scrape(server.url)["switchboard_broker_reconnects_total"] >= 1, timeout=5)


def test_chat_through_nginx_in_front_of_both_instances(cluster, tmp_path):
    """deploy/nginx.conf, as shipped, with only the ports changed."""
    a, b = cluster
    proxy = Nginx(tmp_path, (a.port, b.port))
    try:
        front = Endpoint(proxy.port)
        wait_for(lambda: front.health()[0] == 200)
        token = a.token("gil")
        clients = [front.client(token=token if n == 0 else a.token(f"user{n}")) for n in range(4)]
        for client in clients:
            client.command("subscribe", channel="presence-proxied")
        clients[0].command("publish", channel="presence-proxied", data="through nginx")
        for client in clients:
            assert client.next_push("message")["data"] == "through nginx"
        members = clients[-1].command("presence", channel="presence-proxied")["result"]["members"]
        assert sorted(member["user"] for member in members) == ["gil", "user1", "user2", "user3"]
        # least_conn spread the sockets over both instances.
        counts = [established_connections(server.port) for server in (a, b)]
        assert all(count >= 1 for count in counts), counts
        for client in clients:
            client.close()
    finally:
        proxy.stop()


def test_a_worker_killed_mid_stream_loses_nothing_after_recovery(cluster):
    """The reader's worker dies under it; it reconnects elsewhere and recovers every message."""
    import threading

    from websockets.exceptions import ConnectionClosed

    a, b = cluster
    total = 150
    reader = b.client()
    epoch = reader.command("subscribe", channel="stream")["result"]["epoch"]
    started = threading.Event()

    def publish_steadily() -> None:
        with a.client() as publisher:
            for n in range(total):
                publisher.command("publish", channel="stream", data=n)
                if n == 20:
                    started.set()
                time.sleep(0.01)

    publisher = threading.Thread(target=publish_steadily)
    publisher.start()
    seen: list[dict] = []
    started.wait(10)
    for pid in b.worker_pids():
        os.kill(pid, signal.SIGKILL)
    try:
        while True:
            frame = reader.recv(timeout=10)
            if frame["type"] == "message":
                seen.append(frame)
    except ConnectionClosed:
        pass
    assert seen, "some messages arrived before the kill"

    with a.client() as again:
        reply = again.command("subscribe", channel="stream", since=seen[-1]["offset"], epoch=epoch)
        assert reply["result"]["recovered"] is True
        publisher.join(30)
        seen += again.messages(total - len(seen), timeout=15)
        again.command("ping")
        assert [frame for frame in again.pushes if frame["type"] == "message"] == []
    assert [message["data"] for message in seen] == list(range(total))
    assert [message["offset"] for message in seen] == list(range(seen[0]["offset"], seen[0]["offset"] + total))


def test_a_burst_of_publishes_through_redis_keeps_its_order_everywhere(cluster, redis_server):
    """One write of 90 publishes (within the rate limit's burst) goes to Redis as one pipeline: the
    replies, the offsets and what the other instance's subscriber hears keep the order sent."""
    a, b = cluster
    with b.client() as listener:
        listener.command("subscribe", channel="burst")
        publisher = RawSocket(a.port)
        frames = [json.dumps({"type": "publish", "channel": "burst", "data": n, "id": n}) for n in range(90)]
        publisher.sock.sendall(b"".join(masked_frame(frame.encode()) for frame in frames))
        replies = [json.loads(payload) for _opcode, payload in itertools.islice(publisher.frames(), 91)][1:]
        assert [reply["id"] for reply in replies] == list(range(90))
        assert [reply["result"]["offset"] for reply in replies] == list(range(1, 91))
        assert [message["data"] for message in listener.messages(90)] == list(range(90))
        publisher.close()


def test_publishing_goes_on_after_redis_forgets_the_scripts(cluster, redis_server):
    a, _ = cluster
    with a.client() as client:
        assert client.command("publish", channel="c", data=1)["result"]["offset"] == 1
        flush = subprocess.run(
            [
                shutil.which("redis-cli") or str(ROOT / ".venv/bin/redis-cli"),
                "-p",
                str(redis_server.port),
                "SCRIPT",
                "FLUSH",
            ],
            capture_output=True,
        )
        assert flush.returncode == 0, flush.stderr
        assert client.command("publish", channel="c", data=2)["result"]["offset"] == 2
        assert client.command("subscribe", channel="c", since=0)["result"]["offset"] == 2


def test_the_first_subscribes_of_a_fresh_worker_all_get_through(start_server, redis_server):
    """Many clients subscribing to many channels at once, before anything else has touched the
    broker: the ones whose channels were wanted while the listener's first SUBSCRIBE was on its
    way must not be forgotten (they once waited 5 s and got `unavailable`)."""
    server = start_server({"SWITCHBOARD_REDIS_URL": redis_server.url, "SWITCHBOARD_WORKERS": "2"}, ready=False)
    wait_for(lambda: _echo_answers(server.port))  # ready, without /healthz (which starts the listener)
    replies: list[str] = []

    def subscribe(i: int) -> None:
        with server.client() as client:
            replies.append(client.command("subscribe", channel=f"fresh-{i % 10}")["type"])

    threads = [threading.Thread(target=subscribe, args=(i,)) for i in range(30)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert replies == ["reply"] * 30


def _echo_answers(port: int) -> bool:
    try:
        with Endpoint(port).client("/ws/echo") as echo:
            echo.send("up")
            return echo.ws.recv(timeout=5) == "up"
    except OSError:
        return False
