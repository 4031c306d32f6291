"""The `graphql-ws` npm client in Node, against real servers and both brokers.

A subscription that must not miss the first messages starts from a position: the channel's
epoch and last offset (from `history`, here the HTTP API's), then `since`/`epoch`. The protocol
has no "subscribed" reply, and this is also how a client resumes.
"""

from __future__ import annotations

import json

from tests.graphql.clients import MESSAGES, PRESENCE, PUBLISH, NodeGraphQL
from tests.integration.servers import Endpoint, Server


def position(endpoint: Endpoint, channel: str) -> dict:
    """Where a channel stands, as `since`/`epoch` variables: GraphQL over HTTP, with the API key."""
    query = "query ($c: String!) { history(channel: $c, limit: 0) { epoch offset } }"
    body = json.dumps({"query": query, "variables": {"c": channel}}).encode()
    status, answer = endpoint.api("POST", "/graphql", raw=body)
    assert status == 200, answer
    return {"since": answer["data"]["history"]["offset"], "epoch": answer["data"]["history"]["epoch"]}


def test_graphql_and_native_clients_hear_each_other(server, node):
    ack = node.connect("ann", server, token=server.token("ann"))
    assert ack["event"] == "connected" and ack["payload"]["user"] == "ann"
    with server.client(token=server.token("ben")) as ben:
        ben.command("subscribe", channel="chat")
        node.subscribe("ann", "feed", MESSAGES, channel="chat", **position(server, "chat"))
        ben.command("publish", channel="chat", data={"text": "from native"})
        heard = node.next("feed")["messages"]
        assert (heard["from"], heard["data"], heard["channel"]) == ("ben", {"text": "from native"}, "chat")
        node.subscribe("ann", "say", PUBLISH, channel="chat", data={"text": "from GraphQL"})
        published = node.next("say")["publish"]
        assert node.outcome("say") == {"sub": "say", "complete": True}
        assert published["offset"] == heard["offset"] + 1
        pushes = ben.messages(2)
        assert [(m["from"], m["data"]["text"]) for m in pushes] == [("ben", "from native"), ("ann", "from GraphQL")]
        echoed = node.next("feed")["messages"]
        assert (echoed["offset"], echoed["from"], echoed["epoch"]) == (published["offset"], "ann", heard["epoch"])
    node.dispose("ann")


def test_presence_events_across_protocols(server, node):
    node.connect("cat", server, token=server.token("cat"))
    node.subscribe("cat", "who", PRESENCE, channel="presence-lobby")
    first = node.next("who")["presence"]
    assert first == {"kind": "MEMBERS", "members": [{"user": "cat"}], "member": None}
    dan = server.client(token=server.token("dan"))
    dan.command("subscribe", channel="presence-lobby")
    assert node.next("who")["presence"] == {"kind": "JOIN", "members": None, "member": {"user": "dan"}}
    members = dan.command("presence", channel="presence-lobby")["result"]["members"]
    assert sorted(member["user"] for member in members) == ["cat", "dan"]
    dan.close()
    assert node.next("who")["presence"]["kind"] == "LEAVE"
    with server.client(token=server.token("eve")) as eve:
        eve.command("subscribe", channel="presence-lobby")
        node.dispose("cat")
        assert eve.next_push("leave")["member"]["user"] == "cat"


def test_a_private_channel_needs_a_grant_and_a_too_deep_query_is_refused(server, node):
    node.connect("fay", server, token=server.token("fay", channels=["presence-*"]))
    node.subscribe("fay", "secret", MESSAGES, channel="private-board")
    refused = node.outcome("secret")
    assert refused["error"][0]["extensions"]["code"] == "forbidden", refused
    deep = "{ __schema { queryType { " + "ofType { " * 15 + "name" + " }" * 15 + " } } }"
    node.subscribe("fay", "deep", deep)
    refused = node.outcome("deep")
    assert refused["error"][0]["extensions"]["code"] == "too_deep", refused
    node.connect("gus", server, token=server.token("gus", channels=["private-board"]))
    node.subscribe("gus", "granted", MESSAGES, channel="private-board", **position(server, "private-board"))
    server.api("POST", "/api/publish", {"channel": "private-board", "data": "for gus"})
    assert node.next("granted")["messages"]["data"] == "for gus"
    node.dispose("fay")
    node.dispose("gus")


