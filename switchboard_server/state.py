"""What one app's Switchboard holds in one worker: the hub, its broker, the protocols and metrics.

Built by the extension when it is set up on an app and kept at `app.extensions["switchboard"]`, so
the routes, the Gunicorn worker's handshake fast path and the worker's shutdown all find the same
objects. Nothing here imports Flask: it is the seam where the core meets the protocols it serves.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from switchboard_server.brokers import make_broker
from switchboard_server.core.auth import ANONYMOUS, Identity
from switchboard_server.core.config import Config
from switchboard_server.core.hub import Hub
from switchboard_server.core.namespaces import Namespaces
from switchboard_server.ops.metrics import Recorder
from switchboard_server.protocols.echo import Echo
from switchboard_server.protocols.graphql import GraphQLServer
from switchboard_server.protocols.native.session import NativeSession
from switchboard_server.protocols.pusher.service import PusherService
from switchboard_server.transport.connection import Connection
from switchboard_server.transport.handshake import Handshake

PROTOCOLS = ("native", "echo", "graphql", "pusher")

# How a WebSocket path decides a handshake from plain values: -> (run, identity).
Entry = Callable[[Handshake], tuple[Callable[[Connection], None], Identity]]


class SwitchboardState:
    """One worker's Switchboard for one app."""

    def __init__(
        self,
        config: Config,
        url_prefix: str = "",
        protocols: Iterable[str] = PROTOCOLS,
        namespaces: Namespaces | None = None,
    ) -> None:
        self.config = config
        self.url_prefix = url_prefix
        self.protocols = frozenset(protocols)
        namespaces = namespaces or Namespaces(config)
        self.hub = Hub(config, make_broker(config, namespaces), namespaces)
        self.native = NativeSession(self.hub)
        self.echo = Echo(self.hub)
        self.graphql = GraphQLServer(self.hub) if "graphql" in self.protocols else None
        self.pusher = PusherService.from_config(self.hub) if "pusher" in self.protocols else None
        if config.metrics not in ("api", "off") and not config.metrics.rpartition(":")[2].isdigit():
            raise ValueError(f"SWITCHBOARD_METRICS={config.metrics!r} must be api, off or host:port")
        wants_recorder = config.metrics != "off" or config.stats_page
        self.recorder = Recorder(self.hub) if wants_recorder else None
        # The paths whose handshakes the Gunicorn worker may answer before Flask (transport/worker.py).
        self.fast_paths: dict[str, Entry] = {url_prefix + "/ws": self.native.entry}
        if "echo" in self.protocols:
            self.fast_paths[url_prefix + "/ws/echo"] = self._echo_entry

    def _echo_entry(self, handshake: Handshake) -> tuple[Callable[[Connection], None], Identity]:
        return self.echo.serve, ANONYMOUS

    def drain(self) -> None:
        """Refuse new connections, then close the open ones in batches over the drain window
        (SWITCHBOARD_DRAIN_WINDOW, _BATCH); the Gunicorn worker calls it before it stops."""
        self.hub.drain(self.config.drain_window, self.config.drain_batch)

    def shutdown(self, timeout: float = 5.0) -> None:
        """Close every connection with 1001, send the webhooks that caused, stop the metrics."""
        self.hub.shutdown(timeout=timeout)
        if self.pusher is not None and self.pusher.webhooks is not None:
            self.pusher.webhooks.stop(timeout=3.0)  # the members and channels the shutdown just removed
        if self.recorder is not None:
            self.recorder.stop()  # what this worker counted stays in the others' scrapes
