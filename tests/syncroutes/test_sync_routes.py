"""Sync routes under a real Gunicorn, driven by real `websockets` clients: flask-sock's echo and
chat moved over by their import alone, then `sb.route` functions of the host app in tests/syncroutes."""

from __future__ import annotations

import json
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from tests.integration.servers import GUNICORN, RedisServer, Server, free_port

HERE = Path(__file__).parent


class App(Server):
    """`gunicorn -k switchboard_server.Worker APP`, ready once `ready_path` answers."""

    def __init__(
        self, tmp_path: Path, app: str, ready_path: str, env: dict[str, str] | None = None, workers: int = 1
    ) -> None:
        port = free_port()
        self.ready_path = ready_path
        command = [GUNICORN, "-k", "switchboard_server.Worker", "-w", str(workers), "-b", f"127.0.0.1:{port}", app]
        super().__init__(tmp_path, env, port=port, command=command)


@pytest.fixture(scope="module")
def serve(tmp_path_factory: pytest.TempPathFactory) -> Iterator:
    servers: list[App] = []

    def start(app: str, ready_path: str, env: dict[str, str] | None = None) -> App:
        servers.append(App(tmp_path_factory.mktemp("gunicorn"), app, ready_path, env).wait_ready())
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="module", params=["local", "redis"])
def host(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[App]:
    """The host app twice: one worker on the local broker, and two workers on one Redis."""
    env = {"SWITCHBOARD_RATE_MESSAGES": "20"}
    folder = tmp_path_factory.mktemp(f"host-{request.param}")
    with ExitStack() as stack:
        if request.param == "redis":
            redis = RedisServer(folder)
            stack.callback(redis.stop)
            env["SWITCHBOARD_REDIS_URL"] = redis.url
        app = App(
            folder, "tests.syncroutes.host:create_app()", "/ready", env, workers=2 if request.param == "redis" else 1
        )
        stack.callback(app.stop)
        yield app.wait_ready()


def client(server: Server, path: str) -> ClientConnection:
    return connect(server.ws_url + path, open_timeout=10)


def close_code(ws: ClientConnection) -> int:
    """The code of the server's close, read after whatever the server sent before it."""
    with pytest.raises(ConnectionClosed) as closed:
        while True:
            ws.recv(timeout=10)
    return closed.value.rcvd.code


def _code(path: Path) -> list[str]:
    """A module's lines below its docstring, blank ones left out."""
    lines = path.read_text().split('"""', 2)[2].splitlines()
    return [line for line in lines if line.strip()]


@pytest.mark.parametrize("name", ["echo", "chat"])
def test_the_flask_sock_examples_move_over_by_their_import_alone(name):
    original, moved = _code(HERE / f"flask_sock_{name}.py"), _code(HERE / f"{name}.py")
    changed = [(a, b) for a, b in zip(original, moved, strict=True) if a != b]
    assert len(changed) == 1
    assert changed[0][0].startswith("from flask_sock import ")
    assert changed[0][1] == changed[0][0].replace("flask_sock", "switchboard_server.sync")


def test_flask_socks_echo_example_echoes_text_and_binary_answers_pings_and_holds_the_size_limit(serve):
    server = serve("tests.syncroutes.echo:app", "/switchboard/healthz")
    with client(server, "/echo") as ws:
        ws.send("hello")
        assert ws.recv(timeout=10) == "hello"
        ws.send(b"\x00\x01\xff")
        assert ws.recv(timeout=10) == b"\x00\x01\xff"
        assert ws.ping().wait(10)
    with client(server, "/echo") as ws:
        ws.send("x" * 70_000)  # over SWITCHBOARD_MAX_MESSAGE_SIZE's 64 KiB
        assert close_code(ws) == 1009
    with client(server, "/echo") as ws:
        ws.send("still here")
        assert ws.recv(timeout=10) == "still here"


def test_flask_socks_chat_sends_each_message_to_everyone_and_forgets_who_left(serve):
    server = serve("tests.syncroutes.chat:app", "/switchboard/healthz")
    with client(server, "/chat") as ann, client(server, "/chat") as bob, client(server, "/chat") as cat:
        ann.send("hi all")
        assert [ws.recv(timeout=10) for ws in (ann, bob, cat)] == ["hi all"] * 3
        bob.close()
        cat.send("bob went")
        assert [ws.recv(timeout=10) for ws in (ann, cat)] == ["bob went"] * 2


def test_receive_with_a_timeout_returns_none(host):
    with client(host, "/rt/ws/wait?timeout=0.2") as ws:
        assert ws.recv(timeout=10) == "None"
        assert close_code(ws) == 1000


def test_iteration_yields_each_message_and_a_return_closes_with_1000(host):
    with client(host, "/rt/ws/shout") as ws:
        for word in ("one", "two"):
            ws.send(word)
        ws.send("end")
        assert [ws.recv(timeout=10) for _ in range(3)] == ["ONE", "TWO", "2 messages"]
        assert close_code(ws) == 1000


def test_an_exception_closes_with_1011_and_logs_its_traceback(host):
    with client(host, "/rt/ws/boom") as ws:
        ws.send("go")
        assert close_code(ws) == 1011
    host.wait_until(lambda: "the game broke down" in host.log())
    log = host.log()
    assert "sync route switchboard_route_boom.boom failed" in log
    assert "Traceback" in log and "RuntimeError: the game broke down" in log


def test_a_client_close_ends_the_function_with_connection_closed_and_others_carry_on(host):
    with host.client("/rt/ws") as witness, client(host, "/rt/ws/watched/first") as first:
        witness.command("subscribe", channel="ended")
        with client(host, "/rt/ws/watched/second") as second:
            second.send("hello")
            assert second.recv(timeout=10) == "hello"
            second.close(code=4001, reason="game over")
        ended = witness.next_push("message")["data"]
        assert ended == {"name": "second", "reason": 4001, "message": "game over"}
        first.send("still served")
        assert first.recv(timeout=10) == "still served"


def test_a_route_busy_elsewhere_still_answers_pings_and_its_clients_close_is_handled_at_once(host):
    """The socket is read by the server, not by the function: a function that makes no `ws` call
    for a minute still has its client's pings answered, and a close is answered and the hub lets
    go of the connection (the disconnect hook runs) while the function is still asleep."""
    with host.client("/rt/ws") as witness:
        witness.command("subscribe", channel="disconnects")
        with client(host, "/rt/ws/busy?for=60&as=sleeper") as ws:
            assert ws.recv(timeout=10) == "subscribed"
            assert ws.ping().wait(timeout=10)
            ws.close(code=4002, reason="bye")
        assert ws.protocol.close_rcvd is not None and ws.protocol.close_rcvd.code == 4002
        assert witness.next_push("message")["data"] == {"user": "sleeper", "code": 4002}


def test_subscribed_socket_gets_publications_from_a_view_the_http_api_and_itself(host):
    status, body = host.api("POST", "/rt/api/tokens", {"user": "alice"})
    assert status == 200, body
    token = body["token"]
    with client(host, f"/rt/ws/game?channel=room-1&token={token}") as ws:
        assert ws.recv(timeout=10) == "subscribed as alice"
        status, _ = host.api("POST", "/rt/api/publish", {"channel": "room-1", "data": {"from": "api"}})
        assert status == 200
        assert _push(ws) == {"from": "api"}
        _post(host, "/notify", {"channel": "room-1", "text": "from a view"})
        assert _push(ws) == {"text": "from a view"}
        ws.send("hello")
        push = json.loads(ws.recv(timeout=10))
        assert (push["data"], push["from"]) == ({"said": "hello"}, "alice")
        ws.send("who")
        assert ws.recv(timeout=10) == "['alice']"
        ws.send("leave")
        assert ws.recv(timeout=10) == "left: True"


def test_the_connect_hook_names_the_user_or_refuses_before_the_upgrade(host):
    with client(host, "/rt/ws/game?channel=room-2&as=cy") as ws:
        assert ws.recv(timeout=10) == "subscribed as cy"
    with pytest.raises(InvalidStatus) as refused:
        client(host, "/rt/ws/game?channel=room-2&deny=1")
    response = refused.value.response
    assert response.status_code == 403 and json.loads(response.body)["message"] == "not today"


def test_a_client_over_the_rate_limit_is_closed_with_1008(host):
    with client(host, "/rt/ws/shout") as ws:
        with pytest.raises(ConnectionClosed) as closed:  # on a send, or on the read after them
            for _ in range(200):  # SWITCHBOARD_RATE_MESSAGES=20: far past one second's burst
                ws.send("spam")
            while True:
                ws.recv(timeout=10)
        assert closed.value.rcvd.code == 1008


def _push(ws: ClientConnection) -> dict:
    push = json.loads(ws.recv(timeout=10))
    assert push["type"] == "message" and push["channel"] == "room-1"
    return push["data"]


def _post(server: Server, path: str, form: dict[str, str]) -> None:
    data = urllib.parse.urlencode(form).encode()
    with urllib.request.urlopen(urllib.request.Request(server.url + path, data=data), timeout=10) as response:
        assert response.status == 200
