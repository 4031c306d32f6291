"""The in-process broker: offsets, history and presence for one worker, no Redis needed.

Publishing assigns the offset, keeps the message in a bounded ring and delivers it at once, all
without yielding, so a subscriber reading history can never miss or repeat a message. This worker
is the whole cluster, so its observers hear of every first and last subscriber and member here.
"""

from __future__ import annotations

import secrets
import time
from collections import deque

from switchboard_server.brokers.base import History, Observers, Receiver, reaches_back
from switchboard_server.core.channels import PUSH_CHANGE, PUSH_NOTICE, member_push
from switchboard_server.core.config import Config
from switchboard_server.core.envelope import member_payload, presence_notice_payload
from switchboard_server.core.namespaces import Namespaces


class _Ring:
    """One channel's recent messages, its last offset, its epoch, and the idempotency keys of its
    window."""

    __slots__ = ("entries", "last_offset", "last_active", "keys", "epoch", "ttl")

    def __init__(self, size: int, ttl: float) -> None:
        # New with every ring: offsets start again from 1 when a worker restarts or a channel's
        # history is forgotten, so a client holding offsets from before must see they are void.
        self.epoch = secrets.token_hex(4)
        self.entries: deque[tuple[int, bytes]] = deque(maxlen=size)
        self.last_offset = 0
        self.last_active = time.monotonic()
        self.ttl = ttl  # the channel's namespace's history TTL
        # idempotency key -> (offset, when it was used), oldest first, so expiry stops early.
        self.keys: dict[str, tuple[int, float]] = {}


class LocalBroker:
    """A broker for a single worker: the hub's own channels are the whole truth."""

    def __init__(self, config: Config, namespaces: Namespaces | None = None) -> None:
        # History size and TTL are per channel, from its namespace.
        self._namespaces = namespaces or Namespaces(config)
        self._key_window = config.idempotency_window
        self._push_limit = config.presence_push_limit
        self._rings: dict[str, _Ring] = {}
        self._receiver: Receiver | None = None
        self.observers = Observers()
        self._occupied: set[str] = set()  # channels with a live subscriber, for the observers

    def attach(self, receiver: Receiver) -> None:
        self._receiver = receiver

    def _ring(self, channel: str) -> _Ring:
        ring = self._rings.get(channel)
        if ring is None:
            namespace = self._namespaces.of(channel)
            ring = self._rings[channel] = _Ring(namespace.history_size, namespace.history_ttl)
        return ring

    def publish(
        self, channel: str, head: bytes, tail: bytes, idempotency_key: str | None = None, exclude: str = ""
    ) -> int:
        ring = self._ring(channel)
        now = time.monotonic()
        if idempotency_key is not None:
            seen = ring.keys.get(idempotency_key)
            if seen is not None and now - seen[1] < self._key_window:
                return seen[0]
        offset = ring.last_offset = ring.last_offset + 1
        payload = head + b"%d" % offset + tail
        if ring.entries.maxlen:
            ring.entries.append((offset, payload))
        ring.last_active = now
        if idempotency_key is not None:
            ring.keys.pop(idempotency_key, None)  # re-inserted last, so the dict stays oldest first
            ring.keys[idempotency_key] = (offset, now)
        self._receiver.deliver(channel, offset, payload, exclude)
        return offset

    def publish_many(self, messages: list[tuple[str, bytes, bytes, str | None, str]]) -> list[int]:
        return [self.publish(*message) for message in messages]

    def history(self, channel: str, since: int | None, limit: int | None = None) -> History:
        # A read creates the ring too, so the epoch it reports is the one later publishes carry.
        ring = self._ring(channel)
        last = ring.last_offset
        if since is None:
            return History(ring.epoch, last)
        entries = [entry for entry in ring.entries if entry[0] > since]
        complete = reaches_back(since, last, entries)
        return History(ring.epoch, last, entries[:limit] if limit is not None else entries, complete)

    def listen(self, channel: str) -> None:
        """Nothing to do: every publish in this process reaches the hub directly."""

    def unlisten(self, channel: str) -> None:
        """Nothing to do."""

    def join(self, channel: str, member: dict, exclude: str) -> None:
        # The hub counted the member in already.
        self._announce("join", channel, member, self.member_count(channel), exclude)
        self.observers.notify("member_added", channel, member)

    def leave(self, channel: str, member: dict) -> None:
        # The hub took the member out already: the rule counts it in.
        self._announce("leave", channel, member, self.member_count(channel) + 1, "")
        self.observers.notify("member_removed", channel, member)

    def _announce(self, kind: str, channel: str, member: dict, members: int, exclude: str) -> None:
        """Push the join or leave, or the notice that pushes stop or resume (`member_push`)."""
        push = member_push(members, self._push_limit)
        if push == PUSH_CHANGE:
            self._receiver.announce(channel, member_payload(kind, channel, member), exclude)
        elif push == PUSH_NOTICE:
            self._receiver.announce(channel, presence_notice_payload(channel, kind == "leave"), exclude)

    def count(self, channel: str) -> None:
        """The hub's own channels are the count; tell the observers when one gains its first live
        subscriber or loses its last."""
        occupied = self._receiver.local_subscriber_count(channel) > 0
        if occupied and channel not in self._occupied:
            self._occupied.add(channel)
            self.observers.notify("channel_occupied", channel)
        elif not occupied and channel in self._occupied:
            self._occupied.discard(channel)
            self.observers.notify("channel_vacated", channel)

    def channel_counts(self) -> dict[str, int]:
        return self._receiver.local_channel_counts()

    def members(self, channel: str) -> list[dict]:
        return self._receiver.local_members(channel)

    def member_count(self, channel: str) -> int:
        return self._receiver.local_member_count(channel)

    def maintain(self) -> None:
        """Forget expired idempotency keys, and the history of channels nobody subscribes to once
        it is older than the TTL."""
        now = time.monotonic()
        key_cutoff = now - self._key_window
        for name, ring in tuple(self._rings.items()):
            keys = ring.keys
            for key, (_offset, used) in tuple(keys.items()):
                if used >= key_cutoff:
                    break
                del keys[key]
            # A ring also keeps the keys of its last publishes: never drop it before they expire.
            if ring.last_active < now - ring.ttl and not keys and name not in self._receiver.local_channels():
                del self._rings[name]

    def problem(self) -> str | None:
        return None

    def close(self) -> None:
        """Nothing to release."""
