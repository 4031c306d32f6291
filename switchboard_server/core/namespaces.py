"""Channel namespaces: options per channel-name prefix, the global settings being the defaults.

Real applications mix kinds of channels (a chat keeping 100 messages, a price ticker that needs
only its latest value, per-user notifications kept a day), so history, presence, recovery, client
publishing, latest-value and conflation can be set per prefix. A channel takes the options of the
longest configured prefix it starts with, which fits the kinds Switchboard already names by prefix
(`presence-`, `private-`) as well as Centrifugo-style `ns:` names; a channel no prefix matches
takes the global settings. Options come from a TOML or JSON file (SWITCHBOARD_NAMESPACES) and
from the Flask extension's Python API, and are checked once at start: a wrong name or value stops
the server with a message naming it, never a surprise on the first publish.

Plain values only: no I/O but reading the file, no Flask, no protocol.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from switchboard_server.core.config import Config
from switchboard_server.core.envelope import CHANNEL_PATTERN

# How presence channels' names start (core/channels.py's PRESENCE_PREFIX is this).
PRESENCE_CHANNELS = "presence-"
# Channels whose namespace is remembered; past it the memo starts again (names are unbounded).
_MEMO_SIZE = 10000


@dataclass(frozen=True)
class Namespace:
    """What one kind of channel does. `prefix` "" is the global settings' namespace."""

    prefix: str = ""
    # Messages kept per channel, and seconds a channel nobody subscribes to keeps them.
    history_size: int = 100
    history_ttl: float = 300.0
    # Whether subscribers are members of the channel (the presence list, its counts and hooks).
    presence: bool = True
    # Join/leave pushes: None pushes them as each protocol does (on `presence-` channels), True
    # on every channel of the namespace, False on none.
    join_leave: bool | None = None
    # Whether a subscribe with a position gets the messages it missed replayed.
    recovery: bool = True
    # None: the global rule (SWITCHBOARD_CLIENT_PUBLISH for public channels, a grant for protected
    # ones); False: no client publishes here at all, grants included; True: public channels allow it.
    client_publish: bool | None = None
    # A subscriber gets the channel's latest publication at once on every subscribe.
    latest: bool = False
    # A subscriber that falls behind gets the latest message per key instead of every one: the
    # key is a top-level field of the message's data ("" for the whole channel), and a lagging
    # subscriber is sent what it holds at most once per window (seconds).
    conflate: bool = False
    conflation_key: str = ""
    conflation_window: float = 0.1

    def key_of(self, data: Any) -> Any:
        """The conflation key of a message's data: the field's value (None when the data has no
        such field: those share one key), or None for the whole channel."""
        if not self.conflation_key or not isinstance(data, dict):
            return None
        value = data.get(self.conflation_key)
        return value if isinstance(value, str | int | float | bool) else None


OPTIONS = tuple(spec.name for spec in dataclasses.fields(Namespace) if spec.name != "prefix")


