"""Sync routes' Flask side: the view that answers a handshake and hands the socket to a function.

The function runs after the view has returned (protocols/sync.py), in the connection's greenlet, so
the view gives it a copy of the request's context: `request`, `session`, `g` and `current_app`
work in it as they did in a flask-sock route, and the app's teardown runs when it returns.
The handshake is decided as `/ws` decides one: `?token=` says who the user is, the connection
limits refuse before the upgrade; here a bad token is refused before it too (401), since no
protocol after the upgrade could word it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import wraps
from typing import Any

from flask import Flask, Response, copy_current_request_context, request

from switchboard_server.core.auth import ANONYMOUS, Identity
from switchboard_server.core.errors import ProtocolError
from switchboard_server.core.hooks import connect_identity
from switchboard_server.core.hub import Hub
from switchboard_server.protocols import sync
from switchboard_server.routes import current_hub
from switchboard_server.routes.blueprint import blueprint
from switchboard_server.routes.errors import error_response
from switchboard_server.routes.websocket import handshake, upgrade
from switchboard_server.transport.handshake import log_refusal

Route = Callable[..., None]


def view(function: Route) -> Callable[..., Any]:
    """The Flask view for a sync route: `function(ws, **url_variables)` once upgraded."""

    @wraps(function)
    def answer(**url_variables: Any) -> Response:
        hub = current_hub()
        address = request.remote_addr or ""
        try:
            identity = _identity(hub, address)
        except ProtocolError as error:
            log_refusal(hub.counters, address, error.code, error.message)
            return error_response(error.code, error.message, error.http_status)

        @copy_current_request_context
        def call(ws: sync.WebSocket) -> None:
            _let_go_of_http(request.environ)
            function(ws, **url_variables)

        return upgrade(sync.runner(hub, call, request.endpoint or function.__name__), identity)

    return answer


# What the WSGI environ holds of the HTTP exchange the socket came from: Gunicorn's request
# parser, its read buffer and the socket object. The function's copy of the request context would
# keep them for the connection's whole life, about as much again as the connection itself.
_HTTP_EXCHANGE = ("wsgi.input", "gunicorn.socket", "wsgi.early_hints")


def _let_go_of_http(environ: dict) -> None:
    for key in _HTTP_EXCHANGE:
        environ.pop(key, None)


def _identity(hub: Hub, address: str) -> Identity:
    """Who connects (the `?token=`'s user, or anonymous, as the application's connect hook may
    decide otherwise), if the connection limits let them."""
    token = request.args.get("token")
    identity = hub.tokens.verify(token) if token is not None else ANONYMOUS
    identity = connect_identity(hub.hooks, handshake(), identity)
    hub.admit(identity, address)
    return identity


def mount(app: Flask, prefix: str, path: str, function: Route, options: dict[str, Any]) -> None:
    """Add a sync route at `prefix + path`, on a blueprint of its own so that Switchboard's JSON
    errors and hooks apply to it and to nothing of the host's."""
    options = dict(options)
    endpoint = options.pop("endpoint", None) or function.__name__
    if prefix + path in {rule.rule for rule in app.url_map.iter_rules()}:
        raise RuntimeError(f"the app already has a route at {prefix + path}: choose another path for {endpoint}")
    bp = blueprint(f"route_{endpoint}", __name__)
    bp.add_url_rule(path, endpoint, view(function), websocket=True, **options)
    app.register_blueprint(bp, url_prefix=prefix or None)
