"""The WebSocket routes: `/ws` (the protocol) and `/ws/echo` (the article's ping-pong).

The handshake is answered here, on the socket Gunicorn's gevent worker hands the request, and the
socket is then given to the hub to run in a greenlet of its own; the request greenlet and its Flask
context end at once, so an idle connection costs one parked greenlet and its buffers, not two
greenlets and a request context. Refusals (bad handshake, foreign Origin) are plain HTTP errors
before the upgrade, as are connections over a limit (503, 429); a bad or missing token is answered
after it, with an `unauthorized` error and close 1008, because browsers cannot read the body of a
refused handshake. Every refusal is counted and logged with the client's address and the reason,
never with the token or the query string that carried it.

The decisions (transport/handshake.py's `check_upgrade`, the native session's `entry`) take plain
values, so Switchboard's Gunicorn worker (transport/worker.py) makes the same ones for a `/ws`
handshake without going through Flask; these routes stay the public face, and answer every
handshake that path does not take.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Response, request

from switchboard_server.core.auth import ANONYMOUS, Identity
from switchboard_server.routes import current_hub, current_state
from switchboard_server.routes.blueprint import blueprint
from switchboard_server.routes.errors import error_response
from switchboard_server.transport.connection import Connection
from switchboard_server.transport.handshake import (
    Handshake,
    Refusal,
    adopt,
    check_upgrade,
    log_refusal,
    switching_protocols,
)

bp = blueprint("websocket", __name__)
echo_bp = blueprint("echo", __name__)  # mounted only when the echo protocol is enabled


class _SocketTakenOver(Response):
    """Tells Gunicorn the connection is no longer its to answer or keep alive.

    Raising StopIteration from the WSGI call makes Gunicorn's async worker stop handling the
    connection without writing anything more to it (the socket itself was already detached).
    """

    def __call__(self, environ, start_response):
        raise StopIteration()


@bp.route("/ws", websocket=True)
def websocket():
    try:
        run, identity = current_state().native.entry(handshake())
    except Refusal as refusal:
        return _refuse(refusal)
    return upgrade(run, identity)


@echo_bp.route("/ws/echo", websocket=True)
def echo():
    return upgrade(current_state().echo.serve, ANONYMOUS)


def handshake() -> Handshake:
    """This request's handshake as plain values, as the Gunicorn worker would have read it."""
    headers = {name.lower(): value for name, value in request.headers.items()}
    return Handshake(request.path, request.args.to_dict(), headers, request.remote_addr or "")


def _refuse(refusal: Refusal) -> Response:
    log_refusal(current_hub().counters, request.remote_addr or "", refusal.code, refusal.message)
    response = error_response(refusal.code, refusal.message, refusal.status)
    response.headers.update(refusal.headers)
    return response


def refuse_draining() -> Response:
    """503 for a handshake that reached a draining worker: nginx (proxy_next_upstream http_503)
    retries it on another instance; a client without a balancer retries after its backoff."""
    return _refuse(Refusal("draining", "this server is restarting: connect to another instance", 503))


def upgrade(
    run: Callable[[Connection], None],
    identity: Identity,
    subprotocol: str | None = None,
    client_id: str | None = None,
):
    """Answer the handshake on Gunicorn's socket and run the connection in a greenlet of its own.

    Every WebSocket route of every protocol comes through here: `subprotocol` is the one the
    route agreed to (GraphQL's), `client_id` an id of the protocol's own shape (Pusher's).
    """
    hub = current_hub()
    if hub.draining:  # before the upgrade, so nginx tries another instance
        return refuse_draining()
    environ = request.environ
    try:
        ws_key = check_upgrade(
            hub.config.allowed_origins, lambda name: environ.get("HTTP_" + name.upper().replace("-", "_"), "")
        )
    except Refusal as refusal:
        return _refuse(refusal)
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return error_response(
            "not_supported", "WebSockets need Switchboard's Gunicorn worker (switchboard_server.Worker)", 500
        )
    address = request.remote_addr or ""

    def open_connection(raw):
        return hub.open(raw, identity, address=address, client_id=client_id)

    adopt(sock, switching_protocols(ws_key, subprotocol), open_connection, run)
    return _SocketTakenOver()
