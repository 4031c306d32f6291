"""Peer: the article's chat on Flask-SocketIO, as its documentation writes one.

Every message a client sends with Socket.IO's `send` goes to every connected client, the sender
included, with `send(message, broadcast=True)` (Flask-SocketIO's "Broadcasting" section):
python-socketio encodes the packet once and writes it to each client in turn. Dialect
`socketio-chat` of bench/PROTOCOL.md. It runs as bench/peers/flask_socketio_app.py does: gevent
mode on gevent-websocket, which Flask-SocketIO's deployment docs give for Gunicorn.

Run from the repo root:
  .venv/bin/gunicorn -k geventwebsocket.gunicorn.workers.GeventWebSocketWorker -w 1 \\
      --worker-connections 20000 --graceful-timeout 1 --no-control-socket \\
      -b 127.0.0.1:PORT bench.peers.flask_socketio_chat:app
"""

from flask import Flask
from flask_socketio import SocketIO, send

app = Flask(__name__)
socketio = SocketIO(app, async_mode="gevent", transports=["websocket"])


@socketio.on("message")
def handle_message(message):
    send(message, broadcast=True)
