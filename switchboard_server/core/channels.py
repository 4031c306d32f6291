"""This worker's view of one channel: its subscribers, grouped by codec, and which users they are.

Plain data with no I/O. Offsets and history live in the broker (in this process or in Redis);
what is here is only what this worker needs to fan out and to notice a user's first and last tab.
"""

from __future__ import annotations

from typing import Any

from switchboard_server.core.codecs import Codec, Subscriber
from switchboard_server.core.namespaces import PRESENCE_CHANNELS, Namespace

PRESENCE_PREFIX = PRESENCE_CHANNELS

# What a join or leave sends to the channel's other subscribers (`member_push`).
PUSH_CHANGE = "change"  # the join or leave itself
PUSH_NOTICE = "notice"  # that pushes stop (a join past the limit) or resume (a leave back within it)


def member_push(members: int, limit: int) -> str | None:
    """What a join or leave pushes, by the channel's member count with that member in it.

    Join/leave go to every subscriber, so N members arriving cost N^2 frames: they are pushed
    only while the channel has at most `limit` members (0: never). Crossing the limit, either
    way, pushes one notice instead, so a member whose list goes stale knows it. The Redis
    broker's scripts apply the same rule to the cluster-wide count.
    """
    if limit <= 0:
        return None
    if members <= limit:
        return PUSH_CHANGE
    return PUSH_NOTICE if members == limit + 1 else None


def pushes_members(members: int, limit: int) -> bool:
    """Whether join/leave are pushed on a channel of `members` now."""
    return 0 < limit and members <= limit


class Channel:
    """Local subscribers, live (per codec) or catching up, and local member counts."""

    __slots__ = ("name", "namespace", "codecs", "catching_up", "ahead", "delivered", "members")

    def __init__(self, name: str, namespace: Namespace) -> None:
        self.name = name
        self.namespace = namespace
        # Live subscribers per codec (values unused): insertion-ordered, so fan-out follows
        # subscription order. A codec with no subscribers left is removed.
        self.codecs: dict[Codec, dict[Subscriber, None]] = {}
        # Subscribers whose history is being read, each with the publications and announcements
        # that arrive meanwhile, so nothing falls in between; they turn live when it is sent.
        self.catching_up: dict[Subscriber, list] = {}
        # The last offset the broker delivered here, and the live subscribers whose history went
        # further (to the offset given): the broker's copies of those messages may still be on
        # their way, and each is skipped for them (Hub.subscribe, Hub.deliver).
        self.delivered = 0
        self.ahead: dict[Subscriber, int] = {}
        # user -> [number of this worker's subscriptions of that user, the user's presence info]
        self.members: dict[str, list] = {}

    def add_subscriber(self, codec: Codec, subscriber: Subscriber) -> None:
        subscribers = self.codecs.get(codec)
        if subscribers is None:
            subscribers = self.codecs[codec] = {}
        subscribers[subscriber] = None

    def remove_subscriber(self, codec: Codec, subscriber: Subscriber) -> None:
        subscribers = self.codecs.get(codec)
        if subscribers is None:
            return
        subscribers.pop(subscriber, None)
        if not subscribers:
            del self.codecs[codec]

    def subscriber_count(self) -> int:
        """Live subscribers over every codec."""
        return sum(len(subscribers) for subscribers in self.codecs.values())

    def is_empty(self) -> bool:
        return not self.codecs and not self.catching_up

    def add_member(self, user: str, info: Any) -> bool:
        """Count one more subscription of `user`; True when the user just arrived on this worker."""
        entry = self.members.get(user)
        if entry is None:
            self.members[user] = [1, info]
            return True
        entry[0] += 1
        return False

    def remove_member(self, user: str) -> dict | None:
        """Count one subscription of `user` less; the member dict when the user just left this worker."""
        entry = self.members.get(user)
        if entry is None:
            return None
        entry[0] -= 1
        if entry[0] > 0:
            return None
        del self.members[user]
        return {"user": user, "info": entry[1]}

    def member_list(self) -> list[dict]:
        return [{"user": user, "info": entry[1]} for user, entry in self.members.items()]
