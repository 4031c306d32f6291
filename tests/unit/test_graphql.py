"""GraphQL on a real hub, over socket pairs: sessions, shared feeds, documents and their limits."""

from __future__ import annotations

import json
import socket

import gevent
import pytest
from graphql import get_introspection_query

from switchboard_server.core.auth import ANONYMOUS
from switchboard_server.core.config import Config
from switchboard_server.protocols.graphql import GraphQLServer, feed
from switchboard_server.protocols.graphql.session import GraphQLSession
from switchboard_server.state import SwitchboardState
from switchboard_server.transport.frames import OP_TEXT

MESSAGES = "subscription($c: String!, $s: Offset, $e: String) { messages(channel: $c, since: $s, epoch: $e) { offset epoch from data } }"


def read(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Every frame the server wrote so far: (opcode, payload)."""
    gevent.sleep(0)  # let the flusher write
    data = b""
    while True:
        try:
            data += sock.recv(1 << 20)
        except BlockingIOError:
            break
    out = []
    while data:
        length, start = data[1] & 0x7F, 2
        if length == 126:
            length, start = int.from_bytes(data[2:4], "big"), 4
        out.append((data[0] & 0x0F, data[start : start + length]))
        data = data[start + length :]
    return out


def messages(sock: socket.socket) -> list[dict]:
    return [json.loads(payload) for opcode, payload in read(sock) if opcode == OP_TEXT]


class Side:
    """A hub and its GraphQL server, with connections whose sessions are driven by hand."""

    def __init__(self, **config) -> None:
        self.hub = SwitchboardState(Config(**{"rate_messages": 0, **config})).hub
        self.server = GraphQLServer(self.hub)

    def connect(self, init: bool = True):
        server_side, client = socket.socketpair()
        client.setblocking(False)
        conn = self.hub.open(server_side, ANONYMOUS)
        conn.session = GraphQLSession(self.server)
        if init:
            self.send(conn, {"type": "connection_init"})
            assert messages(client)[0]["type"] == "connection_ack"
        return conn, client

    def send(self, conn, message: dict) -> None:
        conn.session.on_message(conn, OP_TEXT, json.dumps(message).encode())

    def subscribe(self, conn, op_id: str, query: str, **variables) -> None:
        self.send(conn, {"type": "subscribe", "id": op_id, "payload": {"query": query, "variables": variables}})


def test_a_thousand_subscribers_of_one_document_share_one_feed_executed_once_per_message(monkeypatch):
    side = Side()
    runs = []
    real_run = feed.run
    monkeypatch.setattr(feed, "run", lambda executor, root: runs.append(root) or real_run(executor, root))
    clients = [side.connect() for _ in range(100)]
    epoch = side.hub.broker.history("room", None).epoch
    for n, (conn, _client) in enumerate(clients):
        # Every subscriber resumes from somewhere else: the position is not part of the feed.
        side.subscribe(conn, str(n % 3), MESSAGES, c="room", **({"s": 0, "e": epoch} if n else {}))
    assert side.server.feed_count() == 1
    for n in range(5):
        side.hub.publish("room", {"n": n})
    assert len(runs) == 5
    for n, (_conn, client) in enumerate(clients):
        got = messages(client)
        assert [m["id"] for m in got] == [str(n % 3)] * 5
        assert [m["payload"]["data"]["messages"]["data"] for m in got] == [{"n": k} for k in range(5)]
        assert got[0]["payload"]["data"]["messages"]["epoch"] == epoch
    for conn, _client in clients:
        side.send(conn, {"type": "complete", "id": conn.subscriptions and next(iter(conn.subscriptions))})
    assert side.server.feed_count() == 0


def test_same_id_subscribers_get_the_same_bytes():
    side = Side()
    clients = [side.connect() for _ in range(3)]
    for conn, _client in clients:
        side.subscribe(conn, "1", MESSAGES, c="room")
    side.hub.publish("room", "hi")
    raw = [read(client) for _conn, client in clients]
    assert raw[0] == raw[1] == raw[2] and len(raw[0]) == 1


def test_resume_replays_exactly_what_was_missed_or_says_it_cannot():
    side = Side(history_size=3)
    for n in range(5):
        side.hub.publish("feed", n)
    conn, client = side.connect()
    epoch = side.hub.broker.history("feed", None).epoch
    side.subscribe(conn, "a", MESSAGES, c="feed", s=3, e=epoch)
    side.hub.publish("feed", 5)
    got = [m["payload"]["data"]["messages"] for m in messages(client)]
    assert [(m["offset"], m["data"]) for m in got] == [(4, 3), (5, 4), (6, 5)]
    side.subscribe(conn, "b", MESSAGES, c="feed", s=1, e=epoch)  # offsets 2 and 3 are gone
    side.subscribe(conn, "c", MESSAGES, c="feed", s=6, e="another-epoch")
    side.subscribe(conn, "d", MESSAGES, c="feed", s=6)  # a position without its epoch
    refusals = messages(client)
    assert [(m["id"], m["type"]) for m in refusals] == [("b", "error"), ("c", "error"), ("d", "error")]
    codes = [m["payload"][0]["extensions"]["code"] for m in refusals]
    assert codes == ["unrecoverable", "unrecoverable", "bad_request"]
    assert set(conn.subscriptions) == {"a"}


def test_presence_starts_with_the_members_then_joins_and_leaves():
    side = Side()
    watcher, client = side.connect()
    side.subscribe(
        watcher, "p", 'subscription { presence(channel: "lobby") { kind members { user } member { user } } }'
    )
    first = messages(client)[0]["payload"]["data"]["presence"]
    assert first["kind"] == "MEMBERS" and first["members"] == [{"user": watcher.user}]
    other, _ = side.connect()
    side.subscribe(other, "1", MESSAGES, c="lobby")
    other.abort()
    other_user = other.user
    side.hub.on_close(other)
    events = [m["payload"]["data"]["presence"] for m in messages(client)]
    assert [(e["kind"], e["member"]["user"]) for e in events] == [("JOIN", other_user), ("LEAVE", other_user)]


def test_queries_and_mutations_answer_next_then_complete():
    side = Side()
    conn, client = side.connect()
    mutation = 'mutation { publish(channel: "log", data: {a: [1, 2]}, event: "note") { channel offset } }'
    side.subscribe(conn, "m", mutation)
    side.subscribe(conn, "q", '{ history(channel: "log") { epoch offset messages { offset event from data } } }')
    got = messages(client)
    assert [(m["id"], m["type"]) for m in got] == [("m", "next"), ("m", "complete"), ("q", "next"), ("q", "complete")]
    assert got[0]["payload"] == {"data": {"publish": {"channel": "log", "offset": 1}}}
    history = got[2]["payload"]["data"]["history"]
    assert history["messages"] == [{"offset": 1, "event": "note", "from": conn.user, "data": {"a": [1, 2]}}]


def test_a_protected_channel_needs_a_grant():
    side = Side()
    conn, client = side.connect()
    side.subscribe(conn, "1", MESSAGES, c="private-board")
    side.subscribe(conn, "2", 'mutation { publish(channel: "private-board", data: 1) { offset } }')
    side.subscribe(conn, "3", '{ presence(channel: "presence-room") { user } }')
    got = messages(client)
    assert got[0]["type"] == "error" and got[0]["payload"][0]["extensions"]["code"] == "forbidden"
    assert got[1]["payload"]["errors"][0]["extensions"]["code"] == "forbidden"
    assert got[3]["payload"]["errors"][0]["extensions"]["code"] == "forbidden"
    assert not conn.subscriptions


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (b"not json", 4400),
        (b'{"type":"subscribe","id":"1"}', 4400),
        (b'{"type":"what"}', 4400),
        (b'{"type":"subscribe","id":"1","payload":{"query":"{ channels { name } }"}}', 4401),
    ],
)
def test_protocol_errors_close_with_the_protocol_s_codes(message, code):
    side = Side()
    conn, client = side.connect(init=code != 4401)
    conn.session.on_message(conn, OP_TEXT, message)
    assert conn.close_code == code


def test_a_duplicate_id_is_named_in_the_close_reason():
    side = Side()
    conn, _ = side.connect()
    long_id = "é" * 100
    side.subscribe(conn, long_id, MESSAGES, c="room")
    side.subscribe(conn, long_id, MESSAGES, c="room")
    assert conn.close_code == 4409
    assert conn.close_reason.startswith("Subscriber for éé")


def test_a_second_init_and_a_duplicate_id_close():
    side = Side()
    conn, _ = side.connect()
    side.send(conn, {"type": "connection_init"})
    assert conn.close_code == 4429
    conn, _ = side.connect()
    side.subscribe(conn, "1", MESSAGES, c="room")
    side.subscribe(conn, "1", MESSAGES, c="room")
    assert conn.close_code == 4409


def test_documents_are_limited_in_depth_and_fields_but_introspection_runs():
    side = Side()
    documents = side.server.documents
    deep = "{ __schema { queryType { " + "ofType { " * 15 + "name" + " }" * 15 + " } } }"
    assert documents.get(deep).errors[0].extensions["code"] == "too_deep"
    wide = "{ " + " ".join(f"a{n}: channels {{ name }}" for n in range(200)) + " }"
    assert documents.get(wide).errors[0].extensions["code"] == "too_many_fields"
    # 2^13 fields once expanded, yet each fragment is measured once.
    bomb = "query { ...F0 } " + " ".join(f"fragment F{n} on Query {{ ...F{n + 1} ...F{n + 1} }}" for n in range(12))
    bomb += " fragment F12 on Query { channels { name } }"
    assert [error.extensions["code"] for error in documents.get(bomb).errors] == ["too_many_fields"]
    assert documents.get(get_introspection_query()).errors == []


def test_over_the_rate_a_subscribe_is_an_error_a_ping_unanswered_and_complete_honoured():
    side = Side(rate_messages=3)
    conn, client = side.connect()
    side.subscribe(conn, "live", MESSAGES, c="room")  # connection_init was the first
    side.send(conn, {"type": "ping"})
    side.send(conn, {"type": "ping"})  # the fourth message in a second: over the rate
    side.subscribe(conn, "late", MESSAGES, c="room")
    side.send(conn, {"type": "complete", "id": "live"})
    got = messages(client)
    assert [m["type"] for m in got] == ["pong", "error"]
    assert got[1]["id"] == "late" and got[1]["payload"][0]["extensions"]["code"] == "rate_limited"
    assert not conn.subscriptions and not conn.closing


def test_the_subscription_limit_counts_graphql_subscriptions_and_offsets_pass_32_bits():
    side = Side(max_subscriptions=2)
    conn, client = side.connect()
    for op_id in ("1", "2", "3"):
        side.subscribe(conn, op_id, MESSAGES, c=f"room{op_id}")
    refusal = messages(client)[0]
    assert (refusal["id"], refusal["payload"][0]["extensions"]["code"]) == ("3", "too_many_subscriptions")
    side.subscribe(conn, "big", '{ history(channel: "room1", since: 3000000000) { offset } }')
    side.subscribe(conn, "neg", '{ history(channel: "room1", since: -1) { offset } }')
    big, _complete, negative = messages(client)
    assert big["payload"] == {"data": {"history": {"offset": 0}}}
    assert negative["type"] == "error" and "Offset" in negative["payload"][0]["message"]
