"""The Pusher protocol on one hub: its apps, a session per app, and the webhook dispatcher.

Created in `create_app` beside the hub (never at import), kept at `app.extensions["switchboard.pusher"]`.
It decides who may open a Pusher connection; the sessions do the rest.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from switchboard_server.core.auth import Identity
from switchboard_server.core.errors import ProtocolError
from switchboard_server.protocols.pusher.apps import Apps, parse_apps
from switchboard_server.protocols.pusher.session import PusherSession
from switchboard_server.protocols.pusher.webhooks import WebhookDispatcher

if TYPE_CHECKING:
    from switchboard_server.core.hub import Hub

PROTOCOL = "7"
UNKNOWN_APP = 4001
UNSUPPORTED_PROTOCOL = 4007
NO_PROTOCOL = 4008
OVER_CAPACITY = 4100  # Pusher: reconnect after backing off


class PusherService:
    """Every Pusher app of one hub (one per worker)."""

    def __init__(self, hub: Hub, apps: Apps) -> None:
        self.hub = hub
        self.apps = apps
        self.webhooks = WebhookDispatcher(apps, hub.counters) if any(app.webhook_url for app in apps.all) else None
        if self.webhooks is not None:
            hub.broker.observers.add(self.webhooks)
        self.sessions = {app.key: PusherSession(hub, app, self.webhooks) for app in apps.all}

    @classmethod
    def from_config(cls, hub: Hub) -> PusherService:
        """From SWITCHBOARD_PUSHER_APPS and SWITCHBOARD_PUSHER_WEBHOOK_URL; a bad value fails the start."""
        return cls(hub, parse_apps(hub.config.pusher_apps, hub.config.pusher_webhook_url))

    def new_socket_id(self) -> str:
        """A Pusher socket id (`\\d+\\.\\d+`), unused on this worker: it names the connection in the hub."""
        while True:
            socket_id = f"{secrets.randbelow(10**10)}.{secrets.randbelow(10**10)}"
            if socket_id not in self.hub.connections:
                return socket_id

    def admit(
        self, key: str, protocol: str | None, identity: Identity, address: str
    ) -> tuple[PusherSession | None, int, str]:
        """The app's session for a new connection, or None with the Pusher error code and why."""
        session = self.sessions.get(key)
        if session is None:
            if not self.sessions:
                return None, UNKNOWN_APP, "no Pusher apps are configured on this server (SWITCHBOARD_PUSHER_APPS)"
            return None, UNKNOWN_APP, f"App key {key[:64]} does not exist"
        if protocol is None:
            return None, NO_PROTOCOL, f"No protocol version supplied: connect with ?protocol={PROTOCOL}"
        if protocol != PROTOCOL:
            return None, UNSUPPORTED_PROTOCOL, f"Unsupported protocol version {protocol[:16]}: this server speaks 7"
        try:
            self.hub.admit(identity, address)
        except ProtocolError as error:
            return None, OVER_CAPACITY, f"Over capacity: {error.message}"
        return session, 0, ""
