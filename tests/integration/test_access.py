"""Who may connect, subscribe and publish, and the limits that keep one client from hurting others.

Every rule is shown refusing, with the error a user sees, and allowing what it should.
"""

from __future__ import annotations

import json
import socket
import time

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.servers import RawSocket


def test_protected_channels_need_a_grant(server):
    plain = server.token("ida", channels=[])
    granted = server.token("joe", channels=["private-team-*"], publish=["private-team-red"])
    with server.client(token=plain) as ida, server.client(token=granted) as joe, server.client() as anon:
        for client in (ida, anon):
            for channel in ("private-team-red", "presence-lobby"):
                refused = client.command("subscribe", channel=channel)
                assert refused["type"] == "error" and refused["code"] == "forbidden"
                assert "grant" in refused["message"]
        assert joe.command("subscribe", channel="private-team-red")["type"] == "reply"
        assert joe.command("subscribe", channel="private-team-blue")["type"] == "reply"
        assert joe.command("subscribe", channel="presence-lobby")["code"] == "forbidden"

        # Publishing needs its own grant; the HTTP API can always publish.
        assert joe.command("publish", channel="private-team-red", data="ok")["type"] == "reply"
        denied = joe.command("publish", channel="private-team-blue", data="no")
        assert denied["code"] == "forbidden"
        assert (
            server.api("POST", "/api/publish", {"channel": "private-team-blue", "data": "from the back end"})[0] == 200
        )
        assert [m["data"] for m in joe.messages(2)] == ["ok", "from the back end"]


def test_subscription_tokens_grant_one_channel_to_one_user(server):
    with server.client(token=server.token("kim", channels=[])) as kim:
        status, body = server.api("POST", "/api/tokens", {"user": "kim", "channel": "private-doc-42", "publish": True})
        assert status == 200
        assert kim.command("subscribe", channel="private-doc-42", token=body["token"])["type"] == "reply"
        assert kim.command("publish", channel="private-doc-42", data="edit")["type"] == "reply"

        theirs = server.api("POST", "/api/tokens", {"user": "lee", "channel": "private-doc-43"})[1]["token"]
        refused = kim.command("subscribe", channel="private-doc-43", token=theirs)
        assert refused["code"] == "forbidden" and "not for 'kim'" in refused["message"]
        wrong_channel = server.api("POST", "/api/tokens", {"user": "kim", "channel": "private-doc-44"})[1]["token"]
        assert kim.command("subscribe", channel="private-doc-45", token=wrong_channel)["code"] == "forbidden"
        assert kim.command("subscribe", channel="private-doc-45", token="garbage")["code"] == "unauthorized"


def test_servers_can_forbid_client_publishing_and_anonymous_clients(start_server):
    server = start_server({"SWITCHBOARD_CLIENT_PUBLISH": "false", "SWITCHBOARD_ALLOW_ANONYMOUS": "false"})
    with server.client(token=server.token("max")) as client:
        assert client.command("publish", channel="news", data=1)["code"] == "forbidden"
        assert client.command("publish", channel="presence-x", data=1)["type"] == "reply"
    with pytest.raises(ConnectionClosed) as closed:
        with server.client() as anonymous:
            assert anonymous.welcome["code"] == "unauthorized" and "token" in anonymous.welcome["message"]
            anonymous.recv()
    assert closed.value.rcvd.code == 1008


def test_expiring_tokens_warn_then_close_unless_refreshed(start_server):
    server = start_server({"SWITCHBOARD_PING_INTERVAL": "1", "SWITCHBOARD_TOKEN_WARNING": "60"})
    keeper = server.client(token=server.token("nia", ttl=3))
    assert keeper.next_push("token_expiring")["expires"] > time.time()
    refreshed = keeper.command("refresh", token=server.token("nia", ttl=3600))
    assert refreshed["result"]["expires"] > time.time() + 3000
    assert keeper.command("refresh", token=server.token("someone-else"))["code"] == "forbidden"

    lapsed = server.client(token=server.token("oli", ttl=3))
    assert lapsed.next_push("token_expiring")
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            frame = lapsed.recv(timeout=15)
            if frame["type"] == "error":
                assert (frame["code"], frame["message"]) == ("unauthorized", "token expired")
    assert closed.value.rcvd.code == 1008
    # The one who refreshed is still here.
    assert keeper.command("ping")["result"] == {"pong": True}
    keeper.close()


def test_flooding_gets_rate_limited_then_closed(start_server):
    server = start_server({"SWITCHBOARD_RATE_MESSAGES": "5"})
    with server.client() as calm:
        flood = RawSocket(server.port)
        for _ in range(8):
            flood.send_frame(b'{"type":"ping"}')
        codes = []
        for opcode, payload in flood.frames():
            if opcode == 0x1 and json.loads(payload)["type"] in ("reply", "error"):
                codes.append(json.loads(payload).get("code"))
            if len(codes) == 8:
                break
        assert codes.count("rate_limited") >= 2 and codes.count(None) >= 5
        # Keep going far past the limit: that is abuse, and the connection is closed.
        for _ in range(40):
            flood.send_frame(b'{"type":"ping"}')
        assert flood.close_code() == 1008
        flood.close()
        assert calm.command("ping")["result"] == {"pong": True}
        counters = server.api("GET", "/api/stats")[1]["counters"]
        assert counters["errors_rate_limited"] >= 2 and counters["closed_for_abuse"] == 1


def test_subscription_limit(start_server):
    server = start_server({"SWITCHBOARD_MAX_SUBSCRIPTIONS": "2"})
    with server.client() as client:
        client.command("subscribe", channel="a")
        client.command("subscribe", channel="b")
        refused = client.command("subscribe", channel="c")
        assert refused["code"] == "too_many_subscriptions" and "2" in refused["message"]
        client.command("unsubscribe", channel="a")
        assert client.command("subscribe", channel="c")["type"] == "reply"


def test_connection_limits_refuse_before_the_upgrade(start_server):
    server = start_server({"SWITCHBOARD_MAX_CONNECTIONS": "2"})
    first, second = server.client(), server.client()
    with pytest.raises(InvalidStatus) as refused:
        server.client()
    assert refused.value.response.status_code == 503
    assert b"server_full" in refused.value.response.body
    first.close()
    server.wait_until(lambda: server.health()[1].get("connections") == 1)
    server.client().close()
    second.close()

    per_address = start_server({"SWITCHBOARD_MAX_CONNECTIONS_PER_ADDRESS": "1"})
    kept = per_address.client()
    with pytest.raises(InvalidStatus) as refused:
        per_address.client()
    assert refused.value.response.status_code == 429
    kept.close()


def test_a_slowloris_handshake_is_cut(server):
    dripping = socket.create_connection(("127.0.0.1", server.port))
    dripping.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\n")
    started = time.monotonic()
    dripping.settimeout(30)
    with server.client() as other:  # nobody else waits for it
        assert other.command("ping")["type"] == "reply"
    for _ in range(30):
        try:
            dripping.sendall(b"X-Drip: 1\r\n")
        except OSError:
            break
        try:
            dripping.settimeout(1)
            if dripping.recv(1024) == b"":
                break
        except TimeoutError:
            continue
        except OSError:
            break
    assert time.monotonic() - started < 25, "the half-sent handshake was never cut"
    dripping.close()
