"""The commands of the `/ws` protocol (see docs/protocol.md): commands in, frames out.

Parsing validates everything the hub relies on, so the hub only ever sees well-formed commands;
every refusal is a `ProtocolError` with a documented code. Encoding returns finished WebSocket
frames, built once and shared by every recipient.
"""

from __future__ import annotations

from typing import Any

import orjson

from switchboard_server.core.envelope import validate_channel, validate_event, validate_idempotency_key
from switchboard_server.core.errors import ProtocolError
from switchboard_server.transport.frames import encode_frame

COMMAND_TYPES = ("subscribe", "unsubscribe", "publish", "presence", "ping", "refresh", "rpc")
# An RPC method's name, as the application registered it; bounded like a channel name.
MAX_METHOD = 128


class Command:
    """A validated client command. `since`/`epoch` only for subscribe; `data`,
    `idempotency_key` and `event` only for publish; `token` for refresh and for a subscription
    token on subscribe; `method` and `data` (its params) for rpc."""

    __slots__ = ("type", "id", "channel", "data", "since", "epoch", "token", "idempotency_key", "event", "method")

    def __init__(
        self,
        type: str,
        id: Any,
        channel: str | None,
        data: Any = None,
        since: int | None = None,
        epoch: str | None = None,
        token: str | None = None,
        idempotency_key: str | None = None,
        event: str | None = None,
        method: str | None = None,
    ):
        self.type = type
        self.id = id
        self.channel = channel
        self.data = data
        self.since = since
        self.epoch = epoch
        self.token = token
        self.idempotency_key = idempotency_key
        self.event = event
        self.method = method


def parse_command(payload: bytes | str) -> Command:
    """Validate one text frame; errors carry the command's `id` when it could be read."""
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"frame is not valid JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_command", 'a command is a JSON object with a "type"')
    command_id = message.get("id")
    try:
        if command_id is not None and (not isinstance(command_id, (int, str)) or isinstance(command_id, bool)):
            command_id = None
            raise ProtocolError("bad_command", '"id" must be a number or a string')
        kind = message.get("type")
        if kind not in COMMAND_TYPES:
            raise ProtocolError(
                "bad_command", f"unknown command type {kind!r}; expected one of {', '.join(COMMAND_TYPES)}"
            )
        channel = None if kind in ("ping", "refresh", "rpc") else validate_channel(message.get("channel"))
        method = message.get("method")
        if kind == "rpc" and (not isinstance(method, str) or not 1 <= len(method) <= MAX_METHOD):
            raise ProtocolError("bad_command", f'rpc needs "method", a string of 1 to {MAX_METHOD} characters')
        token = message.get("token")
        if (token is not None or kind == "refresh") and not isinstance(token, str):
            raise ProtocolError("bad_command", '"token" must be a string')
        since = message.get("since")
        if since is not None and (not isinstance(since, int) or isinstance(since, bool) or since < 0):
            raise ProtocolError("bad_command", '"since" must be a non-negative integer offset')
        epoch = message.get("epoch")
        if epoch is not None and not isinstance(epoch, str):
            raise ProtocolError("bad_command", '"epoch" must be a string')
        if kind == "publish" and "data" not in message:
            raise ProtocolError("bad_command", 'publish needs "data"')
        idempotency_key = validate_idempotency_key(message.get("idempotency_key"))
        event = validate_event(message.get("event"))
    except ProtocolError as error:
        error.id = command_id
        raise
    data = message.get("params") if kind == "rpc" else message.get("data")
    return Command(kind, command_id, channel, data, since, epoch, token, idempotency_key, event, method)


def _frame(value: dict) -> bytes:
    return encode_frame(orjson.dumps(value))


def reply_frame(command_id: Any, result: dict | None = None) -> bytes:
    return _frame({"type": "reply", "id": command_id, "result": result if result is not None else {}})


def error_frame(command_id: Any, code: str, message: str) -> bytes:
    return _frame({"type": "error", "id": command_id, "code": code, "message": message})


def unrecoverable_frame(channel: str, epoch: str, offset: int) -> bytes:
    """The error that ends a subscription whose channel lost messages on their way to this server,
    after `offset` of `epoch`: the client subscribes again with its `since` and `epoch`."""
    return _frame(
        {
            "type": "error",
            "id": None,
            "code": "unrecoverable",
            "channel": channel,
            "epoch": epoch,
            "offset": offset,
            "message": f"messages of {channel!r} after offset {offset} of epoch {epoch} were lost on their way "
            "to this server, and the subscription has ended: subscribe again with since and epoch",
        }
    )


def welcome_frame(client_id: str, user: str, info: Any) -> bytes:
    return _frame({"type": "welcome", "client": client_id, "user": user, "info": info})


def token_expiring_frame(expires: float) -> bytes:
    return _frame({"type": "token_expiring", "expires": expires})