def test_resume_after_a_server_restart_loses_nothing_and_repeats_nothing(cluster, redis_server, node, tmp_path):
    """With Redis, history outlives the server: the client's retry resumes from its last event."""
    a, b = cluster
    node.connect("hal", a)
    node.subscribe("hal", "feed", MESSAGES, resume=True, channel="news", **position(a, "news"))
    for n in range(3):
        b.api("POST", "/api/publish", {"channel": "news", "data": n})
    seen = [node.next("feed")["messages"] for _ in range(3)]
    a.stop()
    assert node.expect(lambda e: e.get("event") == "closed")["code"] == 1012  # the drain: graphql-ws retries
    for n in range(3, 6):  # while the client's server is down
        b.api("POST", "/api/publish", {"channel": "news", "data": n})
    env = {"SWITCHBOARD_REDIS_URL": redis_server.url, "SWITCHBOARD_WORKERS": "2"}
    again = Server(tmp_path, env, port=a.port).wait_ready()
    try:
        node.expect(lambda e: e.get("event") == "connected")
        b.api("POST", "/api/publish", {"channel": "news", "data": 6})
        seen += [node.next("feed")["messages"] for _ in range(4)]
        assert [m["data"] for m in seen] == list(range(7))
        assert [m["offset"] for m in seen] == list(range(seen[0]["offset"], seen[0]["offset"] + 7))
        assert len({m["epoch"] for m in seen}) == 1
        b.api("POST", "/api/publish", {"channel": "news", "data": "last"})
        assert node.next("feed")["messages"]["data"] == "last"  # and nothing in between
        node.dispose("hal")
    finally:
        again.stop()


def test_a_restart_that_lost_history_is_a_clear_error_not_a_gap(start_server, node, tmp_path):
    """One worker keeps history in memory: after a restart the epoch is new, and the resumed
    subscription is refused with `unrecoverable` rather than silently missing messages."""
    first = start_server()
    node.connect("ida", first)
    node.subscribe("ida", "feed", MESSAGES, resume=True, channel="news", **position(first, "news"))
    first.api("POST", "/api/publish", {"channel": "news", "data": "before"})
    before = node.next("feed")["messages"]
    first.stop()
    again = Server(tmp_path, port=first.port).wait_ready()
    try:
        again.api("POST", "/api/publish", {"channel": "news", "data": "missed"})
        refused = node.outcome("feed")
        assert refused["error"][0]["extensions"]["code"] == "unrecoverable", refused
        assert before["epoch"] in refused["error"][0]["message"]
        node.dispose("ida")
    finally:
        again.stop()


def test_two_instances_through_redis_are_one_server(cluster, node):
    a, b = cluster
    node.connect("jon", a, token=a.token("jon"))
    node.subscribe("jon", "who", PRESENCE, channel="presence-hall")
    assert node.next("who")["presence"]["members"] == [{"user": "jon"}]
    node.subscribe("jon", "feed", MESSAGES, channel="presence-hall", **position(a, "presence-hall"))
    with b.client(token=b.token("kim")) as kim:
        kim.command("subscribe", channel="presence-hall")
        assert node.next("who")["presence"] == {"kind": "JOIN", "members": None, "member": {"user": "kim"}}
        kim.command("publish", channel="presence-hall", data="from B, native")
        assert node.next("feed")["messages"]["data"] == "from B, native"
        other = NodeGraphQL()
        try:
            other.connect("lee", b, token=b.token("lee"))
            other.subscribe("lee", "say", PUBLISH, channel="presence-hall", data="from B, GraphQL")
            assert other.next("say")["publish"]["offset"] > 0
        finally:
            other.close()
        assert node.next("feed")["messages"]["data"] == "from B, GraphQL"
        assert [m["data"] for m in kim.messages(2)] == ["from B, native", "from B, GraphQL"]
    node.dispose("jon")
