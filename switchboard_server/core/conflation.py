"""Conflation: a subscriber that falls behind on a conflated channel gets the latest message per key.

On a channel whose every message is the whole state of something (a price, a score, a cursor), a
consumer that cannot keep up wants the latest value, not a queue of stale ones, and not to be cut
off as a slow consumer (1008). While a connection keeps up, every message is queued as on any
channel. Once it lags (`Connection.lagging`: a write still pending, or half its queue limit
queued), what its conflated channels carry is held here instead, one frame per subscription and
key, each newer message replacing the one before; and once a frame is held for a subscription,
the later ones wait behind it, so a key's values never go out of order. Every window the
connection is looked at again, and once it has caught up the held frames are queued, oldest
offset first. A conflated subscriber's offsets therefore skip the messages it was spared.

The same rule serves subscribes: a position replayed on a conflated channel, and the latest
value of a latest-value channel, are the latest message per key among those held
(`latest_per_key`), not the full history.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import gevent

from switchboard_server.core.codecs import Publication, Subscriber
from switchboard_server.core.namespaces import Namespace
from switchboard_server.transport.connection import Connection


def latest_per_key(publications: list[Publication], namespace: Namespace) -> list[Publication]:
    """The last publication of each conflation key (one for the whole channel), oldest first."""
    latest: dict[Any, Publication] = {}
    for publication in publications:
        key = namespace.key_of(publication.message().get("data"))
        latest.pop(key, None)  # re-inserted last, so the order stays the offsets'
        latest[key] = publication
    return list(latest.values())


class _Held:
    """What one lagging connection has been spared so far, and its releaser."""

    __slots__ = ("conn", "frames", "subscriptions", "releaser")

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        # (subscriber, channel, key) -> (subscriber, frame): the latest frame of each, in the order
        # of their offsets (a newer frame is moved to the end).
        self.frames: dict[tuple, tuple[Subscriber, Any]] = {}
        # (subscriber, channel) with a frame held: their next frames wait too, to keep the order.
        self.subscriptions: set[tuple[Subscriber, str]] = set()
        self.releaser: gevent.Greenlet | None = None


class Conflation:
    """The held frames of every lagging connection of a worker; it owns their releasers."""

    def __init__(self, counters: Counter[str]) -> None:
        self._held: dict[str, _Held] = {}
        self._counters = counters  # the hub's

    @property
    def holding(self) -> dict[str, _Held]:
        """Connection id -> what is held for it, for the fan-out's one look per subscriber: only
        a connection in here, or one that lags, needs `offer`."""
        return self._held

    def offer(
        self, conn: Connection, subscriber: Subscriber, publication: Publication, frame: Any, namespace: Namespace
    ) -> bool:
        """Hold `frame` rather than queue it, if `conn` lags or holds one for this subscription
        already; True when held (the caller then does not queue it)."""
        held = self._held.get(conn.id)
        subscription = (subscriber, publication.channel)
        if held is None:
            if not conn.lagging():
                return False
            held = self._held[conn.id] = _Held(conn)
            held.releaser = gevent.spawn(self._release_when_caught_up, held, namespace.conflation_window)
        elif subscription not in held.subscriptions and not conn.lagging():
            return False
        slot = (subscriber, publication.channel, namespace.key_of(publication.message().get("data")))
        if held.frames.pop(slot, None) is not None:
            self._counters["messages_conflated"] += 1
        held.frames[slot] = (subscriber, frame)
        held.subscriptions.add(subscription)
        return True

    def _release_when_caught_up(self, held: _Held, window: float) -> None:
        """Once a window, see whether the connection caught up; then queue what it holds."""
        conn = held.conn
        while True:
            gevent.sleep(window)
            if conn.closing or not conn.lagging():
                break
        if self._held.get(conn.id) is held:
            del self._held[conn.id]
        if conn.closing:
            return
        for subscriber, frame in held.frames.values():
            subscriber.enqueue(frame)
        self._counters["out_message"] += len(held.frames)

    def drop(self, conn: Connection, subscriber: Subscriber, channel: str) -> None:
        """Forget what is held for a subscription that ended: nothing may follow its end."""
        held = self._held.get(conn.id)
        if held is None or (subscriber, channel) not in held.subscriptions:
            return
        held.subscriptions.discard((subscriber, channel))
        for slot in [slot for slot in held.frames if slot[0] is subscriber and slot[1] == channel]:
            del held.frames[slot]

    def forget(self, conn: Connection) -> None:
        """A connection closed: stop its releaser and let go of its frames."""
        held = self._held.pop(conn.id, None)
        if held is not None and held.releaser is not None:
            held.releaser.kill(block=False)

    def stop(self) -> None:
        for held in tuple(self._held.values()):
            self.forget(held.conn)
