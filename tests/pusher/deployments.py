"""A Switchboard with two Pusher apps beside the application back end receiving its webhooks
(tests/pusher/backend.py), and a minimal Pusher wire client: for tests/pusher and the browser tests."""

from __future__ import annotations

import itertools
import json
import time
from pathlib import Path

from websockets.sync.client import connect

from tests.integration.servers import RedisServer, Server, free_port
from tests.pusher.backend import APPS, KEY, Backend


class Deployment:
    """A Switchboard and its application back end."""

    def __init__(self, server: Server, backend: Backend, redis: RedisServer | None = None) -> None:
        self.server = server
        self.backend = backend
        self.redis = redis

    def stop(self) -> None:
        self.server.stop()
        self.backend.close()
        if self.redis is not None:
            self.redis.stop()


def deploy(tmp_path: Path, env: dict[str, str] | None = None, redis: RedisServer | None = None) -> Deployment:
    port = free_port()
    backend = Backend(port)
    settings = {"SWITCHBOARD_PUSHER_APPS": APPS, "SWITCHBOARD_PUSHER_WEBHOOK_URL": backend.url + "/webhooks"}
    if redis is not None:
        settings.update({"SWITCHBOARD_REDIS_URL": redis.url, "SWITCHBOARD_WORKERS": "2"})
    settings.update(env or {})
    return Deployment(Server(tmp_path, settings, port=port).wait_ready(), backend, redis)


class WireClient:
    """A few lines of Pusher protocol over `websockets`, for the tests that are about the server's
    side (the HTTP API, webhooks, close codes); pusher-js itself is driven in Node and Chromium."""

    _ids = itertools.count()

    def __init__(self, server: Server, key: str = KEY, query: str = "protocol=7&client=test&version=1") -> None:
        self.ws = connect(f"{server.ws_url}/app/{key}?{query}", open_timeout=10, legacy=True)
        self.backlog: list[dict] = []
        first = self.recv()
        self.first = first
        self.socket_id = first["data"]["socket_id"] if first["event"].endswith("established") else None

    def recv(self, timeout: float = 10.0) -> dict:
        message = json.loads(self.ws.recv(timeout=timeout))
        if isinstance(message.get("data"), str):
            try:
                message["data"] = json.loads(message["data"])
            except ValueError:
                pass
        return message

    def send(self, event: str, data: object = None, channel: str | None = None) -> None:
        message = {"event": event, "data": {} if data is None else data}
        if channel is not None:
            message["channel"] = channel
        self.ws.send(json.dumps(message))

    def next(self, event: str, channel: str | None = None, timeout: float = 15.0) -> dict:
        """The next message named `event` (on `channel`), from the backlog first."""
        deadline = time.monotonic() + timeout
        while True:
            for index, message in enumerate(self.backlog):
                if message["event"] == event and channel in (None, message.get("channel")):
                    return self.backlog.pop(index)
            self.backlog.append(self.recv(max(0.01, deadline - time.monotonic())))

    def subscribe(self, channel: str, backend: Backend | None = None, user: str = "guest") -> dict:
        """Subscribe, signed by the back end's library for protected channels; returns the answer."""
        data: dict = {"channel": channel}
        if channel.startswith(("private-", "presence-")):
            member = {"user_id": user, "user_info": {"name": user.title()}} if channel.startswith("presence-") else None
            data.update(backend.pusher.authenticate(channel, self.socket_id, member))
        self.send("pusher:subscribe", data)
        return self.next("pusher_internal:subscription_succeeded", channel)

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> WireClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
