"""The in-process broker's idempotency window, with a plain recorder in place of the hub."""

from __future__ import annotations

import time

from hub.brokers.local import LocalBroker
from hub.config import Config


class Recorder:
    """What the broker hands the hub: (channel, offset) per delivery."""

    def __init__(self) -> None:
        self.channels: dict = {}
        self.delivered: list[tuple[str, int]] = []

    def deliver(self, channel: str, offset: int, payload: bytes, exclude: str = "") -> None:
        self.delivered.append((channel, offset))


def broker(window: float) -> tuple[LocalBroker, Recorder]:
    local = LocalBroker(Config(idempotency_window=window))
    hub = Recorder()
    local.attach(hub)
    return local, hub


def test_a_key_seen_within_the_window_returns_the_first_offset_and_delivers_nothing():
    local, hub = broker(window=60)
    assert [local.publish("c", b"", b"}", "k") for _ in range(3)] == [1, 1, 1]
    assert local.publish("c", b"", b"}", None) == 2
    assert hub.delivered == [("c", 1), ("c", 2)]


def test_a_key_is_forgotten_after_the_window():
    local, hub = broker(window=0.05)
    local.publish("c", b"", b"}", "k")
    time.sleep(0.06)
    local.maintain()
    assert local.publish("c", b"", b"}", "k") == 2
    assert hub.delivered == [("c", 1), ("c", 2)]
