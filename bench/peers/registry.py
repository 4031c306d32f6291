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


@dataclass(frozen=True)
class Peer:
    """One server under test.

    dialect: "json", "socketio", "graphql" or "pusher" (bench/PROTOCOL.md).
    ready_path: a WebSocket path (with query, if any); the peer is up once a WebSocket
    handshake to ws://127.0.0.1:PORT<ready_path> succeeds.
    path_prefix: where the json dialect's /ws and /ws/echo are mounted (an extension's URL prefix).
    """

    name: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    dialect: str = "json"
    ready_path: str = "/ws/echo"
    path_prefix: str = ""


def _gunicorn(worker: str, target: str) -> list[str]:
    # --no-control-socket: gunicorn 27 otherwise binds ~/.gunicorn/gunicorn.ctl, one path
    # shared by every gunicorn on the box (Switchboard's included).
    return [
        GUNICORN,
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


PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer(
            "switchboard",
            [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"],
            # The per-connection rate limit (100 messages/s by default) would throttle the one
            # publisher that streams as fast as it can, and a log line per connect and disconnect
            # would be measured as handshake cost; the peers have neither.
            env={"PORT": "{port}", "SWITCHBOARD_RATE_MESSAGES": "0", "SWITCHBOARD_LOG_LEVEL": "warning"},
        ),
        Peer(
            "switchboard-graphql",
            [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"],
            # The same server as "switchboard", its subscribers on /graphql (graphql-transport-ws,
            # one prepared subscription), its publisher on /ws.
            env={"PORT": "{port}", "SWITCHBOARD_RATE_MESSAGES": "0", "SWITCHBOARD_LOG_LEVEL": "warning"},
            dialect="graphql",
        ),
        Peer(
            "switchboard-pusher",
            [GUNICORN, "-c", "gunicorn.conf.py", "wsgi:app"],
            # The same server and settings as "switchboard"; its subscribers speak Pusher's protocol
            # (bench/loadgen.py's "pusher" dialect) and its publisher the native one.
            env={
                "PORT": "{port}",
                "SWITCHBOARD_RATE_MESSAGES": "0",
                "SWITCHBOARD_LOG_LEVEL": "warning",
                "SWITCHBOARD_PUSHER_APPS": "1:bench:bench-secret",
            },
            dialect="pusher",
        ),
        Peer(
            "switchboard-extension",
            # Switchboard mounted on a host Flask app under /rt, as a team adopts it: the same
            # engine and settings as "switchboard", its routes (and the fast path) under a prefix.
            [GUNICORN, "-c", "gunicorn.conf.py", "bench.peers.switchboard_extension:create_app()"],
            env={"PORT": "{port}", "SWITCHBOARD_RATE_MESSAGES": "0", "SWITCHBOARD_LOG_LEVEL": "warning"},
            ready_path="/rt/ws/echo",
            path_prefix="/rt",
        ),
        Peer(
            "switchboard-hooked",
            # "switchboard-extension" with a no-op publish hook (and an RPC method): what the
            # application's own code on every publish costs.
            [GUNICORN, "-c", "gunicorn.conf.py", "bench.peers.switchboard_hooked:create_app()"],
            env={"PORT": "{port}", "SWITCHBOARD_RATE_MESSAGES": "0", "SWITCHBOARD_LOG_LEVEL": "warning"},
            ready_path="/rt/ws/echo",
            path_prefix="/rt",
        ),
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
    )
}


def command(peer: Peer, port: int) -> tuple[list[str], dict[str, str]]:
    """The argv and the extra environment variables that start `peer` on `port`."""

    def fill(text: str) -> str:
        return text.replace("{port}", str(port))

    return [fill(arg) for arg in peer.argv], {key: fill(value) for key, value in peer.env.items()}
