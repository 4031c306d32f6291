"""The "switchboard-extension" peer with a no-op publish hook and RPC methods registered.

What an application's own code on every publish costs, measured against the same host app
without hooks (bench/peers/switchboard_extension.py) in the same run; and the round trip of a
call to a no-op RPC method beside a publish's (the `rpc_rtt` scenario).
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

    @sb.rpc("noop")
    def noop(client, params) -> None:
        """Does nothing: what a call costs on its own."""

    sb.init_app(app)
    return app
