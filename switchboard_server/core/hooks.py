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

import gevent

from switchboard_server.core.auth import Identity
from switchboard_server.core.errors import ProtocolError
from switchboard_server.transport.handshake import Handshake

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
    # A member's first subscription to a channel anywhere in the cluster, and its last leaving.
    join: Callable[[str, dict], None] | None = None
    leave: Callable[[str, dict], None] | None = None
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


def connect_identity(hooks: Hooks, handshake: Handshake, identity: Identity) -> Identity:
    """Who the application's connect hook says a connection is (its handshake, and the identity
    its token gave, if any): the same identity when there is no hook or it returns None."""
    if hooks.connect is None:
        return identity
    event = Connect(handshake.path, handshake.headers, handshake.args, handshake.address, identity.user, identity.info)
    decided = hooks.call("connect", hooks.connect, event)
    return identity if decided is None else identity_from_hook(decided, identity)


def identity_from_hook(decided: Any, token: Identity) -> Identity:
    """The identity a connect hook returned (`{"user", "info", "channels", "publish"}`), or a
    logged `internal` error when it is not one: the hook's grants replace the token's if given."""
    user = decided.get("user") if isinstance(decided, dict) else None
    if not isinstance(user, str) or not user:
        log.error("the connect hook returned %r: it must return None or a dict with a non-empty 'user'", decided)
        raise ProtocolError("internal", "the server's connect hook failed")
    channels, publish = decided.get("channels", token.channels), decided.get("publish", token.publish)
    return Identity(user, decided.get("info"), tuple(channels), tuple(publish), token.expires)


class PresenceHooks:
    """The application's join and leave hooks, as a broker observer (brokers/base.py): told once per
    event across the cluster, by the worker whose broker saw it. Observers must never block, so
    each hook runs in a greenlet of its own, after the fact."""

    def __init__(self, hooks_of: Callable[[], Hooks]) -> None:
        self._hooks_of = hooks_of

    def member_added(self, channel: str, member: dict) -> None:
        self._spawn("join", self._hooks_of().join, channel, member)

    def member_removed(self, channel: str, member: dict) -> None:
        self._spawn("leave", self._hooks_of().leave, channel, member)

    def channel_occupied(self, channel: str) -> None:
        """Not a hook of the application's."""

    def channel_vacated(self, channel: str) -> None:
        """Not a hook of the application's."""

    def _spawn(self, name: str, hook: Callable[[str, dict], None] | None, channel: str, member: dict) -> None:
        if hook is not None:
            gevent.spawn(self._run, name, hook, channel, member)

    def _run(self, name: str, hook: Callable[[str, dict], None], channel: str, member: dict) -> None:
        try:
            self._hooks_of().call(name, hook, channel, member)
        except ProtocolError:
            pass  # nobody to tell: the event happened, and a failure is logged by `call`
