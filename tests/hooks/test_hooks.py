"""The application's own code on every event, through real clients against a real Gunicorn.

tests/hooks/app.py registers a connect hook reading Flask's session, a subscribe hook, a publish
hook that refuses and rewrites, a disconnect hook and RPC methods; each test drives one of them as
a client would, and checks that a hook that fails costs only its own answer.
"""

from __future__ import annotations

import asyncio
import http.cookiejar
import json
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest
import switchboard_client
import switchboard_client.asyncio
from switchboard_client import InternalError, NotFoundError
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.hostapp.running import HostServer
from tests.integration.servers import ROOT, RedisServer
from tests.pusher.backend import KEY

APP = "tests.hooks.app:create_app()"


class HooksServer(HostServer):
    ready_path = "/rt/healthz"

    def __init__(self, tmp_path: Path, env: dict[str, str] | None = None, **options) -> None:
        self.events_path = tmp_path / "events.jsonl"
        super().__init__(tmp_path, app=APP, env={"HOOKS_EVENTS": str(self.events_path), **(env or {})}, **options)

    def events(self) -> list[dict]:
        """What the disconnect, join and leave hooks heard, on every worker."""
        if not self.events_path.exists():
            return []
        return [json.loads(line) for line in self.events_path.read_text().splitlines()]

    def wait_for(self, event: dict, timeout: float = 10) -> None:
        """Until a hook has heard `event` (they run after the fact)."""
        deadline = time.monotonic() + timeout
        while event not in (seen := self.events()):
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)


@pytest.fixture(scope="module", params=["local", "redis"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[HooksServer]:
    """Every test twice: one worker on the local broker, and two workers on one Redis (where the
    hooks that run once per cluster must run once)."""
    folder = tmp_path_factory.mktemp(f"hooks-{request.param}")
    with ExitStack() as stack:
        if request.param == "local":
            instance = HooksServer(folder).wait_ready()
        else:
            redis = RedisServer(folder)
            stack.callback(redis.stop)
            env = {"SWITCHBOARD_REDIS_URL": redis.url, "SWITCHBOARD_PRESENCE_TTL": "2"}
            instance = HooksServer(folder, env=env, workers=2).wait_ready()
        stack.callback(instance.stop)
        yield instance


def open_socket(server: HooksServer, query: str = "", cookie: str | None = None) -> ClientConnection:
    headers = {"Cookie": cookie} if cookie else None
    return connect(f"{server.switchboard.ws_url}/ws{query}", additional_headers=headers, open_timeout=10)


def next_of(ws: ClientConnection, kind: str, command_id: object = None) -> dict:
    """The next frame of `kind` (and `id`, if given), skipping others."""
    while True:
        frame = json.loads(ws.recv(timeout=15))
        if frame["type"] == kind and (command_id is None or frame.get("id") == command_id):
            return frame


def command(ws: ClientConnection, **fields) -> None:
    ws.send(json.dumps(fields))


def answer(ws: ClientConnection, command_id: int) -> dict:
    """The reply or error to the command with `command_id`."""
    while True:
        frame = json.loads(ws.recv(timeout=15))
        if frame["type"] in ("reply", "error") and frame.get("id") == command_id:
            return frame


def test_the_connect_hook_reads_the_flask_session(server):
    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(server.url + "/login", data=urllib.parse.urlencode({"name": "ann"}).encode(), timeout=10)
    cookie = "; ".join(f"{c.name}={c.value}" for c in jar)
    with open_socket(server, cookie=cookie) as ws:
        welcome = next_of(ws, "welcome")
    assert (welcome["user"], welcome["info"]) == ("ann", {"via": "session"})
    with open_socket(server) as ws:  # no session: the hook keeps the (anonymous) identity
        assert next_of(ws, "welcome")["info"] is None


@pytest.mark.parametrize(
    ("query", "code", "message"),
    [
        ("?deny=1", "forbidden", "this server does not want you today"),
        ("?broken=1", "internal", "the server's connect hook failed"),
        ("?wrong=1", "internal", "the server's connect hook failed"),
    ],
)
def test_a_connect_hook_that_refuses_or_fails_is_told_to_the_client_alone(server, query, code, message):
    with open_socket(server, query) as ws:
        error = next_of(ws, "error")
        assert (error["code"], error["message"]) == (code, message)
    with open_socket(server) as ws:  # the next client is served as usual
        assert next_of(ws, "welcome")["type"] == "welcome"
    log = server.log()
    if query == "?broken=1":
        assert "the application's connect hook failed" in log and "RuntimeError: a bug in the connect hook" in log
    if query == "?wrong=1":
        assert "it must return None or a dict with a non-empty 'user'" in log


def test_the_connect_hook_runs_for_graphql_and_pusher_too(server):
    base = server.switchboard.ws_url
    # GraphQL: at connection_init, with the handshake's query and the init's token; a refusal is 4403.
    with connect(f"{base}/graphql?deny=1", subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {}}))
        with pytest.raises(ConnectionClosed) as closed:
            ws.recv(timeout=10)
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (
        4403,
        "Forbidden: this server does not want you today",
    )
    with connect(f"{base}/graphql", subprotocols=["graphql-transport-ws"], open_timeout=10) as ws:
        ws.send(json.dumps({"type": "connection_init", "payload": {"token": server.switchboard.token("gus")}}))
        assert json.loads(ws.recv(timeout=10))["payload"]["user"] == "gus"
    # Pusher: told with pusher:error 4009, as pusher-js reads a refusal.
    with connect(f"{base}/app/{KEY}?protocol=7&deny=1", open_timeout=10) as ws:
        refused = json.loads(ws.recv(timeout=10))
    assert refused["event"] == "pusher:error"
    assert refused["data"] == {"code": 4009, "message": "this server does not want you today"}


