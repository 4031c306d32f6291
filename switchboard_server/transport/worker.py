"""Switchboard's Gunicorn worker: gevent's own, with the `/ws` handshake taken off the slow path.

Use it for any app that mounts Switchboard (`worker_class = "switchboard_server.Worker"`): it also
drains before it stops. Whenever Gunicorn tells the worker to stop (SIGTERM, the old workers of a
graceful reload, max_requests, the master gone) the worker first refuses new connections and
closes the open ones in batches over SWITCHBOARD_DRAIN_WINDOW (core/drain.py), still answering
HTTP meanwhile so `/healthz` says 503 and a refused handshake is retried by nginx elsewhere; then
it stops as Gunicorn's would, closing any connection left with 1001.


A handshake is most of what a reconnect storm costs, and the way through Gunicorn's HTTP parser, a
WSGI environ, Flask's routing and request context, and a detached socket handed to a new greenlet
was two thirds of it (py-spy, bench/results). This worker peeks at a new connection's first bytes;
when they are a whole `GET` upgrade on one of the paths the app's Switchboard lists (`/ws` and
`/ws/echo` under its URL prefix) that the route would accept, it makes the route's own decisions
(transport/handshake.py's `check_upgrade`, the protocol's entry) on them and hands the socket to
the hub as the route does (`adopt`). Everything else (other paths, every refusal, a
request not yet whole, TLS, the metrics address) is left unread for Gunicorn and Flask, which
answer it exactly as they would without this worker: the Flask routes stay the public face.

It also keeps one HTTP connection from holding the worker, which Gunicorn's own does not: its
keep-alive loop reads the next request without yielding while one is buffered, so a client
pipelining thousands of requests on one connection had every WebSocket of the worker wait until
the last was answered. This worker yields after each request, drops at most UNREAD_BODY of a
body the route did not read (Gunicorn would read all of it, however long) and closes a
connection it will not serve further lingering, so the last response is not lost to a reset.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Collection
from urllib.parse import parse_qsl

import gevent
from gunicorn.arbiter import Arbiter
from gunicorn.workers.ggevent import GeventWorker

from switchboard_server.transport.connection import discard_input
from switchboard_server.transport.handshake import Handshake, Refusal, adopt, check_upgrade, switching_protocols

# What a drain needs after its window, within Gunicorn's graceful_timeout: the last closing
# handshakes (the hub's shutdown waits up to 5 s) and the HTTP requests still in flight.
DRAIN_MARGIN = 5.0
WORKER_BOOT_ERROR = Arbiter.WORKER_BOOT_ERROR
# A handshake's request head is a few hundred bytes; one this long is not a browser's.
MAX_HEAD = 8192
# How long a new connection may take to send its first request, as the `websockets` server's
# open_timeout. Longer than Gunicorn's keep-alive on purpose: in a reconnect storm the listen
# queue overflows, and a client whose first packets were dropped resends them on TCP's backoff,
# seconds after the connection was accepted; closing it then refuses a client that is on its way.
FIRST_REQUEST_WAIT = 10.0
# What is read and dropped of a body a route left unread (a refused one) before the next request
# on the connection; a longer rest closes it, within keepalive seconds like a request's head.
UNREAD_BODY = 65536


class Worker(GeventWorker):
    """Gunicorn's gevent worker; `/ws` handshakes it can answer alone never reach Flask."""

    _fast: FastPath | None = None
    _serving = True
    _draining: gevent.Greenlet | None = None

    @property
    def alive(self) -> bool:
        """Gunicorn's "keep serving" flag: its loops run while this is True."""
        return self._serving

    @alive.setter
    def alive(self, value: bool) -> None:
        """Gunicorn sets this False everywhere it decides the worker stops (a signal handler, a
        request past max_requests, the master gone), so the drain starts here, for every one of
        them; the flag falls once the drain is done."""
        if value:
            self._serving = True
            return
        state = _switchboard(self.wsgi) if hasattr(self, "wsgi") else None
        if state is None:
            self._serving = False
        elif self._draining is None:
            self._draining = gevent.spawn(self._drain, state)

    def _drain(self, state) -> None:
        try:
            state.drain()
        finally:
            self._serving = False

    def run(self) -> None:
        """Serve until told to stop (draining first), then close what is left with 1001."""
        state = _switchboard(self.wsgi) if hasattr(self, "wsgi") else None
        if state is not None and state.config.drain_window + DRAIN_MARGIN > self.cfg.graceful_timeout:
            # Killed mid-drain, the worker would drop the rest of its clients at once: the storm
            # the drain exists to prevent. Exiting with this code makes Gunicorn's master stop too.
            self.log.error(
                "Switchboard: SWITCHBOARD_DRAIN_WINDOW=%g s does not fit in Gunicorn's graceful_timeout=%g s: "
                "keep the window at least %g s shorter, or raise graceful_timeout",
                state.config.drain_window, self.cfg.graceful_timeout, DRAIN_MARGIN,
            )  # fmt: skip
            sys.exit(WORKER_BOOT_ERROR)
        try:
            super().run()
        finally:
            state = _switchboard(self.wsgi) if hasattr(self, "wsgi") else None
            if state is not None:
                state.shutdown(timeout=5.0)

    def handle(self, listener, client, addr) -> None:
        client.setblocking(1)
        if self._fast is None:
            self._fast = FastPath(_switchboard(self.wsgi))
        taken = self._fast.take(listener, client, addr, max(self.cfg.keepalive, FIRST_REQUEST_WAIT))
        if taken is None:
            client.close()  # nothing arrived in time
        elif not taken:
            super().handle(listener, client, addr)

    def handle_request(self, listener_name, req, sock, addr) -> None:
        """Answer one request of a keep-alive connection, then yield before reading the next.

        The yield is what makes a pipelining client share the worker: without it the next
        buffered request is parsed and answered at once, and nothing else runs meanwhile.
        """
        try:
            super().handle_request(listener_name, req, sock, addr)
        except StopIteration:  # the response closes the connection, or a route took the socket
            close_lingering(sock)
            raise
        if not self._drop_unread_body(req):
            close_lingering(sock)
            raise StopIteration()
        gevent.sleep(0)

    def _drop_unread_body(self, req) -> bool:
        """Read what the route left of the request's body: True if it all came, within bounds."""
        left = UNREAD_BODY
        with gevent.Timeout(self.cfg.keepalive, False):
            while left >= 0:
                data = req.body.read(min(left + 1, 8192))
                if not data:
                    return True
                left -= len(data)
        return False


