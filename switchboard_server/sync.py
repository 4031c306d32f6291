"""flask-sock's API on Switchboard: a flask-sock app moves over by changing its imports.

    from switchboard_server.sync import ConnectionClosed, Sock   # was: from flask_sock import ...

`Sock(app)`, `sock.init_app(app)` and `@sock.route(path, bp=None, **kwargs)` behave as flask-sock's:
the path is the app's own (no prefix), and `bp` puts the route on a blueprint the app registers.
The routes run on the app's Switchboard: the one set up on it already (set it up first to choose
its prefix and settings), else the one given as `switchboard=`, else a new
`Switchboard(url_prefix="/switchboard")`, whose own routes (`/ws`, `/api/...`) then sit under that
prefix, out of the way of the app's. docs/sync-routes.md has the rest.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from flask import Blueprint, Flask

from switchboard_server.extension import Switchboard
from switchboard_server.protocols.sync import ConnectionClosed, WebSocket
from switchboard_server.routes.sync import view

__all__ = ["ConnectionClosed", "Sock", "WebSocket"]

# Where a Switchboard that Sock creates mounts its own routes.
DEFAULT_PREFIX = "/switchboard"


class Sock:
    """flask-sock's extension object, on Switchboard's transport and hub."""

    def __init__(self, app: Flask | None = None, *, switchboard: Switchboard | None = None) -> None:
        self.app: Flask | None = None
        self.switchboard = switchboard
        # Routes declared before `init_app`: (path, function, rule options).
        self._routes: list[tuple[str, Callable[..., None], dict[str, Any]]] = []
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Set Switchboard up on `app` unless it is already, then add the routes declared so far."""
        if "switchboard" not in app.extensions:
            (self.switchboard or Switchboard(url_prefix=DEFAULT_PREFIX)).init_app(app)
        self.app = app
        for path, function, options in self._routes:
            app.add_url_rule(path, view_func=view(function), websocket=True, **options)

    def route(
        self, path: str, bp: Blueprint | None = None, **kwargs: Any
    ) -> Callable[[Callable[..., None]], Callable[..., None]]:
        """A WebSocket route at `path`: the function gets `ws` (then any URL variables)."""

        def decorator(function: Callable[..., None]) -> Callable[..., None]:
            if bp is not None:
                bp.add_url_rule(path, view_func=view(function), websocket=True, **kwargs)
            elif self.app is not None:
                self.app.add_url_rule(path, view_func=view(function), websocket=True, **kwargs)
            else:
                self._routes.append((path, function, kwargs))
            return function

        return decorator
