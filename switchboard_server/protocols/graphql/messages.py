"""The `graphql-transport-ws` messages (its PROTOCOL.md), sans-I/O: bytes in, checked values out;
values in, finished WebSocket frames out.

Anything the protocol does not define is a `BadMessage`, which the protocol answers by closing
the socket with 4400. Operation ids are JSON-encoded once, when an operation starts, and spliced
into every frame for it from then on.
"""

from __future__ import annotations

from typing import Any

import orjson

from switchboard_server.transport.frames import encode_frame

SUBPROTOCOL = "graphql-transport-ws"

# Close codes, as the protocol defines them.
CLOSE_BAD_REQUEST = 4400
CLOSE_UNAUTHORIZED = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_SUBPROTOCOL = 4406
CLOSE_INIT_TIMEOUT = 4408
CLOSE_DUPLICATE = 4409
CLOSE_TOO_MANY_INITS = 4429

# Longer than any generated id (UUIDs are 36 characters); ids are copied into every frame.
MAX_ID = 128
TYPES = ("connection_init", "ping", "pong", "subscribe", "complete")


class BadMessage(Exception):
    """A message the protocol does not define: close 4400 with `reason`."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Message:
    """A checked client message. `id` for subscribe and complete; `payload` is the message's
    payload object (or None); for subscribe, `query`, `operation_name` and `variables`."""

    __slots__ = ("type", "id", "payload", "query", "operation_name", "variables")

    def __init__(self, type: str, id: str | None = None, payload: dict | None = None) -> None:
        self.type = type
        self.id = id
        self.payload = payload
        self.query = ""
        self.operation_name: str | None = None
        self.variables: dict | None = None


def _optional(value: Any, kind: type, what: str) -> Any:
    if value is not None and not isinstance(value, kind):
        raise BadMessage(
            f"Invalid message received: {what} must be {'an object' if kind is dict else 'a string'} or null"
        )
    return value


def parse_message(data: bytes) -> Message:
    """Check one text message against the protocol; `BadMessage` says what is wrong."""
    try:
        raw = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise BadMessage("Invalid message received: not JSON") from None
    if not isinstance(raw, dict):
        raise BadMessage("Invalid message received: not a JSON object")
    kind = raw.get("type")
    if kind not in TYPES:
        raise BadMessage(f"Invalid message received: unknown type {str(kind)[:40]!r}")
    if kind in ("subscribe", "complete"):
        operation_id = raw.get("id")
        if not isinstance(operation_id, str) or not 1 <= len(operation_id) <= MAX_ID:
            raise BadMessage(f"Invalid message received: {kind} needs an id of 1 to {MAX_ID} characters")
        message = Message(kind, operation_id)
        if kind == "subscribe":
            _subscription(message, raw.get("payload"))
        return message
    return Message(kind, payload=_optional(raw.get("payload"), dict, "payload"))


def _subscription(message: Message, payload: Any) -> None:
    if not isinstance(payload, dict) or not isinstance(payload.get("query"), str):
        raise BadMessage('Invalid message received: subscribe needs a payload with a "query" string')
    message.query = payload["query"]
    message.operation_name = _optional(payload.get("operationName"), str, "operationName")
    message.variables = _optional(payload.get("variables"), dict, "variables")
    _optional(payload.get("extensions"), dict, "extensions")


def encode_id(operation_id: str) -> bytes:
    """An id as it goes into frames: its JSON."""
    return orjson.dumps(operation_id)


def ack_frame(payload: dict) -> bytes:
    return encode_frame(orjson.dumps({"type": "connection_ack", "payload": payload}))


def pong_frame(payload: dict | None) -> bytes:
    return encode_frame(orjson.dumps({"type": "pong"} if payload is None else {"type": "pong", "payload": payload}))


def next_payload_tail(payload: bytes) -> bytes:
    """What follows the id in a `next` message carrying `payload` (an execution result's JSON)."""
    return b',"type":"next","payload":' + payload + b"}"


def next_frame(encoded_id: bytes, payload: bytes) -> bytes:
    return encode_frame(b'{"id":' + encoded_id + next_payload_tail(payload))


def error_frame(encoded_id: bytes, errors: list[dict]) -> bytes:
    return encode_frame(b'{"id":' + encoded_id + b',"type":"error","payload":' + orjson.dumps(errors) + b"}")


def complete_frame(encoded_id: bytes) -> bytes:
    return encode_frame(b'{"id":' + encoded_id + b',"type":"complete"}')
