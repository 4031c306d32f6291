"""The WebSocket routes: `/ws` (the protocol) and `/ws/echo` (the article's ping-pong).

The handshake is answered here, on the socket Gunicorn's gevent worker hands the request, and the
socket is then given to the hub to run in a greenlet of its own; the request greenlet and its Flask
context end at once, so an idle connection costs one parked greenlet and its buffers, not two
greenlets and a request context. Refusals (bad handshake, foreign Origin) are plain HTTP errors
before the upgrade, as are connections over a limit (503, 429); a bad or missing token is answered
after it, with an `unauthorized` error and close 1008, because browsers cannot read the body of a
refused handshake. Every refusal is counted and logged with the client's address and the reason,
never with the token or the query string that carried it.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable

import gevent
from flask import Blueprint, Response, request
from gevent import socket as gsocket

from handlers import current_hub
from handlers.errors import error_response
from hub import ANONYMOUS, Identity, ProtocolError
from hub.connection import Connection
from hub.frames import accept_key

log = logging.getLogger("switchboard.handshake")

bp = Blueprint("websocket", __name__)


class _SocketTakenOver(Response):
    """Tells Gunicorn the connection is no longer its to answer or keep alive.

    Raising StopIteration from the WSGI call makes Gunicorn's async worker stop handling the
    connection without writing anything more to it (the socket itself was already detached).
    """

    def __call__(self, environ, start_response):
        raise StopIteration()


@bp.route("/ws", websocket=True)
def websocket():
    hub = current_hub()
    token = request.args.get("token")
    identity, refusal = ANONYMOUS, None
    try:
        if token is not None:
            identity = hub.tokens.verify(token)
        hub.admit(identity, request.remote_addr or "")
    except ProtocolError as error:
        if error.code != "unauthorized":  # limits: refused before the upgrade, with a status
            return _refuse(error.code, error.message, error.http_status)
        _log_refusal(error.code, error.message)
        refusal = error
    if refusal is not None:
        return upgrade(lambda conn: hub.native.refuse(conn, refusal), identity)
    return upgrade(hub.native.serve, identity)


@bp.route("/ws/echo", websocket=True)
def echo():
    return upgrade(current_hub().serve_echo, ANONYMOUS)


def _log_refusal(code: str, reason: str) -> None:
    current_hub().counters["refused_" + code] += 1
    log.warning("handshake refused", extra={"address": request.remote_addr, "code": code, "reason": reason})


def _refuse(code: str, message: str, status: int) -> Response:
    _log_refusal(code, message)
    return error_response(code, message, status)


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
    environ = request.environ
    if (
        "websocket" not in environ.get("HTTP_UPGRADE", "").lower()
        or "upgrade" not in environ.get("HTTP_CONNECTION", "").lower()
    ):
        response = _refuse("upgrade_required", "this route speaks WebSocket only", 426)
        response.headers["Upgrade"] = "websocket"
        return response
    if environ.get("HTTP_SEC_WEBSOCKET_VERSION") != "13":
        response = _refuse("upgrade_required", "only WebSocket version 13 is supported", 426)
        response.headers["Sec-WebSocket-Version"] = "13"
        return response
    key = environ.get("HTTP_SEC_WEBSOCKET_KEY", "")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        return _refuse("bad_request", "Sec-WebSocket-Key must be 16 bytes in base64", 400)
    hub = current_hub()
    origin = environ.get("HTTP_ORIGIN")
    allowed = hub.config.allowed_origins
    if origin and allowed and origin not in allowed:
        return _refuse("forbidden", f"origin {origin!r} is not allowed", 403)
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return error_response("not_supported", "WebSockets need Gunicorn's gevent worker (see gunicorn.conf.py)", 500)

    agreed = b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n" if subprotocol else b""
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode("ascii") + b"\r\n" + agreed + b"\r\n"
    )
    # Take the descriptor away from Gunicorn: it closes its socket object when this request ends.
    client = gsocket.socket(fileno=sock.detach())
    conn = hub.open(client, identity, address=request.remote_addr or "", client_id=client_id)
    gevent.spawn(run, conn)
    return _SocketTakenOver()
