"""Peer: the naive first attempt, Flask + flask-sock, `ws.send()` to each subscriber in a loop.

This is the baseline B0 of bench/PROTOCOL.md's `json` dialect: a module-level dict
channel -> set of flask-sock (simple-websocket) connections; a publish builds the text once
with json.dumps and then calls `ws.send(text)` for every subscriber in turn, so wsproto frames
(and, if negotiated, compresses) it per client. simple-websocket accepts permessage-deflate
whenever the client offers it (wsproto defaults: 15 window bits, context takeover). No server
pings. Dead clients are dropped when a send to them fails.

Run from the repo root (gunicorn's gevent worker monkey-patches before importing this):
  .venv/bin/gunicorn -k gevent -w 1 --worker-connections 20000 --graceful-timeout 1 \
      --no-control-socket -b 127.0.0.1:PORT bench.peers.flasksock_loop:app
"""

import json

from flask import Flask
from flask_sock import Sock

app = Flask(__name__)
sock = Sock(app)
# channel name -> subscribed simple_websocket.Server objects
channels: dict[str, set] = {}


def publish(channel: str, text: str) -> None:
    for ws in list(channels.get(channel, ())):
        try:
            ws.send(text)
        except Exception:  # noqa: BLE001 - as a first attempt does: any failure drops the client
            channels.get(channel, set()).discard(ws)


@sock.route("/ws")
def pubsub(ws) -> None:
    joined: set[str] = set()
    try:
        while True:
            try:
                msg = json.loads(ws.receive())
                kind, channel = msg.get("type"), str(msg.get("channel"))
            except (ValueError, TypeError, AttributeError):
                continue  # not a JSON object: ignore it
            if kind == "subscribe":
                channels.setdefault(channel, set()).add(ws)
                joined.add(channel)
                ws.send(json.dumps({"type": "reply", "id": msg.get("id")}))
            elif kind == "publish":
                publish(
                    channel,
                    json.dumps({"type": "message", "channel": channel, "data": msg.get("data")}),
                )
    finally:  # flask-sock ends the loop with ConnectionClosed when the client goes away
        for channel in joined:
            subs = channels.get(channel)
            if subs is not None:
                subs.discard(ws)
                if not subs:
                    del channels[channel]


@sock.route("/ws/echo")
def echo(ws) -> None:
    while True:
        ws.send(ws.receive())
