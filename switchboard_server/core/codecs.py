"""The seam between the hub and the wire protocols: a publication is framed once per codec.

A channel's subscribers are grouped by codec. When a message or a join/leave arrives, the hub
asks each codec present on the channel for its frame once, and hands that same object to every
subscriber of that codec with `subscriber.enqueue(frame)`. Whatever differs per subscriber (a
GraphQL subscription id) is spliced in by the subscriber into the prepared bytes; nothing is
serialised or executed per subscriber. The native codec's frame is the broker's payload framed
as it is, so the native protocol pays nothing for the others being there.

Codecs are sans-I/O: values in, bytes out. They never touch a socket, Flask or the broker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson


class Publication:
    """One message as the brokers carry it: the native JSON push (docs/protocol.md), which other
    codecs read with `message()`, parsed at most once however many codecs ask.

    `exclude` is a connection id that must not receive it (Pusher's `socket_id`), or "".
    """

    __slots__ = ("channel", "offset", "payload", "exclude", "_message")

    def __init__(self, channel: str, offset: int, payload: bytes, exclude: str = "") -> None:
        self.channel = channel
        self.offset = offset
        self.payload = payload
        self.exclude = exclude
        self._message: dict | None = None

    def message(self) -> dict:
        """`{"type":"message","channel","offset","data","from"}`, plus `"event"` when it has one."""
        if self._message is None:
            self._message = orjson.loads(self.payload)
        return self._message


# How a presence notice's payload starts (protocols/native/commands.py `presence_notice_payload`, and the Redis
# broker's scripts): `{"type":"presence","channel":C,"pushes":BOOL}`.
NOTICE_PREFIX = b'{"type":"presence",'


class Announcement:
    """A member joining or leaving a channel: `payload` is the native `join`/`leave` push; or a
    presence notice, that such pushes stop or resume on the channel (`is_notice`)."""

    __slots__ = ("channel", "payload", "exclude", "pushed", "_message")

    def __init__(self, channel: str, payload: bytes, exclude: str = "") -> None:
        self.channel = channel
        self.payload = payload
        # The connection whose subscription caused a join: it is not told about itself.
        self.exclude = exclude
        # Whether the channel's namespace pushes join/leave on every channel (`join_leave`), not
        # only where a protocol pushes them by itself (on presence- channels).
        self.pushed = False
        self._message: dict | None = None

    @property
    def is_notice(self) -> bool:
        return self.payload.startswith(NOTICE_PREFIX)

    def message(self) -> dict:
        """`{"type":"join"|"leave","channel","member":{"user","info"}}`."""
        if self._message is None:
            self._message = orjson.loads(self.payload)
        return self._message


@dataclass(frozen=True)
class Gap:
    """Messages of `channel` that never reached this worker: those after `offset` of `epoch` (the
    last one it delivered), up to where the channel stands now, in `current_epoch`. A different
    `current_epoch` means the channel's history was lost (Redis came back without its data), so
    the offsets after the gap start again."""

    channel: str
    epoch: str
    offset: int
    current_epoch: str


class Codec(Protocol):
    """How one wire protocol (or one prepared GraphQL document) frames what a channel carries.

    Each returns what its subscribers' `enqueue` takes (for most, finished frame bytes), or None
    when its subscribers do not get this kind of event at all. A codec is asked to frame presence
    notices (`Announcement.is_notice`) only if it has a true `notices` attribute.
    """

    def message_frame(self, publication: Publication) -> Any: ...

    def member_frame(self, announcement: Announcement) -> Any: ...


class Subscriber(Protocol):
    """One subscription's receiving end: a connection itself, or a protocol's subscription on one.

    `id` is the connection's id, which `exclude` names.
    """

    id: str

    def queue(self, frame: Any) -> bool:
        """Append without writing (the hub flushes the connection after replaying history)."""

    def enqueue(self, frame: Any) -> None:
        """Append and have the flusher write it; never blocks."""


class Subscription:
    """What a connection holds for one of its subscriptions, so closing it can undo each.

    `member` is the user it made present on the channel: the connection's own, or for Pusher
    presence channels the one the application's auth endpoint signed.
    """

    __slots__ = ("channel", "codec", "subscriber", "member")

    def __init__(self, channel: str, codec: Codec, subscriber: Subscriber, member: dict) -> None:
        self.channel = channel
        self.codec = codec
        self.subscriber = subscriber
        self.member = member
