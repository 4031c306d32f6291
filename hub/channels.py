"""This worker's view of one channel: which of its connections subscribe, and which users they are.

Plain data with no I/O. Offsets and history live in the broker (in this process or in Redis);
what is here is only what this worker needs to fan out and to notice a user's first and last tab.
"""

from __future__ import annotations

from typing import Any

PRESENCE_PREFIX = "presence-"


class Channel:
    """Local subscribers, live or catching up, and local member counts."""

    __slots__ = ("name", "announces", "subscribers", "catching_up", "members")

    def __init__(self, name: str) -> None:
        self.name = name
        # Members are tracked on every channel, but join/leave are pushed only on `presence-`
        # channels: on a broadcast channel with N subscribers they would cost N^2 frames.
        self.announces = name.startswith(PRESENCE_PREFIX)
        # Live subscribers (values unused): insertion-ordered, so fan-out follows subscription order.
        self.subscribers: dict[Any, None] = {}
        # Subscribers whose history is being read, each with the (offset, frame) pairs that
        # arrive meanwhile, so nothing falls in between; they turn live when it is sent.
        self.catching_up: dict[Any, list] = {}
        # user -> [number of this worker's connections of that user, the user's presence info]
        self.members: dict[str, list] = {}

    def add_member(self, user: str, info: Any) -> bool:
        """Count one more connection of `user`; True when the user just arrived on this worker."""
        entry = self.members.get(user)
        if entry is None:
            self.members[user] = [1, info]
            return True
        entry[0] += 1
        return False

    def remove_member(self, user: str) -> dict | None:
        """Count one connection of `user` less; the member dict when the user just left this worker."""
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
