"""The demo's HTTP routes: off unless SWITCHBOARD_DEMO=1, and what they answer when on."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from tests.integration.servers import Server


def get(server: Server, path: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(server.url + path, timeout=10) as response:
            return response.status, response.headers.get_content_type(), response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get_content_type(), error.read()


def test_the_demo_is_off_by_default_but_the_client_is_served(tmp_path):
    server = Server(tmp_path).wait_ready()
    try:
        for path in ("/", "/demo/token?name=alice", "/demo/history/activity"):
            status, _, body = get(server, path)
            assert status == 404 and b"SWITCHBOARD_DEMO=1" in body, path
        status, kind, body = get(server, "/static/switchboard.js")
        assert status == 200 and kind == "text/javascript" and b"export function connect" in body
    finally:
        server.stop()


def test_a_demo_token_names_the_user(demo_server):
    status, _, body = get(demo_server, "/")
    assert status == 200 and b'src="/static/demo.js"' in body
    status, _, body = get(demo_server, "/demo/token?name=ann")
    assert status == 200
    with demo_server.client(token=json.loads(body)["token"]) as client:
        assert client.welcome["user"] == "ann"
    assert get(demo_server, "/demo/token?name=")[0] == 400
    assert get(demo_server, "/demo/token?name=" + "x" * 33)[0] == 400


def test_demo_history_is_the_newest_messages_oldest_first(demo_server):
    for n in range(1, 6):
        demo_server.api("POST", "/api/publish", {"channel": "activity", "data": n})
    status, body = demo_server.api("GET", "/demo/history/activity?limit=2", key=None)
    assert status == 200
    assert [message["data"] for message in body["messages"]] == [4, 5]
    assert body["offset"] == 5 and body["epoch"] == demo_server.api("GET", "/api/channels/activity/history")[1]["epoch"]
    assert demo_server.api("GET", "/demo/history/activity?limit=0", key=None)[1]["messages"] == []
    assert demo_server.api("GET", "/demo/history/activity?limit=x", key=None)[0] == 400
