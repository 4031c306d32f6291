"""The broker interface, what a broker calls back on its worker, and the types every broker shares.

A broker never sees the Hub class: it is handed a `Receiver`, the few calls a broker makes on the
worker's side (deliver, announce, and what this worker holds), so brokers depend on this file and
the core's plain types only, and a new broker can be written against one screen of interface.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Protocol

from switchboard_server.core.codecs import Gap
from switchboard_server.core.errors import ProtocolError

log = logging.getLogger("switchboard.broker")


class BrokerUnavailable(ProtocolError):
    """The broker cannot be reached: nothing was published or read; the client may retry."""

    def __init__(self, reason: str) -> None:
        super().__init__("unavailable", f"message broker unavailable, try again: {reason}")


@dataclass
class History:
    """Where a channel stands, and (when asked for) the messages after an offset.

    `complete` is False when history no longer reaches back to the offset asked for.
    """

    epoch: str
    offset: int
    entries: list[tuple[int, bytes]] = field(default_factory=list)
    complete: bool = True


def reaches_back(since: int, last: int, entries: list[tuple[int, bytes]]) -> bool:
    """Whether `entries` (what is held after `since`) cover everything after `since` up to `last`."""
    if since >= last:
        return since == last
    return bool(entries) and entries[0][0] == since + 1


class Receiver(Protocol):
    """What a broker calls back on its worker (the hub implements it)."""

    def deliver(self, channel: str, offset: int, payload: bytes, exclude: str = "") -> None:
        """A stored message for this worker's subscribers of `channel`; never blocks."""

    def announce(self, channel: str, payload: bytes, exclude: str) -> None:
        """A join or leave push for this worker's subscribers of `channel`, except `exclude`'s."""

    def local_channels(self) -> Collection[str]:
        """The channels this worker holds (subscribed, or being subscribed to)."""

    def local_channel_counts(self) -> dict[str, int]:
        """Live subscribers per channel on this worker (channels with none left out)."""

    def local_subscriber_count(self, channel: str) -> int:
        """Live subscribers of `channel` on this worker."""

    def local_members(self, channel: str) -> list[dict]:
        """The members (`{"user", "info"}`) this worker's subscriptions make present on `channel`."""

    def local_member_count(self, channel: str) -> int:
        """How many members this worker's subscriptions make present on `channel`."""

    def messages_lost(self, gap: Gap) -> None:
        """Messages of `gap.channel` never reached this worker: tell its subscribers, before
        anything published after them is delivered."""

    def broker_reconnected(self) -> None:
        """The broker is reachable again after an outage (counted for the metrics)."""


class BrokerObserver(Protocol):
    """Told of what happens once per cluster, by the one worker whose broker saw it happen.

    Only a broker knows these moments: with Redis, a channel's first subscriber anywhere and its
    last, and a user's first and last subscription anywhere, are decided inside Redis scripts, and
    the members of a dead worker are removed by whichever worker reaps them. Each is reported to the
    observers of exactly one worker (a worker killed before it reports loses it: at most once).
    Members are reported on every channel, as the hub tracks them; `presence-` is the observer's
    business. Calls come from the broker's own code paths (a subscription, the count writer, the
    heartbeat): an observer must queue its work, never block, and never raise.
    """

    def channel_occupied(self, channel: str) -> None: ...

    def channel_vacated(self, channel: str) -> None: ...

    def member_added(self, channel: str, member: dict) -> None: ...

    def member_removed(self, channel: str, member: dict) -> None: ...


class Observers:
    """The observers of one broker. One that raises is logged; the broker and the others go on."""

    __slots__ = ("_observers",)

    def __init__(self) -> None:
        self._observers: list[BrokerObserver] = []

    def add(self, observer: BrokerObserver) -> None:
        self._observers.append(observer)

    def notify(self, event: str, *args: object) -> None:
        """Call `event` (a BrokerObserver method name) on every observer."""
        for observer in self._observers:
            try:
                getattr(observer, event)(*args)
            except Exception:
                log.exception("broker observer %r failed on %s", observer, event)


class Broker(Protocol):
    """What the hub needs from a broker. Delivery comes back through the `Receiver` it is attached
    to; a broker that finds it missed messages of a channel says so with `messages_lost(gap)` before
    delivering anything after them, so no subscriber sees offsets jump or restart unannounced.

    `observers` are told of cluster-wide occupancy and membership changes (BrokerObserver).
    """

    observers: Observers

    def attach(self, receiver: Receiver) -> None:
        """Remember the worker's side to deliver to."""

    def publish(
        self, channel: str, head: bytes, tail: bytes, idempotency_key: str | None = None, exclude: str = ""
    ) -> int:
        """Assign the next offset, store `head + offset + tail` in history, deliver it everywhere
        except to the connection `exclude` names.

        With an `idempotency_key` already used on `channel` within the window, do nothing and
        return the offset that publish got.
        """

    def publish_many(self, messages: list[tuple[str, bytes, bytes, str | None, str]]) -> list[int | BrokerUnavailable]:
        """`publish` for each (channel, head, tail, idempotency key, exclude), in order, sent together where the
        broker can (one Redis round trip); each result is the offset, or why it failed."""

    def history(self, channel: str, since: int | None, limit: int | None = None) -> History:
        """The channel's epoch and last offset, and with `since`, the messages held after it."""

    def listen(self, channel: str) -> None:
        """This worker has subscribers on `channel`: start receiving its messages (blocks until live)."""

    def unlisten(self, channel: str) -> None:
        """This worker has no subscribers left on `channel`."""

    def join(self, channel: str, member: dict, exclude: str) -> None:
        """A user's first connection on this worker joined; announce if it is new cluster-wide
        (the join, or the notice that pushes stop: `hub.channels.member_push`)."""

    def leave(self, channel: str, member: dict) -> None:
        """A user's last connection on this worker left; announce if it was the last anywhere
        (the leave, or the notice that pushes resume: `hub.channels.member_push`)."""

    def count(self, channel: str) -> None:
        """The number of this worker's subscribers on `channel` changed (for `channel_counts`)."""

    def channel_counts(self) -> dict[str, int]:
        """Subscribers per channel across every worker (channels with none are left out)."""

    def members(self, channel: str) -> list[dict]:
        """Every member of the channel, whichever worker their connections are on."""

    def member_count(self, channel: str) -> int:
        """How many members the channel has, whichever worker their connections are on."""

    def maintain(self) -> None:
        """Periodic upkeep (expiry, heartbeats); called by the hub every few seconds."""

    def problem(self) -> str | None:
        """Why the broker is not working right now, or None when it is."""

    def close(self) -> None:
        """Let go of the broker's resources at shutdown."""
