"""Pusher applications (id, key, secret, webhook URL) and where each one's channels live in the hub.

The first app shares the hub's own namespace: its Pusher channel `room` is the hub channel `room`,
so native `/ws` clients and Pusher clients meet there and see the same presence. Every further app
is isolated under `private-<id>:` (`presence-lobby` of app 42 is the hub channel
`private-42:presence-lobby`): no Pusher client of another app can name it, since Pusher's channel
names have no `:`, and the hub protects it like any `private-` channel, so a native client needs a
grant for it. Nothing here does I/O; the configuration is parsed once, at start, failing loudly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import orjson

# Pusher's channel names: letters, digits and `_ - = @ , . ;`, up to 200 (the hub allows 128).
PUSHER_CHANNEL = re.compile(r"[A-Za-z0-9_\-=@,.;]{1,200}")
_HUB_LIMIT = 128
_APP_ID = re.compile(r"[0-9]{1,20}")  # the Pusher server libraries accept digits only


@dataclass(frozen=True)
class App:
    """One Pusher application; `prefix` is where its channels live in the hub ("" for the first)."""

    id: str
    key: str
    secret: str
    webhook_url: str = ""
    prefix: str = ""

    @property
    def max_channel(self) -> int:
        """The longest Pusher channel name this app can use: the hub's limit less the prefix."""
        return _HUB_LIMIT - len(self.prefix)

    def valid_channel(self, name: object) -> bool:
        return isinstance(name, str) and len(name) <= self.max_channel and PUSHER_CHANNEL.fullmatch(name) is not None

    def hub_channel(self, name: str) -> str:
        return self.prefix + name

    def pusher_channel(self, hub_name: str) -> str | None:
        """The Pusher name of a hub channel of this app, or None if it is not one of its channels."""
        if not hub_name.startswith(self.prefix):
            return None
        name = hub_name[len(self.prefix) :]
        return name if PUSHER_CHANNEL.fullmatch(name) else None


class Apps:
    """Every configured app, by key (connections) and by id (the HTTP API); the first is the default."""

    def __init__(self, apps: list[App]) -> None:
        self.all = apps
        self.by_key = {app.key: app for app in apps}
        self.by_id = {app.id: app for app in apps}
        self._by_prefix = {app.prefix: app for app in apps if app.prefix}

    def for_hub_channel(self, hub_name: str) -> tuple[App, str] | None:
        """The app a hub channel belongs to and its Pusher name there, or None (a native-only name)."""
        head, colon, _rest = hub_name.partition(":")
        app = self._by_prefix.get(head + colon) if colon else None
        if app is None:
            if not self.all or self.all[0].prefix:
                return None
            app = self.all[0]
        name = app.pusher_channel(hub_name)
        return (app, name) if name is not None else None


def parse_apps(raw: str, webhook_url: str = "") -> Apps:
    """`SWITCHBOARD_PUSHER_APPS`: `id:key:secret` entries separated by commas, or a JSON list of
    `{"id","key","secret","webhook_url"}`. `webhook_url` is for every app that names none itself."""
    raw = raw.strip()
    if not raw:
        return Apps([])
    if raw.startswith("["):
        try:
            entries = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"SWITCHBOARD_PUSHER_APPS is not valid JSON: {exc}") from None
        if not isinstance(entries, list) or not all(isinstance(entry, dict) for entry in entries):
            raise ValueError('SWITCHBOARD_PUSHER_APPS in JSON is a list of {"id","key","secret"} objects')
    else:
        entries = []
        for part in raw.split(","):
            fields = part.strip().split(":")
            if len(fields) != 3:
                raise ValueError(f"SWITCHBOARD_PUSHER_APPS entry {part.strip()!r} is not id:key:secret")
            entries.append(dict(zip(("id", "key", "secret"), fields, strict=True)))
    apps = []
    for index, entry in enumerate(entries):
        app_id, key, secret = (entry.get(name) for name in ("id", "key", "secret"))
        url = entry.get("webhook_url") or webhook_url
        if not isinstance(app_id, str) or not _APP_ID.fullmatch(app_id):
            raise ValueError(f"Pusher app id {app_id!r} must be a string of digits, as the Pusher libraries require")
        if not all(isinstance(value, str) and value for value in (key, secret)):
            raise ValueError(f"Pusher app {app_id}: key and secret must be non-empty strings")
        if not isinstance(url, str) or (url and not url.startswith(("http://", "https://"))):
            raise ValueError(f"Pusher app {app_id}: webhook_url must be an http:// or https:// URL")
        apps.append(App(app_id, key, secret, url, "" if index == 0 else f"private-{app_id}:"))
    if len({app.id for app in apps}) < len(apps) or len({app.key for app in apps}) < len(apps):
        raise ValueError("SWITCHBOARD_PUSHER_APPS: every app needs its own id and its own key")
    return Apps(apps)