def _whole(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _seconds(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


def _switch(value: Any) -> bool:
    return isinstance(value, bool)


# Each option's check, and what the error message says a good value is.
_CHECKS = {
    "history_size": (_whole, "a whole number, 0 or more"),
    "history_ttl": (_seconds, "a number of seconds above 0"),
    "presence": (_switch, "true or false"),
    "join_leave": (_switch, "true or false"),
    "recovery": (_switch, "true or false"),
    "client_publish": (_switch, "true or false"),
    "latest": (_switch, "true or false"),
    "conflate": (_switch, "true or false"),
    "conflation_key": (lambda value: isinstance(value, str), "a field name (text), or empty for the whole channel"),
    "conflation_window": (_seconds, "a number of seconds above 0"),
}


def check_options(prefix: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    """The options of one namespace, checked; a ValueError names the prefix and the option."""
    if not isinstance(prefix, str) or not prefix or not CHANNEL_PATTERN.fullmatch(prefix):
        raise ValueError(f"namespace {prefix!r}: a prefix is 1-128 characters from A-Z a-z 0-9 and _ - = @ , . ; :")
    if not isinstance(options, Mapping):
        raise ValueError(f"namespace {prefix!r}: its options must be a table of option = value")
    checked = {}
    for name, value in options.items():
        if name not in _CHECKS:
            raise ValueError(f"namespace {prefix!r}: unknown option {name!r}; the options are {', '.join(OPTIONS)}")
        check, wanted = _CHECKS[name]
        if not check(value):
            raise ValueError(f"namespace {prefix!r}: {name} must be {wanted}, not {value!r}")
        checked[name] = float(value) if name in ("history_ttl", "conflation_window") else value
    if prefix.startswith(PRESENCE_CHANNELS) and checked.get("presence") is False:
        raise ValueError(f"namespace {prefix!r}: presence- channels are presence channels; presence cannot be off")
    if checked.get("latest") and checked.get("history_size") == 0:
        raise ValueError(f"namespace {prefix!r}: latest needs history_size 1 or more, where the latest value is kept")
    return checked


def read_file(path: str) -> dict[str, dict[str, Any]]:
    """Namespaces from a TOML or JSON file (by its suffix): a `namespaces` table of prefix -> options."""
    file = Path(path)
    try:
        text = file.read_text()
    except OSError as error:
        raise ValueError(f"SWITCHBOARD_NAMESPACES={path!r} cannot be read: {error.strerror}") from None
    try:
        document = json.loads(text) if file.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as error:
        kind = "JSON" if file.suffix == ".json" else "TOML"
        raise ValueError(f"SWITCHBOARD_NAMESPACES={path!r} is not valid {kind}: {error}") from None
    if not isinstance(document, dict) or set(document) - {"namespaces"}:
        raise ValueError(
            f"SWITCHBOARD_NAMESPACES={path!r}: the file holds one table, `namespaces`, of prefix -> options"
        )
    namespaces = document.get("namespaces", {})
    if not isinstance(namespaces, dict):
        raise ValueError(f"SWITCHBOARD_NAMESPACES={path!r}: `namespaces` must be a table of prefix -> options")
    return {prefix: check_options(prefix, options) for prefix, options in namespaces.items()}


class Namespaces:
    """Every namespace of one server, and which one a channel belongs to."""

    def __init__(self, config: Config, declared: Mapping[str, Mapping[str, Any]] | None = None) -> None:
        """`declared` (prefix -> options) adds to, and for the same prefix overrides, the file's."""
        self.default = Namespace(history_size=config.history_size, history_ttl=config.history_ttl)
        self._options: dict[str, dict[str, Any]] = read_file(config.namespaces) if config.namespaces else {}
        self._by_prefix: dict[str, Namespace] = {}
        self._memo: dict[str, Namespace] = {}
        for prefix, options in (declared or {}).items():
            self.declare(prefix, options)
        self._build()

    def declare(self, prefix: str, options: Mapping[str, Any]) -> Namespace:
        """Add a namespace (or change the options of one), checked as the file's are."""
        merged = {**self._options.get(prefix, {}), **check_options(prefix, options)}
        check_options(prefix, merged)  # a combination may be wrong where each part is right
        self._options[prefix] = merged
        self._build()
        return self._by_prefix[prefix]

    def _build(self) -> None:
        # Longest first, so the first prefix a channel starts with is the longest that matches.
        self._by_prefix = {
            prefix: self._namespace(prefix, self._options[prefix])
            for prefix in sorted(self._options, key=len, reverse=True)
        }
        self._memo = {}

    def _namespace(self, prefix: str, options: dict[str, Any]) -> Namespace:
        # A latest-value namespace keeps one message unless told otherwise: the latest is all it needs.
        size = {"history_size": 1} if options.get("latest") and "history_size" not in options else {}
        return dataclasses.replace(self.default, prefix=prefix, **size, **options)

    def of(self, channel: str) -> Namespace:
        """The namespace of `channel`: the longest configured prefix it starts with, else the default."""
        namespace = self._memo.get(channel)
        if namespace is not None:
            return namespace
        namespace = next(
            (found for prefix, found in self._by_prefix.items() if channel.startswith(prefix)), self.default
        )
        if len(self._memo) >= _MEMO_SIZE:
            self._memo = {}
        self._memo[channel] = namespace
        return namespace
