"""The seam's codecs for GraphQL: one per prepared subscription, shared by all its subscribers.

A prepared subscription is a document, an operation and its variables other than the resume
position; every client that sends the same one is a subscriber of one feed. The hub asks a feed
for its frame once per publication (or join/leave): the feed executes the selection set once
with graphql-core against the event, serialises the result once, and hands out `Frames`, which
frame the `next` message for one subscription id the first time that id asks and then give
every subscriber with that id the same bytes. What differs per subscriber, its id, is spliced
into prepared bytes; nothing is executed or serialised per subscriber.
"""

from __future__ import annotations

from typing import Any

import orjson
from graphql import Executor, execute_subscription_event

from switchboard_server.core.codecs import Announcement, Publication
from switchboard_server.protocols.graphql.messages import next_payload_tail
from switchboard_server.transport.connection import Connection
from switchboard_server.transport.frames import encode_frame

_NEXT_HEAD = b'{"id":'


class Frames(dict):
    """One event's `next` message: its frame per JSON-encoded operation id, made on first use."""

    __slots__ = ("tail",)

    def __init__(self, payload: bytes) -> None:
        super().__init__()
        self.tail = next_payload_tail(payload)

    def __missing__(self, encoded_id: bytes) -> bytes:
        frame = self[encoded_id] = encode_frame(_NEXT_HEAD + encoded_id + self.tail)
        return frame


def run(executor: Executor, root: Any) -> bytes:
    """Execute a prepared subscription for one event; the result's JSON."""
    result = execute_subscription_event(executor.build_per_event_executor(root))
    return orjson.dumps(result.formatted)


class OperationSubscriber:
    """One subscription of a connection, as the hub sees a subscriber: it takes a feed's `Frames`
    and queues the frame for its own id. `id` is the connection's (what `exclude` names)."""

    __slots__ = ("id", "conn", "encoded_id")

    def __init__(self, conn: Connection, encoded_id: bytes) -> None:
        self.id = conn.id
        self.conn = conn
        self.encoded_id = encoded_id

    def queue(self, frames: Frames) -> bool:
        return self.conn.queue(frames[self.encoded_id])

    def enqueue(self, frames: Frames) -> None:
        self.conn.enqueue(frames[self.encoded_id])


class MessagesFeed:
    """A prepared `messages` subscription: a `next` per message, carrying its offset and epoch.

    `epoch` is the channel's, as the hub reported it to the latest subscriber.
    """

    __slots__ = ("executor", "epoch", "__weakref__")

    def __init__(self, executor: Executor) -> None:
        self.executor = executor
        self.epoch = ""

    def message_frame(self, publication: Publication) -> Frames:
        event = dict(publication.message())  # shared by every codec: never changed in place
        event["epoch"] = self.epoch
        return Frames(run(self.executor, event))

    def member_frame(self, announcement: Announcement) -> None:
        return None


class PresenceFeed:
    """A prepared `presence` subscription: a `next` per join and leave (the member list that
    starts it is sent by the session to each new subscriber)."""

    __slots__ = ("executor", "__weakref__")

    def __init__(self, executor: Executor) -> None:
        self.executor = executor

    def message_frame(self, publication: Publication) -> None:
        return None

    def member_frame(self, announcement: Announcement) -> Frames:
        message = announcement.message()
        return Frames(run(self.executor, presence_event(message["type"], message["channel"], member=message["member"])))


def presence_event(kind: str, channel: str, members: list | None = None, member: dict | None = None) -> dict:
    """The root value of a PresenceEvent: `kind` is "members", "join" or "leave"."""
    return {"kind": kind.upper(), "channel": channel, "members": members, "member": member}
