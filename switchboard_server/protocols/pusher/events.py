"""The Pusher Channels protocol (version 7)'s events: parsed in, finished WebSocket frames out.

Sans-I/O: nothing here touches a socket, Flask or the broker. Every Pusher message is a JSON object
`{"event", "channel"?, "data"}` whose `data` the server sends as a string (JSON inside JSON).

How messages cross between protocols on one hub:
- Pusher data (from the HTTP API or a client event) that is valid JSON is stored parsed, so native
  clients see JSON; other strings are stored as strings. Pusher clients get it back as a string:
  strings as they are, anything else serialised (compactly, which JSON.parse reads the same).
- A native publish without an event name reaches Pusher clients as `DEFAULT_EVENT`.
- `client-*` events on `presence-` channels carry the sender's `user_id`, as Pusher's do.
"""

from __future__ import annotations

from typing import Any

import orjson

from switchboard_server.transport.frames import encode_frame

DEFAULT_EVENT = "message"
PRESENCE = "presence-"
MAX_EVENT_NAME = 200


class PusherError(Exception):
    """A message refused with Pusher's `pusher:error`: `code` is one of Pusher's (or None, as
    Pusher sends for plain bad input); the connection stays open unless the caller closes it."""

    def __init__(self, code: int | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def stored_data(data: Any) -> Any:
    """What the hub keeps for Pusher `data`: a string holding JSON becomes that JSON."""
    if isinstance(data, str):
        try:
            return orjson.loads(data)
        except orjson.JSONDecodeError:
            return data
    return data


def wire_data(data: Any) -> str:
    """What a Pusher client gets as `data`: a string."""
    return data if isinstance(data, str) else orjson.dumps(data).decode()


def frame(event: str, data: Any, channel: str | None = None, **extra: Any) -> bytes:
    """One server message; `data` is sent as a string (anything else is serialised into one)."""
    message: dict[str, Any] = {"event": event}
    if channel is not None:
        message["channel"] = channel
    message["data"] = wire_data(data)
    message.update(extra)
    return encode_frame(orjson.dumps(message))


def connection_established(socket_id: str, activity_timeout: int) -> bytes:
    return frame("pusher:connection_established", {"socket_id": socket_id, "activity_timeout": activity_timeout})


def error(code: int | None, message: str) -> bytes:
    """`pusher:error`: its `data` is an object, not a string, as pusher-js reads it."""
    return encode_frame(orjson.dumps({"event": "pusher:error", "data": {"code": code, "message": message}}))


def subscription_error(channel: str, kind: str, message: str, status: int) -> bytes:
    """`pusher:subscription_error` on the channel: what pusher-js's `pusher:subscription_error`
    handlers (and Laravel Echo's `.error()`) hear."""
    body = {"type": kind, "error": message, "status": status}
    return encode_frame(orjson.dumps({"event": "pusher:subscription_error", "channel": channel, "data": body}))


def subscription_succeeded(channel: str, members: list[dict] | None = None) -> bytes:
    """`pusher_internal:subscription_succeeded`; for presence channels with the member list."""
    if members is None:
        return frame("pusher_internal:subscription_succeeded", {}, channel)
    hash_ = {member["user"]: member["info"] for member in members}
    presence = {"ids": list(hash_), "hash": hash_, "count": len(hash_)}
    return frame("pusher_internal:subscription_succeeded", {"presence": presence}, channel)


# The event a Pusher channel gets when some of its messages never reached this server; Pusher
# promises no delivery and has no recovery, so the subscription goes on.
MESSAGES_LOST = "switchboard:unrecoverable"


def messages_lost(channel: str, epoch: str, offset: int) -> bytes:
    """`switchboard:unrecoverable` on the channel: messages after `offset` of `epoch` were lost."""
    body = {
        "code": "unrecoverable",
        "epoch": epoch,
        "offset": offset,
        "message": f"messages after offset {offset} of epoch {epoch} were lost on their way to this server",
    }
    return frame(MESSAGES_LOST, body, channel)


PONG = frame("pusher:pong", {})
PING = frame("pusher:ping", {})


def parse(payload: bytes) -> tuple[str, str | None, Any]:
    """A client message's (event, channel, data); `PusherError` for anything else."""
    try:
        message = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise PusherError(None, f"message is not valid JSON: {exc}") from None
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise PusherError(None, 'a message is a JSON object with an "event" name')
    event = message["event"]
    if not 1 <= len(event) <= MAX_EVENT_NAME:
        raise PusherError(None, f"an event name is 1 to {MAX_EVENT_NAME} characters")
    channel = message.get("channel")
    if channel is not None and not isinstance(channel, str):
        raise PusherError(None, '"channel" must be a string')
    return event, channel, message.get("data")
