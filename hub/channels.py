"""One channel's state: its subscribers, its presence members and its history ring.

Plain data with no I/O. Offsets increase by one per publish and, with the hub's epoch, let a
client that reconnects ask for exactly what it missed.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

PRESENCE_PREFIX = "presence-"


class Channel:
    """Subscribers (connections), members (users, counted per connection) and recent frames."""

    __slots__ = ("name", "announces", "subscribers", "members", "history", "last_offset", "last_active")

    def __init__(self, name: str, history_size: int) -> None:
        self.name = name
        # Members are tracked on every channel, but join/leave are pushed only on `presence-`
        # channels: on a broadcast channel with N subscribers they would cost N^2 frames.
        self.announces = name.startswith(PRESENCE_PREFIX)
        # Insertion-ordered, so fan-out follows subscription order; values unused.
        self.subscribers: dict[Any, None] = {}
        # user -> [number of this user's connections subscribed, the user's presence info]
        self.members: dict[str, list] = {}
        self.history: deque[tuple[int, bytes]] = deque(maxlen=history_size)
        self.last_offset = 0
        self.last_active = 0.0

    def append(self, build_frame: Callable[[int], bytes]) -> tuple[int, bytes]:
        """Store the next message; the frame is built for its offset before the offset is taken."""
        offset = self.last_offset + 1
        frame = build_frame(offset)
        self.last_offset = offset
        if self.history.maxlen:
            self.history.append((offset, frame))
        return offset, frame

    def since(self, offset: int) -> tuple[list[bytes], bool]:
        """Frames after `offset` still held, and whether they reach back without a gap."""
        if offset >= self.last_offset:
            return [], offset == self.last_offset
        oldest = self.history[0][0] if self.history else self.last_offset + 1
        complete = offset + 1 >= oldest
        return [frame for number, frame in self.history if number > offset], complete

    def add_member(self, user: str, info: Any) -> bool:
        """Count one more connection of `user`; True when the user just joined."""
        entry = self.members.get(user)
        if entry is None:
            self.members[user] = [1, info]
            return True
        entry[0] += 1
        return False

    def remove_member(self, user: str) -> dict | None:
        """Count one connection of `user` less; the member dict when the user just left."""
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
