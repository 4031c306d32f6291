"""The WebSocket routes: `/ws` (the protocol) and `/ws/echo` (the article's ping-pong).

The handshake is answered here, on the socket Gunicorn's gevent worker hands the request, and the
socket is then given to the hub to run in a greenlet of its own; the request greenlet and its Flask
context end at once, so an idle connection costs one parked greenlet and its buffers, not two
greenlets and a request context. Refusals (bad handshake, foreign Origin) are plain HTTP errors
before the upgrade, as are connections over a limit (503, 429); a bad or missing token is answered
after it, with an `unauthorized` error and close 1008, because browsers cannot read the body of a
refused handshake. Every refusal is counted and logged with the client's address and the reason,
never with the token or the query string that carried it.

The decisions (`check_upgrade`, `native_entry`) take plain values, so Switchboard's Gunicorn worker
(handlers/worker.py) makes the same ones for a `/ws` handshake without going through Flask; these
routes stay the public face, and answer every handshake that path does not take.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable
from functools import partial

from flask import Blueprint, Response, request

from handlers import current_hub
from handlers.errors import error_response
from hub import ANONYMOUS, Hub, Identity, ProtocolError
from hub.connection import Connection
from hub.frames import accept_key

log = logging.getLogger("switchboard.handshake")

bp = Blueprint("websocket", __name__)


class Refusal(Exception):
    """A handshake refused before the upgrade: an HTTP status, and the headers it needs."""

    def __init__(self, code: str, message: str, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}


def check_upgrade(hub: Hub, header: Callable[[str], str]) -> str:
    """The client's Sec-WebSocket-Key, once the request is a WebSocket upgrade from an allowed
    Origin; `header(name)` reads a request header ("" when absent)."""
    if "websocket" not in header("Upgrade").lower() or "upgrade" not in header("Connection").lower():
        raise Refusal("upgrade_required", "this route speaks WebSocket only", 426, {"Upgrade": "websocket"})
    if header("Sec-WebSocket-Version") != "13":
        raise Refusal(
            "upgrade_required", "only WebSocket version 13 is supported", 426, {"Sec-WebSocket-Version": "13"}
        )
    key = header("Sec-WebSocket-Key")
    try:
        valid_key = len(base64.b64decode(key, validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        raise Refusal("bad_request", "Sec-WebSocket-Key must be 16 bytes in base64", 400)
    origin = header("Origin")
    allowed = hub.config.allowed_origins
    if origin and allowed and origin not in allowed:
        raise Refusal("forbidden", f"origin {origin!r} is not allowed", 403)
    return key


def native_entry(hub: Hub, token: str | None, address: str) -> tuple[Callable[[Connection], None], Identity]:
    """How a `/ws` connection will run: served, or told after the upgrade that its token is bad.

    Connection limits refuse before the upgrade (`Refusal`), with a status.
    """
    identity = ANONYMOUS
    try:
        if token is not None:
            identity = hub.tokens.verify(token)
        hub.admit(identity, address)
    except ProtocolError as error:
        if error.code != "unauthorized":
            raise Refusal(error.code, error.message, error.http_status) from None
        log_refusal(hub, address, error.code, error.message)
        return partial(hub.native.refuse, error=error), identity
    return hub.native.serve, identity


def switching_protocols(key: str, subprotocol: str | None = None) -> bytes:
    """The 101 response that completes a handshake (with the subprotocol the route agreed to)."""
    agreed = b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n" if subprotocol else b""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(key).encode("ascii") + b"\r\n" + agreed + b"\r\n"
    )


def log_refusal(hub: Hub, address: str, code: str, reason: str) -> None:
    hub.counters["refused_" + code] += 1
    log.warning("handshake refused", extra={"address": address, "code": code, "reason": reason})


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
    try:
        run, identity = native_entry(hub, request.args.get("token"), request.remote_addr or "")
    except Refusal as refusal:
        return _refuse(refusal)
    return upgrade(run, identity)


@bp.route("/ws/echo", websocket=True)
def echo():
    return upgrade(current_hub().serve_echo, ANONYMOUS)


def _refuse(refusal: Refusal) -> Response:
    log_refusal(current_hub(), request.remote_addr or "", refusal.code, refusal.message)
    response = error_response(refusal.code, refusal.message, refusal.status)
    response.headers.update(refusal.headers)
    return response


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
    environ = request.environ
    try:
        key = check_upgrade(hub, lambda name: environ.get("HTTP_" + name.upper().replace("-", "_"), ""))
    except Refusal as refusal:
        return _refuse(refusal)
    sock = environ.get("gunicorn.socket")
    if sock is None:
        return error_response("not_supported", "WebSockets need Gunicorn's gevent worker (see gunicorn.conf.py)", 500)
    adopt(hub, sock, switching_protocols(key, subprotocol), run, identity, request.remote_addr or "", client_id)
    return _SocketTakenOver()


def adopt(
    hub: Hub,
    sock,
    response: bytes,
    run: Callable[[Connection], None],
    identity: Identity,
    address: str,
    client_id: str | None = None,
) -> None:
    """Complete a handshake on Gunicorn's socket and run the connection in a greenlet of its own.

    The connection takes the descriptor away from Gunicorn, which closes its socket object when
    its handler ends. A fresh greenlet starts with a shallow stack: what a parked reader keeps
    is copied from its stack, so an idle connection costs less in it than in Gunicorn's handler.
    """
    sock.sendall(response)
    hub.open(sock, identity, address=address, client_id=client_id).start(run)
