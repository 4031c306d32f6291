"""Configuration, read once from `SWITCHBOARD_*` environment variables.

Everything tunable lives here so docs/configuration.md can document it in one table; the rest of the code
takes a `Config` and never reads the environment itself.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields

PREFIX = "SWITCHBOARD_"


@dataclass(frozen=True)
class Config:
    # Bearer key for /api/*; without it the API answers 403 and says how to set one.
    api_key: str = ""
    # HS256 secret for connection tokens (?token=JWT) and for minting them at /api/tokens.
    token_secret: str = ""
    # Messages kept per channel for history and recovery after a reconnect.
    history_size: int = 100
    # Seconds a channel with no subscribers keeps its history after its last publish.
    history_ttl: float = 300.0
    # Seconds a publish's idempotency key is remembered: a retry within it is delivered once.
    idempotency_window: float = 300.0
    # Largest WebSocket message or HTTP publish body, in bytes; bigger frames close with 1009.
    max_message_size: int = 65536
    # Outbound queue limits per connection; passing either closes it as a slow consumer (1008).
    send_queue_messages: int = 1000
    send_queue_bytes: int = 1 << 20
    # Browser Origins allowed to open a socket (comma-separated); empty allows any origin.
    allowed_origins: tuple[str, ...] = field(default_factory=tuple)
    # Seconds between server pings on a quiet connection; twice this without a byte closes it.
    ping_interval: float = 25.0
    # Whether connections without a token are accepted (as anonymous users).
    allow_anonymous: bool = True
    # Whether clients may publish on public channels (protected ones always need a grant).
    client_publish: bool = True
    # Channels one connection may subscribe to at once.
    max_subscriptions: int = 128
    # Messages and bytes per second one connection may send (a token bucket); 0 turns it off.
    rate_messages: float = 100.0
    rate_bytes: int = 1 << 20
    # Open WebSockets per worker, and per client address (0: no per-address limit).
    max_connections: int = 20000
    max_connections_per_address: int = 0
    # Seconds before a connection token expires when the client is told to refresh it.
    token_warning: float = 60.0
    # Drain on SIGTERM, reload and worker replacement (docs/deployment.md): new handshakes are
    # refused (503) at once, then open connections are closed in batches of at most `drain_batch`
    # spread over `drain_window` seconds, each told to come back within the gap between batches.
    # 0 closes them all at once with 1001. Keep the window below Gunicorn's graceful_timeout.
    drain_window: float = 5.0
    drain_batch: int = 100
    # Redis URL (redis://host:port/db): set it to run several workers or machines as one server.
    # Several URLs, comma-separated, spread the channels over several Redis instances; a
    # redis+sentinel://HOST:PORT,HOST:PORT/MASTER/DB URL follows a Sentinel-managed primary.
    redis_url: str = ""
    # Pub/sub buses per Redis instance: a worker hears every channel of the buses it listens to,
    # and one publish batch sends one message per bus it touches (docs/deployment.md).
    redis_partitions: int = 16
    # Seconds after which a worker that stopped heartbeating is presumed dead and its members leave.
    presence_ttl: float = 30.0
    # Members a channel may have while join/leave are pushed: past it they are only counted and
    # listed (`presence`), so a crowd costs O(N) frames, not O(N^2); 0 never pushes them. Pusher
    # presence channels refuse members past it, as Pusher's own 100-member cap does.
    presence_push_limit: int = 100
    # Serve the demo page's token and history routes (never in production)
    demo: bool = False
    # Where GET /metrics answers: "api" (behind the API key), "host:port" (only there, no key) or "off".
    metrics: str = "api"
    # Serve the live stats page at /stats; its figures (/stats.json) need the API key.
    stats_page: bool = False
    # GraphQL (/graphql): seconds a socket may wait before its connection_init (then 4408), and
    # how deep one operation may nest and how many fields it may select, fragments expanded.
    graphql_init_timeout: float = 10.0
    graphql_max_depth: int = 15
    graphql_max_fields: int = 250
    # Pusher apps (docs/pusher.md): "id:key:secret" entries, comma-separated, or a JSON list of
    # {"id","key","secret","webhook_url"}; the first shares the native channels. Empty: no Pusher.
    pusher_apps: str = ""
    # Where Pusher webhooks are POSTed, for every app whose JSON entry names no webhook_url.
    pusher_webhook_url: str = ""
    # A TOML or JSON file of channel namespaces: options per channel-name prefix (docs/configuration.md).
    namespaces: str = ""
    # Log level (debug, info, warning, error) and format: "json", "text", or "auto" (text on a terminal).
    log_level: str = "info"
    log_format: str = "auto"

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Config:
        """Build a config from `SWITCHBOARD_<FIELD>` variables, failing loudly on bad values."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in fields(cls):
            raw = environ.get(PREFIX + spec.name.upper())
            if raw is None or raw == "":
                continue
            default = getattr(cls(), spec.name)
            try:
                if isinstance(default, tuple):
                    values[spec.name] = tuple(part.strip() for part in raw.split(",") if part.strip())
                elif isinstance(default, bool):
                    values[spec.name] = raw.lower() in ("1", "true", "yes", "on")
                else:
                    values[spec.name] = type(default)(raw)
            except ValueError:
                raise ValueError(
                    f"{PREFIX}{spec.name.upper()}={raw!r} is not a valid {type(default).__name__}"
                ) from None
        return cls(**values)
