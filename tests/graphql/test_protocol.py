"""The protocol's refusals, as a client sees them: every close code, and the errors that are not.

Raw `websockets` connections send what no polite client would; the `graphql-ws` client in Node
shows what a real one makes of a refused token.
"""

from __future__ import annotations

import threading

import pytest

from tests.graphql.clients import MESSAGES, SUBPROTOCOL, RawGraphQL
from tests.integration.servers import RawSocket, Server, flood


@pytest.fixture(scope="module")
def gql(tmp_path_factory) -> Server:
    """One worker; connection_init must come within a second; a small send queue."""
    env = {"SWITCHBOARD_GRAPHQL_INIT_TIMEOUT": "1", "SWITCHBOARD_SEND_QUEUE_MESSAGES": "50"}
    instance = Server(tmp_path_factory.mktemp("graphql"), env).wait_ready()
    yield instance
    instance.stop()


@pytest.mark.parametrize(
    "message",
    [
        "not json",
        "[1, 2]",
        '{"type": "subscribe", "id": "1"}',
        '{"type": "subscribe", "id": 7, "payload": {"query": "{ channels { name } }"}}',
        '{"type": "start", "id": "1", "payload": {"query": "{ channels { name } }"}}',
        '{"type": "connection_init", "payload": "a string"}',
    ],
)
def test_a_malformed_message_closes_with_4400(gql, message):
    with RawGraphQL(gql) as client:
        client.init()
        client.send(message)
        code, reason = client.close_code()
        assert code == 4400 and reason.startswith("Invalid message received")


def test_subscribing_before_the_ack_closes_with_4401(gql):
    with RawGraphQL(gql) as client:
        client.subscribe("1", MESSAGES, channel="room")
        assert client.close_code() == (4401, "Unauthorized")


def test_a_bad_or_missing_token_closes_with_4403(gql, start_server):
    with RawGraphQL(gql) as client:
        client.send({"type": "connection_init", "payload": {"token": "forged"}})
        code, reason = client.close_code()
        assert code == 4403 and "invalid token" in reason
    strict = start_server({"SWITCHBOARD_ALLOW_ANONYMOUS": "false"})
    with RawGraphQL(strict) as client:
        client.send({"type": "connection_init"})
        code, reason = client.close_code()
        assert code == 4403 and "anonymous" in reason
    with RawGraphQL(strict) as client:
        client.init(strict.token("ann"))
    # The handshake's Authorization header counts too (for clients that can set headers).
    header = {"Authorization": f"Bearer {strict.token('ben')}"}
    with RawGraphQL(strict, additional_headers=header) as client:
        assert client.init()["payload"]["user"] == "ben"


def test_a_token_that_expires_closes_the_connection_with_4403(gql):
    with RawGraphQL(gql) as client:
        client.init(gql.token("short", ttl=2))
        assert client.close_code(timeout=30) == (4403, "Forbidden: token expired")


def test_a_refused_token_is_4403_for_the_graphql_ws_client_too(gql, node):
    closed = node.connect("a", gql, token="forged")
    assert (closed["event"], closed["code"]) == ("closed", 4403)
    node.dispose("a")


def test_no_subprotocol_closes_with_4406(gql):
    with RawGraphQL(gql, subprotocols=[]) as client:
        assert client.ws.subprotocol is None
        assert client.close_code()[0] == 4406
    with RawGraphQL(gql, subprotocols=["graphql-ws", SUBPROTOCOL]) as client:  # what gql offers
        assert client.ws.subprotocol == SUBPROTOCOL


def test_no_connection_init_in_time_closes_with_4408(gql):
    with RawGraphQL(gql) as client:
        assert client.close_code(timeout=30) == (4408, "Connection initialisation timeout")
    with RawGraphQL(gql) as client:
        client.init()
        client.send({"type": "ping"})
        assert client.recv(timeout=30) == {"type": "pong"}  # past the timeout, the socket stays