def _switchboard(app):
    """The app's SwitchboardState, or None (no Switchboard, or an app wrapped in middleware)."""
    return getattr(app, "extensions", {}).get("switchboard")


class FastPath:
    """Answers the handshakes the Flask routes would accept, with the routes' own decisions."""

    def __init__(self, state) -> None:
        # `state` is the app's SwitchboardState (None: an app without Switchboard, or one wrapped
        # in middleware, which Gunicorn and Flask serve as usual).
        self._state = state
        self._paths = state.fast_paths if state is not None else {}
        metrics = state.config.metrics if state is not None else ""
        self._metrics_port = int(metrics.rpartition(":")[2]) if ":" in metrics else None
        self._plain: dict[object, bool] = {}  # listener -> serves the app (not only /metrics)

    def take(self, listener, client, addr, wait: float) -> bool | None:
        """True: the connection was upgraded here and handed to the hub. False: Gunicorn must answer
        it (its bytes are still unread). None: nothing arrived within `wait` seconds."""
        if not self._paths or not self._serves_app(listener) or not hasattr(client, "_sock"):
            return False
        data = None
        with gevent.Timeout(wait, False):
            data = client.recv(MAX_HEAD, socket.MSG_PEEK)
        if data is None:
            # The time may have gone to a worker too busy to run this greenlet (a reconnect storm),
            # not to a silent client: look once more before giving up on it.
            try:
                data = client._sock.recv(MAX_HEAD, socket.MSG_PEEK | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return None
        request = _parse_head(data, self._paths)
        if request is None:
            return False
        path, query, headers, size = request
        entry = self._paths.get(path)
        if entry is None:
            return False
        address = addr[0] if isinstance(addr, tuple) else ""
        hub = self._state.hub
        try:
            ws_key = check_upgrade(hub.config.allowed_origins, lambda name: headers.get(name.lower(), ""))
            run, identity = entry(Handshake(path, dict(parse_qsl(query)), headers, address))
        except Refusal:  # the route answers it, with its status and its log line
            return False
        while size:  # what was peeked is all in the socket's buffer: take exactly the head
            size -= len(client.recv(size))
        if self._state.recorder is not None:
            self._state.recorder.start()

        def open_connection(sock):
            return hub.open(sock, identity, address=address)

        adopt(client, switching_protocols(ws_key), open_connection, run)
        return True

    def _serves_app(self, listener) -> bool:
        plain = self._plain.get(listener)
        if plain is None:
            plain = self._plain[listener] = (
                self._metrics_port is None or listener.getsockname()[1] != self._metrics_port
            )
        return plain


def close_lingering(sock) -> None:
    """Half-close, then read and drop the client's input for a while before Gunicorn closes it.

    A socket closed with unread input (the rest of a refused body, pipelined requests) answers
    with a reset, which can destroy the response the client has not read yet. The bounds are
    the WebSocket connections' own (transport/connection.py).
    """
    if sock.fileno() < 0:
        return  # a route took the socket over: its descriptor is the hub's now
    try:
        sock.shutdown(socket.SHUT_WR)
    except OSError:
        return
    discard_input(sock.recv_into)


def _parse_head(data: bytes, paths: Collection[str]) -> tuple[str, str, dict[str, str], int] | None:
    """(path, query, headers by lower-case name, head size) of a whole `GET` request head for one of
    `paths`, or None for anything this worker leaves to Gunicorn."""
    if not data.startswith(b"GET /"):
        return None
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or parts[2] != "HTTP/1.1":
        return None
    path, _, query = parts[1].partition("?")
    if path not in paths:
        return None
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            return None  # malformed: Gunicorn says so
        name, value = name.lower(), value.strip()
        headers[name] = f"{headers[name]}, {value}" if name in headers else value
    return path, query, headers, end + 4
