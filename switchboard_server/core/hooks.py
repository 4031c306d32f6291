"""The application's own code on Switchboard's events: connect, subscribe, publish, disconnect, RPC.

The hub calls these at the choke points every protocol already passes through (a handshake's
entry, `check_subscribe`, `publish`, `on_close`), in the greenlet of the connection concerned, so
a hook may block on I/O (a database query) and only that connection waits. A hook that raises
`Refuse` refuses with the message the client sees; anything else it raises is a bug: logged with
its traceback, and the client gets an `internal` error while the connection and the server go on.

Plain Python, no Flask: the extension wraps each function so it runs in the app's context.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from switchboard_server.core.auth import Identity
from switchboard_server.core.errors import ProtocolError

log = logging.getLogger("switchboard.hooks")


class Refuse(ProtocolError):
    """Raised by a hook: the client is refused with this message (and `code`, `forbidden` by default)."""

    def __init__(self, message: str, code: str = "forbidden") -> None:
        super().__init__(code, message)


@dataclass
class Client:
    """Who a hook is about: the connection's id, its user and the info it was admitted with."""

    id: str
    user: str
    info: Any
    address: str


def client_of(conn: Any) -> Client:
    """What a hook is told of a connection (transport/connection.py's `Connection`)."""
    return Client(conn.id, conn.user, conn.info, conn.address)


@dataclass
class Connect:
    """A WebSocket handshake about to be accepted. `user` and `info` come from the token, if any."""

    path: str
    headers: dict[str, str]
    args: dict[str, str]
    address: str
    user: str | None
    info: Any


@dataclass
class Publish:
    """A publish about to be stored: a hook may change `data` in place, or raise `Refuse`.

    `client` is the publishing connection, or None for the HTTP API and the app's own publishes.
    """

    channel: str
    data: Any
    event: str | None
    client: Client | None


@dataclass
class Hooks:
    """The functions an application registered; None where it registered none."""

    connect: Callable[[Connect], dict | None] | None = None
    subscribe: Callable[[Client, str], bool | dict | None] | None = None
    publish: Callable[[Publish], None] | None = None
    # Whether `publish` also sees the HTTP API's publishes (client ones always).
    publish_api: bool = False
    disconnect: Callable[[Client, int], None] | None = None
    rpc: dict[str, Callable[..., Any]] = field(default_factory=dict)

    def call(self, name: str, hook: Callable[..., Any], *args: Any) -> Any:
        """Run one hook: `Refuse` and other protocol errors pass as they are; a bug is logged and
        becomes an `internal` error, so the caller answers the client and carries on."""
        try:
            return hook(*args)
        except ProtocolError:
            raise
        except Exception:
            log.exception("the application's %s hook failed", name)
            raise ProtocolError("internal", f"the server's {name} hook failed") from None


def identity_from_hook(decided: Any, token: Identity) -> Identity:
    """The identity a connect hook returned (`{"user", "info", "channels", "publish"}`), or a
    logged `internal` error when it is not one: the hook's grants replace the token's if given."""
    user = decided.get("user") if isinstance(decided, dict) else None
    if not isinstance(user, str) or not user:
        log.error("the connect hook returned %r: it must return None or a dict with a non-empty 'user'", decided)
        raise ProtocolError("internal", "the server's connect hook failed")
    channels, publish = decided.get("channels", token.channels), decided.get("publish", token.publish)
    return Identity(user, decided.get("info"), tuple(channels), tuple(publish), token.expires)
