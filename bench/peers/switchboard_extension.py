"""Switchboard as a team adopts it: a host Flask app of its own, with the extension under /rt.

The benchmark's "switchboard-extension" peer; it measures what mounting under a prefix costs
against the standalone server ("switchboard"), which runs the same engine at the root.
"""

from __future__ import annotations

from flask import Flask

from switchboard_server import Switchboard


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/")
    def home() -> str:
        return "the host app's own page"

    Switchboard(app, url_prefix="/rt", protocols=("native", "echo"))
    return app
