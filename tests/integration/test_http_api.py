"""Other services publish over HTTP/JSON and read channels, presence and history."""

from __future__ import annotations

import urllib.request

from tests.integration.servers import API_KEY


def test_http_publish_reaches_websocket_subscribers(server):
    with server.client() as alice, server.client() as bob:
        alice.command("subscribe", channel="orders")
        bob.command("subscribe", channel="orders")
        status, body = server.api("POST", "/api/publish", {"channel": "orders", "data": {"id": 7}})
        assert status == 200 and body["channel"] == "orders" and body["offset"] >= 1
        for client in (alice, bob):
            message = client.next_push("message")
            assert message == {
                "type": "message",
                "channel": "orders",
                "offset": body["offset"],
                "data": {"id": 7},
                "from": None,
            }

        status, listing = server.api("GET", "/api/channels")
        assert status == 200 and {"name": "orders", "subscribers": 2} in listing["channels"]


def test_history_over_http(server):
    offsets = [server.api("POST", "/api/publish", {"channel": "log", "data": n})[1]["offset"] for n in range(5)]
    status, body = server.api("GET", f"/api/channels/log/history?since={offsets[1]}&limit=2")
    assert status == 200
    assert [message["data"] for message in body["messages"]] == [2, 3]
    assert body["offset"] == offsets[-1] and body["epoch"]
    status, empty = server.api("GET", "/api/channels/never-used/history")
    assert status == 200 and empty["messages"] == [] and empty["offset"] == 0
    status, position = server.api("GET", "/api/channels/log/history?limit=0")  # where it stands, no messages
    assert status == 200 and position["messages"] == [] and position["offset"] == offsets[-1]


def test_api_refuses_without_the_key(server):
    status, body = server.api("POST", "/api/publish", {"channel": "x", "data": 1}, key=None)
    assert status == 401 and body["code"] == "unauthorized"
    status, body = server.api("GET", "/api/channels", key="wrong")
    assert status == 401 and body["code"] == "unauthorized"


def test_api_closed_when_no_key_is_configured(start_server):
    server = start_server({"SWITCHBOARD_API_KEY": ""})
    status, body = server.api("GET", "/api/channels", key=API_KEY)
    assert status == 403 and body["code"] == "not_configured" and "SWITCHBOARD_API_KEY" in body["message"]
    with urllib.request.urlopen(server.url + "/healthz") as response:
        assert response.status == 200


def test_api_errors_are_json(start_server):
    server = start_server({"SWITCHBOARD_MAX_MESSAGE_SIZE": "1024"})
    status, body = server.api("POST", "/api/publish", raw=b"{not json")
    assert (status, body["code"]) == (400, "bad_json")
    status, body = server.api("POST", "/api/publish", {"channel": "no spaces allowed", "data": 1})
    assert (status, body["code"]) == (400, "invalid_channel")
    status, body = server.api("POST", "/api/publish", {"data": 1})
    assert (status, body["code"]) == (400, "bad_request")
    status, body = server.api("POST", "/api/publish", {"channel": "big", "data": "x" * 2000})
    assert (status, body["code"]) == (413, "too_large")
    status, body = server.api("GET", "/api/nothing-here")
    assert (status, body["code"]) == (404, "not_found")
    status, body = server.api("GET", "/api/channels/log/history?since=-1")
    assert (status, body["code"]) == (400, "bad_request")


def test_minted_tokens_identify_users(server):
    status, body = server.api("POST", "/api/tokens", {"user": "erin", "info": {"color": "blue"}, "ttl": 60})
    assert status == 200 and body["user"] == "erin"
    with server.client(token=body["token"]) as erin:
        assert erin.welcome["user"] == "erin" and erin.welcome["info"] == {"color": "blue"}
    status, body = server.api("POST", "/api/tokens", {"ttl": 60})
    assert (status, body["code"]) == (400, "bad_request")


def test_a_retried_publish_with_an_idempotency_key_is_delivered_once(server):
    with server.client() as reader, server.client() as writer:
        reader.command("subscribe", channel="payments")
        first = {"channel": "payments", "data": {"payment": 1}, "idempotency_key": "payment-1"}
        answers = [server.api("POST", "/api/publish", first) for _ in range(5)]
        assert {status for status, _ in answers} == {200}
        offset = answers[0][1]["offset"]
        assert {body["offset"] for _, body in answers} == {offset}
        # The same key over the WebSocket is the same publish; another key is another.
        again = writer.command("publish", channel="payments", data={"payment": 1}, idempotency_key="payment-1")
        assert again["result"]["offset"] == offset
        other = writer.command("publish", channel="payments", data={"payment": 2}, idempotency_key="payment-2")
        assert other["result"]["offset"] == offset + 1
        # A key belongs to its channel: elsewhere it is new.
        status, elsewhere = server.api("POST", "/api/publish", {**first, "channel": "refunds"})
        assert status == 200 and elsewhere["offset"] == 1
        server.api("POST", "/api/publish", {"channel": "payments", "data": "last"})
        assert [m["data"] for m in reader.messages(3)] == [{"payment": 1}, {"payment": 2}, "last"]


def test_an_idempotency_key_must_be_a_short_string(server):
    for key in (7, "", "k" * 129):
        status, body = server.api("POST", "/api/publish", {"channel": "c", "data": 1, "idempotency_key": key})
        assert status == 400 and body["code"] == "bad_command" and "idempotency_key" in body["message"]
    with server.client() as client:
        reply = client.command("publish", channel="c", data=1, idempotency_key=["no"])
        assert reply["type"] == "error" and reply["code"] == "bad_command"
