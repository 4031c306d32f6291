"""The benchmarked servers: how to start each one and which dialect it speaks.

Every command runs with the repo root as its working directory. "{port}" in an argv item or
an env value is replaced by the port to listen on (see `command`). Nothing here starts a
process; the harness does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the repo root: every command's cwd
PYTHON = sys.executable
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))
# gunicorn's default of 1000 would cap the connection count of a gevent worker
WORKER_CONNECTIONS = "20000"
# flask-sock under the gthread worker: a thread per connection, more than the 10,000 connections
# of idle_chat and idle_echo.
FLASK_SOCK_THREADS = "11000"


@dataclass(frozen=True)
class Peer:
    """One server under test.

    dialect: "json", "socketio", "graphql" or "pusher" for pub/sub servers; "chat" or
    "socketio-chat" for a chat app; "echo" for an echo app (bench/PROTOCOL.md).
    ready_path: a WebSocket path (with query, if any); the peer is up once a WebSocket
    handshake to ws://127.0.0.1:PORT<ready_path> succeeds.
    path_prefix: where the json dialect's /ws and /ws/echo are mounted (an extension's URL prefix).
    route: the one WebSocket path of a chat or echo app (dialects "chat" and "echo").
    rpc_method: the name of a no-op RPC method on the native /ws, if the peer has one.
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    dialect: str = "json"
    ready_path: str = "/ws/echo"
    path_prefix: str = ""
    route: str = ""
    rpc_method: str = ""


def _gunicorn(worker: str, target: str, *options: str) -> list[str]:
    # --no-control-socket: gunicorn 27 otherwise binds ~/.gunicorn/gunicorn.ctl, one path
    # shared by every gunicorn on the box (Switchboard's included).
    return [
        GUNICORN,
        *options,
        "-k",
        worker,
        "-w",
        "1",
        "--worker-connections",
        WORKER_CONNECTIONS,
        "--graceful-timeout",
        "1",
        "--no-control-socket",
        "-b",
        "127.0.0.1:{port}",
        target,
    ]


def _switchboard(name: str, app: str = "wsgi:app", prefix: str = "", **options) -> Peer:
    """Switchboard under its own Gunicorn settings, `app` being the standalone server or a host app.

    The per-connection rate limit (100 messages/s by default) would throttle the one publisher
    that streams as fast as it can, and a log line per connect and disconnect would be measured as
    handshake cost; the peers have neither. `options` are the Peer's (`dialect`, more `env`).
    """
    env = {"PORT": "{port}", "SWITCHBOARD_RATE_MESSAGES": "0", "SWITCHBOARD_LOG_LEVEL": "warning"}
    env.update(options.pop("env", {}))
    argv = [GUNICORN, "-c", "gunicorn.conf.py", app]
    options.setdefault("ready_path", prefix + "/ws/echo")
    return Peer(name, argv, env, path_prefix=prefix, **options)


def _app(name: str, dialect: str, route: str, app: str, on_switchboard: bool) -> Peer:
    """A chat or echo app at `route`: on Switchboard's worker, or on flask-sock as its docs say
    to run it under Gunicorn, a thread per connection (`--threads`, the gthread worker); the
    threads must outnumber the connections, since each one holds its thread until it closes."""
    if on_switchboard:
        return _switchboard(name, app, dialect=dialect, route=route, ready_path=route)
    return Peer(
        name, _gunicorn("gthread", app, "--threads", FLASK_SOCK_THREADS), dialect=dialect, ready_path=route, route=route
    )


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        _switchboard("switchboard"),
        # The same server, its subscribers on /graphql (graphql-transport-ws, one prepared
        # subscription), its publisher on /ws.
        _switchboard("switchboard-graphql", dialect="graphql"),
        # The same server; its subscribers speak Pusher's protocol (bench/loadgen.py's "pusher"
        # dialect) and its publisher the native one.
        _switchboard("switchboard-pusher", dialect="pusher", env={"SWITCHBOARD_PUSHER_APPS": "1:bench:bench-secret"}),
        # Mounted on a host Flask app under /rt, as a team adopts it: the same engine and settings,
        # its routes (and the fast path) under a prefix.
        _switchboard("switchboard-extension", "bench.peers.switchboard_extension:create_app()", "/rt"),
        # The same with a no-op publish hook (and an RPC method): what the application's own code
        # on every publish costs.
        _switchboard("switchboard-hooked", "bench.peers.switchboard_hooked:create_app()", "/rt", rpc_method="noop"),
        Peer("switchboard-redis", [PYTHON, "-m", "bench.peers.switchboard_redis", "{port}"]),
        Peer("websockets", [PYTHON, "-m", "bench.peers.websockets_server", "{port}"]),
        Peer("aiohttp", [PYTHON, "-m", "bench.peers.aiohttp_server", "{port}"]),
        Peer("socketify", [PYTHON, "-m", "bench.peers.socketify_server", "{port}"]),
        Peer(
            "flask-socketio",
            _gunicorn(
                "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
                "bench.peers.flask_socketio_app:app",
            ),
            dialect="socketio",
            ready_path="/socket.io/?EIO=4&transport=websocket",
        ),
        Peer("flask-sock-loop", _gunicorn("gevent", "bench.peers.flasksock_loop:app")),
        Peer(
            "gevent-websocket",
            [PYTHON, "-m", "bench.peers.gevent_websocket_server", "{port}"],
        ),
        # The article's chat (every message to every client), each written as its own docs show:
        # a Switchboard sync route (subscribe, then publish what comes in), flask-sock's loop over
        # a set of clients, the same loop moved to Switchboard by its import, Flask-SocketIO's
        # broadcast.
        _app("switchboard-chat", "chat", "/rt/chat", "bench.peers.switchboard_chat:create_app()", True),
        _app("flask-sock-chat", "chat", "/chat", "tests.syncroutes.flask_sock_chat:app", False),
        _app("switchboard-sock-chat", "chat", "/chat", "tests.syncroutes.chat:app", True),
        Peer(
            "flask-socketio-chat",
            _gunicorn(
                "geventwebsocket.gunicorn.workers.GeventWebSocketWorker",
                "bench.peers.flask_socketio_chat:app",
            ),
            dialect="socketio-chat",
            ready_path="/socket.io/?EIO=4&transport=websocket",
        ),
        # flask-sock's echo example, and the same file moved to Switchboard by its import.
        _app("flask-sock-echo", "echo", "/echo", "tests.syncroutes.flask_sock_echo:app", False),
        _app("switchboard-sock-echo", "echo", "/echo", "tests.syncroutes.echo:app", True),
    )
}


def command(peer: Peer, port: int) -> tuple[list[str], dict[str, str]]:
    """The argv and the extra environment variables that start `peer` on `port`."""

    def fill(text: str) -> str:
        return text.replace("{port}", str(port))

    return [fill(arg) for arg in peer.argv], {key: fill(value) for key, value in peer.env.items()}
