"""A token bucket: how a connection's messages and bytes per second are held to a rate.

Bursts up to one second's worth pass; beyond that each message is refused until the bucket
refills. Refusals are counted so the hub can tell a burst from sustained abuse.
"""

from __future__ import annotations

import time


class TokenBucket:
    """Messages and bytes per second, with a burst of one second's worth of each."""

    __slots__ = ("_messages_rate", "_bytes_rate", "_messages", "_bytes", "_stamp", "refused")

    def __init__(self, messages_per_second: float, bytes_per_second: float) -> None:
        self._messages_rate = messages_per_second
        self._bytes_rate = bytes_per_second
        self._messages = messages_per_second
        self._bytes = bytes_per_second
        self._stamp = time.monotonic()
        # Refusals since the last message that passed.
        self.refused = 0

    def take(self, size: int) -> bool:
        """Spend one message and `size` bytes; False (and one more refusal) when over the rate."""
        now = time.monotonic()
        elapsed = now - self._stamp
        self._stamp = now
        self._messages = min(self._messages_rate, self._messages + elapsed * self._messages_rate)
        self._bytes = min(self._bytes_rate, self._bytes + elapsed * self._bytes_rate)
        if self._messages < 1 or self._bytes < size:
            self.refused += 1
            return False
        self._messages -= 1
        self._bytes -= size
        self.refused = 0
        return True
