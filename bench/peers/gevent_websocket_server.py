"""Peer: gevent-websocket's WebSocketHandler on gevent.pywsgi.WSGIServer, no Flask.

Represents the older gevent stack that Flask-SocketIO's gevent mode sits on (dialect `json`,
see bench/PROTOCOL.md): one greenlet per connection, `ws.send()` called for each subscriber
in turn, the delivery string built once per publish. gevent-websocket implements no
extensions, so permessage-deflate is never negotiated. No server pings.

Run from the repo root:  .venv/bin/python -m bench.peers.gevent_websocket_server PORT
"""

import json
import sys

from gevent.pywsgi import WSGIServer
from geventwebsocket.exceptions import WebSocketError
from geventwebsocket.handler import WebSocketHandler

# channel name -> subscribed geventwebsocket WebSocket objects
channels: dict[str, set] = {}


def publish(channel: str, text: str) -> None:
    for ws in list(channels.get(channel, ())):
        try:
            ws.send(text)
        except WebSocketError:  # closed or reset: forget it, keep serving the others
            channels.get(channel, set()).discard(ws)


def pubsub(ws) -> None:
    joined: set[str] = set()
    try:
        while (raw := ws.receive()) is not None:
            try:
                msg = json.loads(raw)
                kind, channel = msg.get("type"), str(msg.get("channel"))
            except (ValueError, AttributeError):
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
    finally:
        for channel in joined:
            subs = channels.get(channel)
            if subs is not None:
                subs.discard(ws)
                if not subs:
                    del channels[channel]


def echo(ws) -> None:
    while (message := ws.receive()) is not None:
        ws.send(message, binary=isinstance(message, (bytes, bytearray)))


def app(environ, start_response):
    ws = environ.get("wsgi.websocket")
    route = {"/ws": pubsub, "/ws/echo": echo}.get(environ["PATH_INFO"])
    if ws is None or route is None:
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"Not Found"]
    try:
        route(ws)
    except WebSocketError:
        pass  # our own send hit a dead socket: this connection is over
    return []


if __name__ == "__main__":
    # backlog: gevent's default is 128; 2048 matches gunicorn's default (see README).
    # log=None: no access-log line per closed WebSocket (gunicorn's default is also off).
    WSGIServer(
        ("127.0.0.1", int(sys.argv[1])),
        app,
        handler_class=WebSocketHandler,
        backlog=2048,
        log=None,
    ).serve_forever()
