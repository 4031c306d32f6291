"""Who may subscribe and publish where: channel kinds by name, and grants carried by tokens.

Public channels are open to every connection. `private-` and `presence-` channels need a grant,
from the connection token (`channels` and `publish` claims, lists of names or `*` patterns) or
from a subscription token for one channel. Clients publish on public channels unless the server
says otherwise, and on protected channels only with a publish grant; the HTTP API always may.
"""

from __future__ import annotations

from fnmatch import fnmatchcase
from types import MappingProxyType
from typing import Any

PROTECTED_PREFIXES = ("private-", "presence-")


def is_protected(channel: str) -> bool:
    return channel.startswith(PROTECTED_PREFIXES)


def _matches(channel: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatchcase(channel, pattern) for pattern in patterns)


class Grants:
    """What one connection may do beyond public channels."""

    __slots__ = ("subscribe", "publish", "channels")

    def __init__(self, subscribe: tuple[str, ...] = (), publish: tuple[str, ...] = ()) -> None:
        self.subscribe = subscribe
        self.publish = publish
        # Grants from subscription tokens: channel -> may publish there.
        self.channels: dict[str, bool] = {}

    def may_subscribe(self, channel: str) -> bool:
        return not is_protected(channel) or channel in self.channels or _matches(channel, self.subscribe)

    def may_publish(self, channel: str, public_allowed: bool) -> bool:
        if not is_protected(channel):
            return public_allowed
        return self.channels.get(channel, False) or _matches(channel, self.publish)

    def add_channel(self, channel: str, publish: bool) -> None:
        self.channels[channel] = publish or self.channels.get(channel, False)


class SharedGrants(Grants):
    """No grants, and never any: one instance that stands for many connections.

    Every connection starts with the same `NO_GRANTS` until the hub authenticates it and gives it
    grants of its own; a channel added to a shared instance would be granted to every connection
    holding it, so each change raises instead, as the bug it would be.
    """

    __slots__ = ()

    def __init__(self) -> None:
        for name, value in (("subscribe", ()), ("publish", ()), ("channels", MappingProxyType({}))):
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"shared grants cannot change ({name}): give the connection grants of its own")

    def add_channel(self, channel: str, publish: bool) -> None:
        raise AttributeError(f"shared grants cannot change (a grant of {channel!r}): give the connection its own")


NO_GRANTS = SharedGrants()