def test_the_subscribe_hook_refuses_and_sets_presence_info(server):
    with open_socket(server, "?token=" + server.switchboard.token("ann")) as ws:
        next_of(ws, "welcome")
        command(ws, type="subscribe", channel="staff-room", id=1)
        refused = answer(ws, 1)
        assert (refused["type"], refused["code"]) == ("error", "forbidden")
        command(ws, type="subscribe", channel="presence-hall", id=2)
        assert answer(ws, 2)["type"] == "reply"
        command(ws, type="presence", channel="presence-hall", id=3)
        members = answer(ws, 3)["result"]["members"]
    assert [member["info"] for member in members] == [{"role": "member"}]


def test_the_publish_hook_rewrites_refuses_and_survives_its_own_bug(server):
    with open_socket(server) as listener, open_socket(server) as writer:
        next_of(listener, "welcome")
        next_of(writer, "welcome")
        command(listener, type="subscribe", channel="chat", id=1)
        answer(listener, 1)
        command(writer, type="publish", channel="chat", data={"text": "   "}, id=1)
        empty = answer(writer, 1)
        assert (empty["code"], empty["message"]) == ("bad_request", "empty messages are not published")
        command(writer, type="publish", channel="chat", data={"text": "crash"}, id=2)
        assert answer(writer, 2)["code"] == "internal"
        command(writer, type="publish", channel="chat", data={"text": "  hello "}, id=3)
        assert answer(writer, 3)["type"] == "reply"
        status, _ = server.switchboard.api("POST", "/api/publish", {"channel": "chat", "data": {"text": " api "}})
        assert status == 200
        first, second = next_of(listener, "message"), next_of(listener, "message")
    # Nothing refused or failed reached the channel; what was published, the hook rewrote.
    assert first["data"] == {"text": "hello", "checked": True}
    assert second["data"] == {"text": "api", "checked": True}
    assert "ValueError: a bug in the publish hook" in server.log()


def test_rpc_methods_answer_and_a_failing_one_costs_only_its_own_reply(server):
    with open_socket(server) as ws:
        user = next_of(ws, "welcome")["user"]
        command(ws, type="rpc", method="add", params={"a": 1, "b": 2}, id=1)
        assert answer(ws, 1)["result"] == {"data": {"sum": 3, "for": user}}
        command(ws, type="rpc", method="nope", id=2)
        assert answer(ws, 2)["code"] == "not_found"
        command(ws, type="rpc", method="boom", id=3)
        assert answer(ws, 3)["code"] == "internal"
        command(ws, type="rpc", method="not_json", id=4)
        assert answer(ws, 4)["code"] == "internal"
        command(ws, type="rpc", id=5)
        assert answer(ws, 5)["code"] == "bad_command"
        command(ws, type="ping", id=6)
        assert answer(ws, 6)["result"] == {"pong": True}