def test_a_running_id_again_closes_with_4409(gql):
    with RawGraphQL(gql) as client:
        client.init()
        client.subscribe("dup", MESSAGES, channel="room")
        client.subscribe("dup", MESSAGES, channel="room")
        assert client.close_code() == (4409, "Subscriber for dup already exists")
    with RawGraphQL(gql) as client:  # once completed, an id may be used again
        client.init()
        client.subscribe("again", MESSAGES, channel="room")
        client.send({"type": "complete", "id": "again"})
        client.subscribe("again", MESSAGES, channel="room")
        client.send({"type": "ping"})
        assert client.recv() == {"type": "pong"}


def test_a_second_connection_init_closes_with_4429(gql):
    with RawGraphQL(gql) as client:
        client.init()
        client.send({"type": "connection_init"})
        assert client.close_code() == (4429, "Too many initialisation requests")


def test_per_operation_refusals_are_error_messages_and_the_connection_stays(gql):
    deep = "{ __schema { queryType { " + "ofType { " * 15 + "name" + " }" * 15 + " } } }"
    cases = {
        "syntax": ("{ channels {", "GRAPHQL_PARSE_FAILED"),
        "unknown field": ("{ nothing }", None),
        "too deep": (deep, "too_deep"),
        "private": ('subscription { messages(channel: "private-x") { offset } }', "forbidden"),
        "bad channel": ('subscription { messages(channel: "no spaces") { offset } }', "invalid_channel"),
        "variables": ('query ($n: Int!) { history(channel: "a", limit: $n) { offset } }', None),
    }
    with RawGraphQL(gql) as client:
        client.init()
        for op_id, (query, code) in cases.items():
            client.subscribe(op_id, query)
            refusal = client.recv()
            assert (refusal["id"], refusal["type"]) == (op_id, "error"), refusal
            assert (refusal["payload"][0].get("extensions") or {}).get("code") == code, refusal
            assert refusal["payload"][0]["message"]
        client.send({"type": "ping", "payload": {"still": "here"}})
        assert client.recv() == {"type": "pong", "payload": {"still": "here"}}


def test_a_slow_graphql_subscriber_is_cut_and_others_carry_on(start_server):
    """The same rule as on /ws: a send queue past its limit closes that one socket with 1008."""
    server = start_server({"SWITCHBOARD_SEND_QUEUE_BYTES": "262144", "SWITCHBOARD_RATE_MESSAGES": "0"})
    stuck = RawSocket(server.port, "/graphql", {"Sec-WebSocket-Protocol": SUBPROTOCOL}, rcvbuf=4096)
    stuck.send_frame(b'{"type":"connection_init"}')
    query = b'subscription { messages(channel: \\"firehose\\") { data } }'
    stuck.send_frame(b'{"type":"subscribe","id":"1","payload":{"query":"' + query + b'"}}')
    stuck.send_frame(b'{"type":"ping"}')
    frames = stuck.frames()
    assert b"connection_ack" in next(frames)[1] and b"pong" in next(frames)[1]
    healthy = RawGraphQL(server)
    healthy.init()
    healthy.subscribe("1", MESSAGES, channel="firehose")
    healthy.send({"type": "ping"})
    assert healthy.recv()["type"] == "pong"
    received: list[int] = []

    def read_until_the_end_marker() -> None:
        while True:
            n = healthy.recv(timeout=30)["payload"]["data"]["messages"]["data"]["n"]
            if n < 0:
                return
            received.append(n)

    reader = threading.Thread(target=read_until_the_end_marker, daemon=True)
    reader.start()
    with server.client() as publisher:
        sent = flood(
            publisher, "firehose", lambda: server.api("GET", "/api/stats")[1]["counters"].get("slow_consumers_closed")
        )
        publisher.command("publish", channel="firehose", data={"n": -1})
    reader.join(30)
    assert received == list(range(sent))
    # The stuck client's backlog ends with close 1008, or a cut if it never drained.
    assert stuck.close_code(timeout=30) in (1008, None)
    assert server.api("GET", "/api/stats")[1]["counters"]["slow_consumers_closed"] == 1
    healthy.close()
    stuck.close()
