"""Host apps that set Switchboard up wrongly; each must fail at start with a clear message."""

from __future__ import annotations

from flask import Flask

from switchboard_server import Switchboard


def route_at_the_socket_path() -> Flask:
    """The host already answers /rt/ws itself."""
    app = Flask(__name__)
    app.add_url_rule("/rt/ws", "own_socket", lambda: "the host's own")
    Switchboard(url_prefix="/rt").init_app(app)
    return app


def two_extensions() -> Flask:
    app = Flask(__name__)
    Switchboard(app, url_prefix="/rt")
    Switchboard(app, url_prefix="/realtime")
    return app


def init_app_twice() -> Flask:
    app = Flask(__name__)
    extension = Switchboard(url_prefix="/rt")
    extension.init_app(app)
    extension.init_app(app)
    return app
