"""The WebSocket handshake, as plain values: check an upgrade, answer it, hand the socket over.

Shared by the Flask routes (routes/websocket.py), which answer handshakes through Gunicorn and
Flask, and by Switchboard's Gunicorn worker (transport/worker.py), which answers the ones it can
before either; both make the same decisions with these functions. Nothing here knows a protocol,
the hub or Flask: what runs the connection afterwards is handed in.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

from switchboard_server.transport.connection import Connection
from switchboard_server.transport.frames import accept_key

log = logging.getLogger("switchboard.handshake")


@dataclass(frozen=True)
class Handshake:
    """A WebSocket handshake as plain values, however it arrived (Flask's request, or the worker's
    own parse of the head): what a protocol's entry decides on. Header names are lower-case."""

    path: str
    args: dict[str, str]
    headers: dict[str, str]
    address: str


class Refusal(Exception):
    """A handshake refused before the upgrade: an HTTP status, and the headers it needs."""

    def __init__(self, code: str, message: str, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.headers = headers or {}


def check_upgrade(allowed_origins: tuple[str, ...], header: Callable[[str], str]) -> str:
    """The client's Sec-WebSocket-Key, once the request is a WebSocket upgrade from an allowed
    Origin; `header(name)` reads a request header ("" when absent)."""
    if "websocket" not in header("Upgrade").lower() or "upgrade" not in header("Connection").lower():
        raise Refusal("upgrade_required", "this route speaks WebSocket only", 426, {"Upgrade": "websocket"})
    if header("Sec-WebSocket-Version") != "13":
        raise Refusal(
            "upgrade_required", "only WebSocket version 13 is supported", 426, {"Sec-WebSocket-Version": "13"}
        )
    ws_key = header("Sec-WebSocket-Key")
    try:
        valid_key = len(base64.b64decode(ws_key, validate=True)) == 16
    except binascii.Error:
        valid_key = False
    if not valid_key:
        raise Refusal("bad_request", "Sec-WebSocket-Key must be 16 bytes in base64", 400)
    origin = header("Origin")
    if origin and allowed_origins and origin not in allowed_origins:
        raise Refusal("forbidden", f"origin {origin!r} is not allowed", 403)
    return ws_key


def switching_protocols(ws_key: str, subprotocol: str | None = None) -> bytes:
    """The 101 response that completes a handshake (with the subprotocol the route agreed to)."""
    agreed = b"Sec-WebSocket-Protocol: " + subprotocol.encode("ascii") + b"\r\n" if subprotocol else b""
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + accept_key(ws_key).encode("ascii") + b"\r\n" + agreed + b"\r\n"
    )


def log_refusal(counters: Counter[str], address: str, code: str, reason: str) -> None:
    counters["refused_" + code] += 1
    log.warning("handshake refused", extra={"address": address, "code": code, "reason": reason})


def adopt(
    sock: socket.socket,
    response: bytes,
    open_connection: Callable[[socket.socket], Connection],
    run: Callable[[Connection], None],
) -> None:
    """Complete a handshake on Gunicorn's socket and run the connection in a greenlet of its own.

    `open_connection(sock)` adopts the socket (the hub's `open`); the connection takes the
    descriptor away from Gunicorn, which closes its socket object when its handler ends. A fresh
    greenlet starts with a shallow stack: what a parked reader keeps is copied from its stack, so
    an idle connection costs less in it than in Gunicorn's handler.
    """
    sock.sendall(response)
    open_connection(sock).start(run)