def test_the_python_clients_call_rpc_methods(server):
    with switchboard_client.connect(server.switchboard.ws_url + "/ws") as client:
        assert client.rpc("add", {"a": 2, "b": 3})["sum"] == 5
        with pytest.raises(InternalError):
            client.rpc("boom")
        with pytest.raises(NotFoundError):
            client.rpc("nope")
        assert client.rpc("add", {"a": 1, "b": 1})["sum"] == 2  # and it goes on

    async def session() -> tuple[int, str]:
        async with switchboard_client.asyncio.connect(server.switchboard.ws_url + "/ws") as client:
            total = (await client.rpc("add", {"a": 4, "b": 5}))["sum"]
            try:
                await client.rpc("not_json")
            except InternalError as error:
                return total, error.code
            return total, "no error"

    with ThreadPoolExecutor(1) as pool:  # a browser test earlier may run an event loop in this thread
        assert pool.submit(asyncio.run, session()).result(60) == (9, "internal")


def test_the_browser_client_calls_rpc_methods(server):
    calls = [["add", {"a": 1, "b": 2}], ["boom", None], ["nope", None], ["slow", 0]]
    done = subprocess.run(
        [
            shutil.which("node") or "node",
            "tests/hooks/rpc_client.mjs",
            server.switchboard.ws_url + "/ws",
            json.dumps(calls),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert answers[0]["data"]["sum"] == 3
    assert answers[1:] == [{"error": "internal"}, {"error": "not_found"}, {"data": "done"}]


def test_graphql_calls_rpc_methods_as_a_mutation(server):
    token = server.switchboard.token("gil")

    def mutation(method: str, params: str = "null") -> dict:
        query = f'mutation {{ rpc(method: "{method}", params: {params}) }}'
        return server.switchboard.api("POST", "/graphql", key=token, raw=json.dumps({"query": query}).encode())[1]

    assert mutation("add", "{a: 1, b: 2}")["data"]["rpc"] == {"sum": 3, "for": "gil"}
    assert mutation("boom")["errors"][0]["extensions"]["code"] == "internal"
    assert mutation("not_json")["errors"][0]["extensions"]["code"] == "internal"
    assert mutation("nope")["errors"][0]["extensions"]["code"] == "not_found"
    # A publish through GraphQL goes through the same publish hook.
    query = 'mutation { publish(channel: "chat", data: {text: "  "}) { offset } }'
    refused = server.switchboard.api("POST", "/graphql", key=token, raw=json.dumps({"query": query}).encode())[1]
    assert refused["errors"][0]["extensions"]["code"] == "bad_request"


def test_a_slow_rpc_holds_its_own_connection_only(server):
    with open_socket(server) as slow, open_socket(server) as other, open_socket(server) as listener:
        for ws in (slow, other, listener):
            next_of(ws, "welcome")
        command(listener, type="subscribe", channel="busy", id=1)
        answer(listener, 1)
        command(slow, type="rpc", method="slow", params=2, id=1)
        command(other, type="publish", channel="busy", data="meanwhile", id=1)
        assert answer(other, 1)["type"] == "reply"
        assert next_of(listener, "message")["data"] == "meanwhile"
        # The slow call was still running while the others were served; it answers afterwards.
        assert answer(slow, 1)["result"] == {"data": "done"}


def test_the_disconnect_hook_hears_each_close(server):
    with open_socket(server) as ws:
        user = next_of(ws, "welcome")["user"]
    server.wait_for({"event": "disconnect", "user": user, "code": 1000})


def test_join_and_leave_hooks_hear_a_users_first_and_last_tab_once(server):
    """Two tabs of one user (on two workers, with Redis): one join, then one leave, cluster-wide."""
    user = "zoe"
    token = server.switchboard.token(user)
    with ExitStack() as stack:  # new connections spread over the workers
        tabs = [stack.enter_context(open_socket(server, "?token=" + token)) for _ in range(4)]
        for number, ws in enumerate(tabs, 1):
            next_of(ws, "welcome")
            command(ws, type="subscribe", channel="presence-lobby", id=number)
            answer(ws, number)
        server.wait_for({"event": "join", "channel": "presence-lobby", "user": user})
    server.wait_for({"event": "leave", "channel": "presence-lobby", "user": user})
    mine = [event["event"] for event in server.events() if event.get("user") == user and "channel" in event]
    assert mine == ["join", "leave"]
