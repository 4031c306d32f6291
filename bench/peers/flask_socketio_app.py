"""Peer: Flask-SocketIO in gevent mode (gevent-websocket underneath), rooms for channels.

Dialect `socketio` of bench/PROTOCOL.md (Engine.IO v4, WebSocket transport only):
`subscribe` joins the room named after the channel and acks, `publish` does
`emit("message", ..., to=channel)` (python-socketio encodes the packet once per emit and
sends it to each member in turn), `echo` emits the data straight back. gevent-websocket
implements no extensions, so permessage-deflate is never negotiated. Engine.IO pings every
25 s and drops a client that has not answered `3` within 20 s.

Run from the repo root:
  .venv/bin/gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 1 \
      --worker-connections 20000 --graceful-timeout 1 --no-control-socket \
      -b 127.0.0.1:PORT bench.peers.flask_socketio_app:app
"""

from flask import Flask
from flask_socketio import SocketIO, emit, join_room

app = Flask(__name__)
socketio = SocketIO(app, async_mode="gevent", transports=["websocket"])


@socketio.on("subscribe")
def subscribe(channel):
    join_room(channel)
    return True  # the ack, sent once the client is in the room


@socketio.on("publish")
def publish(msg):
    channel = msg["channel"]
    emit("message", {"channel": channel, "data": msg["data"]}, to=channel)


@socketio.on("echo")
def echo(data):
    emit("echo", data)
