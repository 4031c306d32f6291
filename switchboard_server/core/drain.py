"""Draining a worker before it stops, so a deploy is not a reconnect storm.

A worker that closed all its connections at once would send them all to the other instances in
the same second. Draining closes them in batches spread evenly over a window instead, and asks
each batch to come back within the gap between two batches: each client picks a random moment in
that gap (full jitter), so the other instances see an even rate of handshakes over the window,
not a spike (Phoenix drains in batches too; Centrifugo relies on the clients' jitter alone).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DrainPlan:
    """How `count` connections leave: `batches` batches of at most `size`, `gap` seconds apart."""

    count: int
    size: int
    batches: int
    gap: float

    @classmethod
    def spread(cls, count: int, size: int, window: float) -> DrainPlan:
        """Batches of at most `size`, the first at once and the others evenly over `window`.

        The gap is also the delay each client is given, so the last batch is back by the end of
        the window. A worker with `size` connections or fewer closes them together and gives
        them the whole window.
        """
        batches = max(1, math.ceil(count / max(1, size)))
        return cls(count, max(1, size), batches, window / batches)

    @property
    def within_ms(self) -> int:
        """The reconnect delay the clients are told: the gap between batches, in milliseconds."""
        return max(1, round(self.gap * 1000))

    def batch(self, index: int, items: list) -> list:
        return items[index * self.size : (index + 1) * self.size]
