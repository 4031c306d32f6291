"""The "switchboard-extension" peer with a no-op publish hook and an RPC method registered.

What an application's own code on every publish costs, measured against the same host app
without hooks (bench/peers/switchboard_extension.py) in the same run.
"""

from __future__ import annotations

from flask import Flask

from switchboard_server import Switchboard


def create_app() -> Flask:
    app = Flask(__name__)
    sb = Switchboard(url_prefix="/rt", protocols=("native", "echo"))

    @sb.on_publish
    def accept(publish) -> None:
        """Looks at every client publish and lets it through unchanged."""

    @sb.rpc("echo")
    def echo(client, params):
        return params

    sb.init_app(app)
    return app
