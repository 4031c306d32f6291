"""The JSON codec of the `/ws` protocol (see docs/protocol.md): commands in, frames out.

Parsing validates everything the hub relies on, so the hub only ever sees well-formed commands;
every refusal is a `ProtocolError` with a documented code. Encoding returns finished WebSocket
frames, built once and shared by every recipient.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from hub.errors import ProtocolError
from hub.frames import encode_frame

# Letters, digits and a few separators; the prefixes of issue "channel kinds" (private-, presence-)
# fit. Bounded so a name can never be used to make the server hold large keys.
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_\-=@,.;:]{1,128}")
COMMAND_TYPES = ("subscribe", "unsubscribe", "publish", "presence", "ping", "refresh")


# An idempotency key is the caller's own id for one publish; bounded like a channel name.
MAX_IDEMPOTENCY_KEY = 128
# An event name (as Pusher's protocol names messages), bounded as Pusher bounds it.
MAX_EVENT_NAME = 200


class Command:
    """A validated client command. `since`/`epoch` only for subscribe; `data`, `key` (the
    idempotency key) and `event` only for publish; `token` for refresh and for a subscription
    token on subscribe."""

    __slots__ = ("type", "id", "channel", "data", "since", "epoch", "token", "key", "event")

    def __init__(
        self,
        type: str,
        id: Any,
        channel: str | None,
        data: Any = None,
        since: int | None = None,
        epoch: str | None = None,
        token: str | None = None,
        key: str | None = None,
        event: str | None = None,
    ):
        self.type = type
        self.id = id
        self.channel = channel
        self.data = data
        self.since = since
        self.epoch = epoch
        self.token = token
        self.key = key
        self.event = event


def validate_channel(channel: Any) -> str:
    if not isinstance(channel, str) or not CHANNEL_PATTERN.fullmatch(channel):
        raise ProtocolError(
            "invalid_channel",
            "a channel name is 1-128 characters from A-Z a-z 0-9 and _ - = @ , . ; :",
        )
    return channel


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
        channel = None if kind in ("ping", "refresh") else validate_channel(message.get("channel"))
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
        key = validate_idempotency_key(message.get("idempotency_key"))
        event = validate_event(message.get("event"))
    except ProtocolError as error:
        error.id = command_id
        raise
    return Command(kind, command_id, channel, message.get("data"), since, epoch, token, key, event)


def validate_idempotency_key(key: Any) -> str | None:
    """None, or a key of 1-128 characters: a retried publish that carries it is delivered once."""
    if key is not None and (not isinstance(key, str) or not 1 <= len(key) <= MAX_IDEMPOTENCY_KEY):
        raise ProtocolError(
            "bad_command", f'"idempotency_key" must be a string of 1 to {MAX_IDEMPOTENCY_KEY} characters'
        )
    return key


def validate_event(event: Any) -> str | None:
    """None, or an event name of 1-200 characters that a message carries to every protocol."""
    if event is not None and (not isinstance(event, str) or not 1 <= len(event) <= MAX_EVENT_NAME):
        raise ProtocolError("bad_command", f'"event" must be a string of 1 to {MAX_EVENT_NAME} characters')
    return event


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


def member_payload(kind: str, channel: str, member: dict) -> bytes:
    """The JSON of a join or leave push."""
    return orjson.dumps({"type": kind, "channel": channel, "member": member})


def presence_notice_payload(channel: str, pushes: bool) -> bytes:
    """The JSON of the push that says join/leave pushes stopped (the channel passed the push
    limit) or start again (it is back within it, and the client should ask for the members)."""
    return orjson.dumps({"type": "presence", "channel": channel, "pushes": pushes})


def message_parts(channel: str, data: Any, sender: str | None, event: str | None = None) -> tuple[bytes, bytes]:
    """A message push as the JSON before and after its offset.

    The broker that assigns the offset (this process, or a script inside Redis) joins
    `head + offset + tail`, so a publish is encoded once for the whole cluster. `"event"` is
    there only when the publisher named one.
    """
    fields = {"data": data, "from": sender} if event is None else {"event": event, "data": data, "from": sender}
    try:
        tail = orjson.dumps(fields)
    except orjson.JSONEncodeError as exc:
        raise ProtocolError("bad_json", f"data cannot be encoded: {exc}") from None
    head = b'{"type":"message","channel":' + orjson.dumps(channel) + b',"offset":'
    return head, b"," + tail[1:]
