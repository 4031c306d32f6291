"""Users chat on channels, see who is there, and get back what they missed."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap

from tests.integration.servers import ROOT, Server


def members_of(server: Server, channel: str) -> list[str]:
    """The users present on `channel`, as the HTTP API (any worker) sees them."""
    status, body = server.api("GET", f"/api/channels/{channel}/presence")
    assert status == 200, body
    return sorted(member["user"] for member in body["members"])


def test_two_clients_chat_both_ways(server):
    with server.client() as alice, server.client() as bob:
        assert alice.welcome["type"] == "welcome" and alice.welcome["client"] != bob.welcome["client"]
        for client in (alice, bob):
            reply = client.command("subscribe", channel="room-1")
            assert reply["type"] == "reply" and reply["result"]["channel"] == "room-1"

        published = alice.command("publish", channel="room-1", data={"text": "hi bob"})
        assert published["result"]["offset"] >= 1
        for client in (alice, bob):
            message = client.next_push("message")
            assert message["data"] == {"text": "hi bob"}
            assert message["from"] == alice.welcome["user"]
            assert message["offset"] == published["result"]["offset"]

        bob.command("publish", channel="room-1", data="hello alice")
        assert alice.next_push("message")["data"] == "hello alice"


def test_unsubscribed_clients_get_nothing(server):
    with server.client() as listener, server.client() as other, server.client() as publisher:
        for channel in ("quiet", "elsewhere"):
            listener.command("subscribe", channel=channel)
        other.command("subscribe", channel="elsewhere")
        listener.command("unsubscribe", channel="quiet")
        publisher.command("publish", channel="quiet", data=1)
        publisher.command("publish", channel="elsewhere", data=2)
        assert other.next_push("message")["data"] == 2
        # The second publish reaches the listener's worker after the first (one publisher, one
        # broker stream per worker): had the first been delivered, it would be here before it.
        assert [(message["channel"], message["data"]) for message in listener.messages(1)] == [("elsewhere", 2)]
        assert listener.pushes == []


def test_presence_counts_users_not_tabs(server):
    alice_token = server.token("alice", info={"name": "Alice"})
    with server.client(token=server.token("bob")) as bob:
        bob.command("subscribe", channel="presence-room")
        tab1 = server.client(token=alice_token)
        tab1.command("subscribe", channel="presence-room")
        tab1.command("subscribe", channel="tab1-only")  # after presence-room: a close ends it after
        assert bob.next_push("join") == {
            "type": "join",
            "channel": "presence-room",
            "member": {"user": "alice", "info": {"name": "Alice"}},
        }

        tab2 = server.client(token=alice_token)
        tab2.command("subscribe", channel="presence-room")
        members = bob.command("presence", channel="presence-room")["result"]["members"]
        assert sorted(member["user"] for member in members) == ["alice", "bob"]

        assert members_of(server, "tab1-only") == ["alice"]
        tab1.close()
        # Alice still has a tab open: no leave yet. Once she is gone from the channel only tab1 was
        # in, the server has handled tab1's close (its subscriptions end in the order they began, one
        # worker's presence writes reach Redis in order); a leave it sent comes before a marker
        # published after that, on any worker.
        server.wait_until(lambda: members_of(server, "tab1-only") == [])
        server.api("POST", "/api/publish", {"channel": "presence-room", "data": "marker"})
        assert bob.next_push("message")["data"] == "marker"
        assert [frame["type"] for frame in bob.pushes] == []

        tab2.close()
        assert bob.next_push("leave")["member"]["user"] == "alice"
        status, body = server.api("GET", "/api/channels/presence-room/presence")
        assert status == 200 and [member["user"] for member in body["members"]] == ["bob"]


def test_a_killed_client_leaves(server):
    token = server.token("carol")
    script = textwrap.dedent(f"""
        import sys
        from websockets.sync.client import connect
        ws = connect("{server.ws_url}/ws?token={token}")
        ws.recv()
        ws.send('{{"type":"subscribe","channel":"presence-doomed","id":1}}')
        ws.recv()
        print("subscribed", flush=True)
        sys.stdin.read()
    """)
    with server.client(token=server.token("dave")) as dave:
        dave.command("subscribe", channel="presence-doomed")
        child = subprocess.Popen(
            [sys.executable, "-c", script], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert child.stdout.readline().strip() == "subscribed"
        assert dave.next_push("join")["member"]["user"] == "carol"
        child.send_signal(signal.SIGKILL)  # no close frame: the kernel resets the socket
        child.wait()
        assert dave.next_push("leave")["member"]["user"] == "carol"


def test_recovery_after_reconnect_loses_and_repeats_nothing(server):
    with server.client() as publisher:
        reader = server.client()
        subscribed = reader.command("subscribe", channel="feed")["result"]
        for n in range(3):
            publisher.command("publish", channel="feed", data=n)
        seen = reader.messages(3)
        last = seen[-1]["offset"]
        reader.close()

        for n in range(3, 8):
            publisher.command("publish", channel="feed", data=n)

        reader = server.client()
        reply = reader.command("subscribe", channel="feed", since=last, epoch=subscribed["epoch"])
        assert reply["result"]["recovered"] is True
        publisher.command("publish", channel="feed", data=8)
        replayed = reader.messages(6)
        assert [message["data"] for message in replayed] == [3, 4, 5, 6, 7, 8]
        offsets = [message["offset"] for message in replayed]
        assert offsets == list(range(last + 1, last + 7))
        # Nothing twice: a marker published now is the very next message.
        publisher.command("publish", channel="feed", data="marker")
        assert [message["data"] for message in reader.messages(1)] == ["marker"] and reader.pushes == []
        reader.close()


def test_recovery_reports_a_gap(start_server):
    server = start_server({"SWITCHBOARD_HISTORY_SIZE": "3"})
    with server.client() as publisher, server.client() as reader:
        for n in range(10):
            publisher.command("publish", channel="short", data=n)
        reply = reader.command("subscribe", channel="short", since=2)
        assert reply["result"] == {
            "channel": "short",
            "epoch": reply["result"]["epoch"],
            "offset": 10,
            "recovered": False,
        }
        assert [message["data"] for message in reader.messages(3)] == [7, 8, 9]

        stale = reader.command("subscribe", channel="other", since=0, epoch="from-before-a-restart")
        assert stale["result"]["recovered"] is False


def test_plain_channels_track_members_without_announcing_them(server):
    with server.client(token=server.token("gus")) as gus, server.client(token=server.token("hal")) as hal:
        gus.command("subscribe", channel="broadcast-only")
        hal.command("subscribe", channel="broadcast-only")
        members = gus.command("presence", channel="broadcast-only")["result"]["members"]
        assert sorted(member["user"] for member in members) == ["gus", "hal"]
        assert [frame for frame in gus.pushes if frame["type"] in ("join", "leave")] == []


def test_a_subscription_token_grants_its_anonymous_connection_only(start_server):
    server = start_server()  # one worker: every connection is in the same hub
    with server.client() as first, server.client() as second:
        user = first.welcome["user"]  # an anonymous connection's user is its client id
        token = server.api("POST", "/api/tokens", {"user": user, "channel": "private-doc", "publish": True})[1]["token"]
        assert first.command("subscribe", channel="private-doc", token=token)["type"] == "reply"
        assert first.command("publish", channel="private-doc", data="mine")["type"] == "reply"
        with server.client() as later:  # opened after the grant, too
            for other in (second, later):
                refused = other.command("subscribe", channel="private-doc")
                assert refused.get("code") == "forbidden", refused
                refused = other.command("publish", channel="private-doc", data="theirs")
                assert refused.get("code") == "forbidden", refused
