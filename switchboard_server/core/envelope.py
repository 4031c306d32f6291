"""The stored message envelope: what every protocol and the HTTP API publish, and the names they use.

A message is kept as the native JSON push (`{"type":"message","channel","offset","data","from"}`),
built here once per publish and joined around its offset by the broker that assigns it, so one
encoding serves history, every worker and every protocol's codec. The channel, event and
idempotency-key rules live here too, because every entry point (a protocol, the HTTP API,
GraphQL) must refuse the same names in the same words. Nothing here knows a wire protocol.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from switchboard_server.core.errors import ProtocolError

# Letters, digits and a few separators; the prefixes of issue "channel kinds" (private-, presence-)
# fit. Bounded so a name can never be used to make the server hold large keys.
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_\-=@,.;:]{1,128}")


# An idempotency key is the caller's own id for one publish; bounded like a channel name.
MAX_IDEMPOTENCY_KEY = 128


# An event name (as Pusher's protocol names messages), bounded as Pusher bounds it.
MAX_EVENT_NAME = 200


def validate_channel(channel: Any) -> str:
    if not isinstance(channel, str) or not CHANNEL_PATTERN.fullmatch(channel):
        raise ProtocolError(
            "invalid_channel",
            "a channel name is 1-128 characters from A-Z a-z 0-9 and _ - = @ , . ; :",
        )
    return channel


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
