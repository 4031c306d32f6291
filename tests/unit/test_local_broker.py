"""The in-process broker's idempotency window, with a plain listener in place of the hub."""

from __future__ import annotations

import time

from switchboard_server.brokers.local import LocalBroker
from switchboard_server.core.config import Config


class Recorder:
    """A broker listener (brokers.base.Receiver) holding no channels: (channel, offset) per delivery."""

    def __init__(self) -> None:
        self.delivered: list[tuple[str, int]] = []

    def local_channels(self) -> set[str]:
        return set()

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


def test_a_channel_whose_history_was_forgotten_starts_a_new_epoch():
    """Offsets start again from 1 then, so offsets of before must not pass for current ones
    (a client resuming with them is told so by the epoch, and starts over)."""
    local = LocalBroker(Config(history_ttl=0.01))
    local.attach(Recorder())
    local.publish("c", b"", b"}", None)
    before = local.history("c", None)
    time.sleep(0.02)
    local.maintain()
    assert local.publish("c", b"", b"}", None) == 1
    after = local.history("c", 0)
    assert after.epoch != before.epoch and after.offset == 1


def test_reading_a_channel_fixes_its_epoch_before_its_first_publish():
    local = LocalBroker(Config())
    local.attach(Recorder())
    read = local.history("fresh", None)
    local.publish("fresh", b"", b"}", None)
    assert local.history("fresh", None).epoch == read.epoch
