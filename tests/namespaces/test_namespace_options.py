"""Namespaces from a file (SWITCHBOARD_NAMESPACES) take effect on the standalone server, with each
broker, and a wrong file stops the server at start with a message naming what is wrong."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.servers import RedisServer, Server

NAMESPACES_TOML = """
# The longest prefix a channel starts with decides its options.
[namespaces."chat:"]
history_size = 3

[namespaces."chat:archive:"]
history_size = 50
history_ttl = 86400

[namespaces."ticker:"]
client_publish = false

[namespaces."lobby:"]
presence = false

[namespaces."room:"]
join_leave = true
recovery = false
"""


@pytest.fixture(scope="module", params=["local", "redis"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp_path = tmp_path_factory.mktemp("namespaces")
    config = tmp_path / "namespaces.toml"
    config.write_text(NAMESPACES_TOML)
    redis = RedisServer(tmp_path) if request.param == "redis" else None
    env = {"SWITCHBOARD_NAMESPACES": str(config)}
    if redis is not None:
        env.update({"SWITCHBOARD_REDIS_URL": redis.url, "SWITCHBOARD_WORKERS": "2"})
    instance = Server(tmp_path, env).wait_ready()
    yield instance
    instance.stop()
    if redis is not None:
        redis.stop()


def publish(server: Server, channel: str, count: int) -> None:
    for n in range(count):
        status, body = server.api("POST", "/api/publish", {"channel": channel, "data": {"n": n}})
        assert status == 200, body


def held(server: Server, channel: str) -> list[int]:
    status, body = server.api("GET", f"/api/channels/{channel}/history")
    assert status == 200, body
    return [message["data"]["n"] for message in body["messages"]]


def test_each_namespace_keeps_its_own_history_size(server):
    publish(server, "chat:lobby", 5)
    publish(server, "chat:archive:2026", 5)
    publish(server, "elsewhere", 5)
    assert held(server, "chat:lobby") == [2, 3, 4]
    assert held(server, "chat:archive:2026") == [0, 1, 2, 3, 4]  # the longer prefix wins
    assert held(server, "elsewhere") == [0, 1, 2, 3, 4]  # the global setting (100)


def test_client_publishing_is_refused_where_the_namespace_turns_it_off(server):
    client = server.client()
    refused = client.command("publish", channel="ticker:eur", data={"price": 1})
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    assert client.command("publish", channel="chat:lobby", data={"text": "hi"})["type"] == "reply"
    # The application's HTTP API still publishes there.
    assert server.api("POST", "/api/publish", {"channel": "ticker:eur", "data": {"price": 1}})[0] == 200
    client.close()


def test_presence_off_keeps_no_members(server):
    client = server.client()
    client.command("subscribe", channel="lobby:hall")
    client.command("subscribe", channel="chat:hall")
    refused = client.command("presence", channel="lobby:hall")
    assert (refused["type"], refused["code"]) == ("error", "forbidden")
    members = client.command("presence", channel="chat:hall")["result"]["members"]
    assert [member["user"] for member in members] == [client.welcome["user"]]
    client.close()


def test_join_and_leave_are_pushed_where_the_namespace_asks_and_recovery_is_off(server):
    first, second = server.client(), server.client()
    first.command("subscribe", channel="room:1")
    second.command("subscribe", channel="room:1")
    assert first.next_push("join")["member"]["user"] == second.welcome["user"]
    publish(server, "room:1", 2)
    first.messages(2)
    # Without recovery, a position is not replayed, and the reply says so.
    third = server.client()
    reply = third.command("subscribe", channel="room:1", since=0)
    assert reply["result"]["recovered"] is False
    assert third.command("ping")["type"] == "reply"
    assert [push for push in third.pushes if push["type"] == "message"] == []
    for client in (first, second, third):
        client.close()


def start_failing(tmp_path: Path, name: str, text: str | None) -> str:
    """Start a server with this namespaces file (None: no such file); it must exit; its log."""
    config = tmp_path / name
    if text is not None:
        config.write_text(text)
    instance = Server(tmp_path, {"SWITCHBOARD_NAMESPACES": str(config)})
    try:
        assert instance.process.wait(30) != 0
        return instance.log()
    finally:
        instance.stop()


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        (
            "typo.toml",
            '[namespaces."chat:"]\nhistroy_size = 3\n',
            "namespace 'chat:': unknown option 'histroy_size'; the options are history_size, history_ttl,",
        ),
        (
            "bad.json",
            json.dumps({"namespaces": {"ticker:": {"conflation_window": -1}}}),
            "namespace 'ticker:': conflation_window must be a number of seconds above 0, not -1",
        ),
        (
            "text.toml",
            '[namespaces."chat:"]\nhistory_size = "lots"\n',
            "namespace 'chat:': history_size must be a whole number, 0 or more, not 'lots'",
        ),
        ("broken.toml", '[namespaces."chat:"\n', "is not valid TOML"),
        ("absent.toml", None, "cannot be read: No such file or directory"),
    ],
)
def test_a_wrong_namespaces_file_stops_the_server_at_start_naming_the_option(tmp_path, name, text, message):
    assert message in start_failing(tmp_path, name, text)
