"""Switchboard as a Flask extension: `Switchboard(app)`, or `ext.init_app(app)` in a factory.

It mounts Switchboard's routes (the `/ws` WebSocket, the HTTP API, health, and the protocols you
enable) as blueprints under a URL prefix you choose, and changes nothing else in the host app: its
error pages, body limit and request hooks belong to its own blueprints; it adds no `/` route and
leaves logging alone; metrics, the stats page and the demo stay off unless asked for.

Settings come, each later one winning, from the extension's defaults, the `SWITCHBOARD_*`
environment, the host's `app.config["SWITCHBOARD_*"]`, and the keywords given here. The state
(hub, broker, protocols) lives in `app.extensions["switchboard"]`, created per worker process: a
Gunicorn worker imports the app after gevent has patched, and nothing here starts a greenlet
before the first connection or request.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import orjson
from flask import Blueprint, Flask, current_app, has_app_context

from switchboard_server.core.config import PREFIX, Config
from switchboard_server.core.hooks import Client, Connect, Hooks, Publish
from switchboard_server.core.namespaces import Namespaces, check_options
from switchboard_server.routes import api, graphql, health, ops, pusher, sync, websocket
from switchboard_server.state import PROTOCOLS, SwitchboardState

EXTENSION_DEFAULTS = {"metrics": "off"}
_ROUTES = {
    "native": (websocket.bp,),
    "echo": (websocket.echo_bp,),
    "graphql": (graphql.bp,),
    "pusher": (pusher.bp,),
}


class Switchboard:
    """Real-time channels for a Flask app: WebSockets, presence, history and an HTTP API.

    `protocols` names what to mount: "native" (`/ws`, always), "echo" (`/ws/echo`), "graphql"
    (`/graphql`) and "pusher" (`/app/<key>` and `/apps/<id>/...`). `api=False` leaves out the
    HTTP API (`/api/...`). `config` is a `Config`, or settings by name (`history_size=500`).
    `namespaces` is options per channel-name prefix (`{"ticker:": {"latest": True}}`), or the
    path of a file of them (docs/configuration.md); `namespace()` adds one.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        url_prefix: str = "",
        protocols: Iterable[str] = ("native",),
        api: bool = True,
        config: Config | Mapping[str, Any] | None = None,
        namespaces: str | Mapping[str, Mapping[str, Any]] | None = None,
        **settings: Any,
    ) -> None:
        self.url_prefix = url_prefix
        self.protocols = tuple(protocols)
        self.api = api
        self._config = config
        self._settings = settings
        # The application's functions on events, as registered; each app gets them wrapped in
        # its own context (`_hooks_for`), the apps already set up included.
        self._hooks = Hooks()
        self._mounted: list[tuple[Flask, SwitchboardState]] = []
        # The app that serves calls made outside any app context (a background greenlet): the one
        # given here, or the first init_app's.
        self._app: Flask | None = None
        self._routes: list[tuple[str, Callable[..., None], dict[str, Any]]] = []  # sync routes (`route`)
        # Namespaces declared in Python (prefix -> options), on top of any file's; a path is the file.
        self._namespaces: dict[str, dict[str, Any]] = {}
        if isinstance(namespaces, str):
            settings["namespaces"] = namespaces
        else:
            for prefix, options in (namespaces or {}).items():
                self.namespace(prefix, **options)
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Mount Switchboard on `app`; once per app, and only where gevent has patched the process."""
        if "switchboard" in app.extensions:
            raise RuntimeError(
                "Switchboard is already set up on this app: call init_app once, with one extension per app"
            )
        _require_gevent()
        unknown = set(self.protocols) - set(PROTOCOLS)
        if unknown:
            raise ValueError(f"unknown protocols {sorted(unknown)}: choose from {', '.join(PROTOCOLS)}")
        prefix = _prefix(self.url_prefix)
        blueprints = [health.bp, ops.bp, *(self.api and (api.bp,) or ())]
        for name in ("native", *self.protocols):
            blueprints.extend(bp for bp in _ROUTES[name] if bp not in blueprints)
        _refuse_taken_paths(app, prefix, blueprints)
        config = self.resolve_config(app)
        namespaces = Namespaces(config, self._namespaces)
        state = SwitchboardState(config, prefix, {"native", *self.protocols}, namespaces)
        app.extensions["switchboard"] = state
        state.hub.hooks = self._hooks_for(app)
        self._mounted.append((app, state))
        if self._app is None:
            self._app = app  # a factory's app serves calls from outside any app context too
        for blueprint in blueprints:
            app.register_blueprint(blueprint, url_prefix=prefix + (blueprint.url_prefix or "") or None)
        for path, function, options in self._routes:
            sync.mount(app, prefix, path, function, options)

    def resolve_config(self, app: Flask) -> Config:
        """The settings for `app`: defaults < environment < app.config < this extension's keywords."""
        if isinstance(self._config, Config):
            return dataclasses.replace(self._config, **self._settings)
        environ = {PREFIX + name.upper(): value for name, value in EXTENSION_DEFAULTS.items()}
        environ.update(os.environ)
        config = Config.from_env(environ)
        from_app = {
            spec.name: app.config[PREFIX + spec.name.upper()]
            for spec in dataclasses.fields(Config)
            if PREFIX + spec.name.upper() in app.config
        }
        return dataclasses.replace(config, **from_app, **dict(self._config or {}), **self._settings)

    def namespace(self, prefix: str, **options: Any) -> None:
        """Options for the channels whose names start with `prefix` (the longest matching prefix
        wins): `ext.namespace("ticker:", latest=True, conflate=True, conflation_key="symbol")`.
        Checked now: an unknown option or a bad value raises ValueError naming it. Declare them
        before the server takes traffic: a channel already in use keeps the options it had."""
        self._namespaces[prefix] = {**self._namespaces.get(prefix, {}), **check_options(prefix, options)}
        for _app, state in self._mounted:
            state.hub.namespaces.declare(prefix, options)

    # -- the application's own code on events (docs/hooks.md) ---------------------------------

    def on_connect(self, function: Callable[[Connect], dict | None]) -> Callable[[Connect], dict | None]:
        """`function(connect)` decides who a `/ws` connection is, in a request context built from
        its handshake (so `flask.session` reads the cookie): None keeps the token's identity,
        `{"user", "info", "channels", "publish"}` replaces it, `Refuse("why")` turns it away."""
        return self._register("connect", function)

    def on_subscribe(self, function: Callable[[Client, str], Any]) -> Callable[[Client, str], Any]:
        """`function(client, channel)`: False (or `Refuse`) refuses, a dict is the presence info
        the client joins with, anything else allows; after the token's grants allowed it."""
        return self._register("subscribe", function)

    def on_publish(self, function: Callable | None = None, *, api: bool = False) -> Callable:
        """`function(publish)` sees every client publish before it is stored (and the HTTP API's
        with `api=True`): change `publish.data` in place, or raise `Refuse`."""

        def register(function: Callable[[Publish], None]) -> Callable[[Publish], None]:
            return self._register("publish", function, publish_api=api)

        return register(function) if function is not None else register

    def on_disconnect(self, function: Callable[[Client, int], None]) -> Callable[[Client, int], None]:
        """`function(client, close_code)`, once the connection is gone and its subscriptions undone."""
        return self._register("disconnect", function)

    def on_join(self, function: Callable[[str, dict], None]) -> Callable[[str, dict], None]:
        """`function(channel, member)` after a user's first subscription to a channel anywhere in
        the cluster (once, on one worker), in a greenlet of its own."""
        return self._register("join", function)

    def on_leave(self, function: Callable[[str, dict], None]) -> Callable[[str, dict], None]:
        """`function(channel, member)` after a user's last subscription to a channel anywhere in
        the cluster ended (once; with Redis, within SWITCHBOARD_PRESENCE_TTL for a dead worker's)."""
        return self._register("leave", function)

    def rpc(self, name: str) -> Callable[[Callable[[Client, Any], Any]], Callable[[Client, Any], Any]]:
        """`@sb.rpc("name")`: `function(client, params)` answers the clients' `rpc` command by that
        name; what it returns (JSON) is the reply's data, `Refuse` its error."""

        def register(function: Callable[[Client, Any], Any]) -> Callable[[Client, Any], Any]:
            if name in self._hooks.rpc:
                raise ValueError(f"an RPC method {name!r} is registered already")
            self._hooks.rpc[name] = function
            self._refresh_hooks()
            return function

        return register

    def _register(self, event: str, function: Callable, **options: Any) -> Callable:
        """Keep `function` for `event` (and the hook's options), and hand it to every app set up."""
        if getattr(self._hooks, event) is not None:
            raise ValueError(f"a {event} hook is registered already: one function per event")
        setattr(self._hooks, event, function)
        for name, value in options.items():
            setattr(self._hooks, name, value)
        self._refresh_hooks()
        return function

    def _refresh_hooks(self) -> None:
        for app, state in self._mounted:
            state.hub.hooks = self._hooks_for(app)

    def _hooks_for(self, app: Flask) -> Hooks:
        """The registered functions, each run in `app`'s context (the connect hook in a request
        context built from the handshake)."""
        raw = self._hooks

        def in_app(function: Callable | None) -> Callable | None:
            if function is None:
                return None

            def run(*args: Any) -> Any:
                with app.app_context():
                    return function(*args)

            return run

        def connect(event: Connect) -> dict | None:
            with app.test_request_context(
                event.path, headers=event.headers, query_string=event.args, environ_base={"REMOTE_ADDR": event.address}
            ):
                return raw.connect(event)

        return Hooks(
            connect=connect if raw.connect is not None else None,
            subscribe=in_app(raw.subscribe),
            publish=in_app(raw.publish),
            publish_api=raw.publish_api,
            disconnect=in_app(raw.disconnect),
            join=in_app(raw.join),
            leave=in_app(raw.leave),
            rpc={name: in_app(function) for name, function in raw.rpc.items()},
        )

    # -- what a view, a CLI command or a background greenlet may call ------------------------

    def state(self) -> SwitchboardState:
        """This app's Switchboard: the current app's in a request or app context, else the app the
        extension was created with."""
        app = current_app._get_current_object() if has_app_context() else self._app
        if app is None or "switchboard" not in app.extensions:
            raise RuntimeError("no app with Switchboard here: call from within an app context, or Switchboard(app)")
        return app.extensions["switchboard"]

    def publish(self, channel: str, data: Any, *, event: str | None = None, idempotency_key: str | None = None) -> int:
        """Publish to every subscriber of `channel` on every worker (with Redis); returns the offset."""
        hub = self.state().hub
        offset = hub.publish(channel, data, idempotency_key=idempotency_key, event=event)
        hub.counters["publishes_app"] += 1
        return offset

    def presence(self, channel: str) -> list[dict]:
        """Who is on `channel`, across every worker: `[{"user", "info"}, ...]`."""
        return self.state().hub.presence(channel)

    def history(self, channel: str, since: int = 0, limit: int | None = None) -> tuple[str, int, list[Any]]:
        """The channel's epoch, last offset, and the message pushes held after `since`, oldest first,
        as dicts: `{"type": "message", "channel", "offset", "data", "from"}` (and `"event"`)."""
        epoch, last, messages = self.state().hub.history(channel, since, limit)
        return epoch, last, [orjson.loads(message) for message in messages]

    def route(self, path: str, **options: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
        """A synchronous-style WebSocket route at `url_prefix + path`: `def game(ws)` runs in a
        greenlet of its own with flask-sock's `ws`, plus channels (docs/sync-routes.md).

        Declare routes before or after `init_app`; URL variables come after `ws`
        (`def room(ws, name)` for `/ws/room/<name>`); `options` are Flask's rule options.
        """

        def decorator(function: Callable[..., None]) -> Callable[..., None]:
            self._routes.append((path, function, options))
            if self._app is not None:  # set up already: mount it now (routes declared before wait for init_app)
                sync.mount(self._app, self._app.extensions["switchboard"].url_prefix, path, function, options)
            return function

        return decorator


def _prefix(url_prefix: str) -> str:
    prefix = url_prefix.rstrip("/")
    if prefix and not prefix.startswith("/"):
        raise ValueError(f"url_prefix {url_prefix!r} must start with '/'")
    return prefix


def _require_gevent() -> None:
    """Refuse to start where WebSockets could not work: without gevent's patching, every socket
    greenlet would block the worker (under Gunicorn's sync or gthread worker, say)."""
    from gevent import monkey

    if not monkey.is_module_patched("socket"):
        raise RuntimeError(
            "Switchboard needs gevent: run it under Gunicorn with its worker "
            "(worker_class = 'switchboard_server.Worker'), or call gevent.monkey.patch_all() "
            "before anything else is imported"
        )


def _refuse_taken_paths(app: Flask, prefix: str, blueprints: list[Blueprint]) -> None:
    """A route of the host's at a path Switchboard would mount is an error, not a silent shadow."""
    taken = {rule.rule for rule in app.url_map.iter_rules()}
    for blueprint in blueprints:
        for path in _paths(blueprint):
            if prefix + path in taken:
                raise RuntimeError(
                    f"the app already has a route at {prefix + path}: mount Switchboard under another url_prefix"
                )


def _paths(blueprint: Blueprint) -> list[str]:
    """The rules a blueprint will add (read from a throwaway app, so nothing is registered twice)."""
    probe = Flask("switchboard_probe")
    probe.register_blueprint(blueprint)
    return [rule.rule for rule in probe.url_map.iter_rules() if rule.endpoint != "static"]
