"""Peer: the article's chat as a Switchboard sync route, as docs/sync-routes.md writes one.

Every client subscribes to the one channel and publishes what it sends: the hub frames each
message once (the native push, the message a JSON string in its `data`) and writes that frame to
every member, the sender included. Dialect `chat` of bench/PROTOCOL.md, at /rt/chat.

Run from the repo root:
  PORT=P .venv/bin/gunicorn -c gunicorn.conf.py 'bench.peers.switchboard_chat:create_app()'
"""

from __future__ import annotations

from flask import Flask

from switchboard_server import Switchboard


def create_app() -> Flask:
    app = Flask(__name__)
    sb = Switchboard(app, url_prefix="/rt")

    @sb.route("/chat")
    def chat(ws):
        ws.subscribe("chat")
        for message in ws:
            ws.publish("chat", message)

    return app
