"""A small host app with sync routes on its Switchboard (`sb.route`), under /rt.

    gunicorn -k switchboard_server.Worker -b 127.0.0.1:8000 'tests.syncroutes.host:create_app()'

Each route is a plain function of the kind the tests drive: it reports what it saw by sending it,
or, once its client has gone, by publishing it on the `ended` channel for a witness to read.
"""

from __future__ import annotations

import logging

import gevent
from flask import Flask, jsonify, request

from switchboard_server import Refuse, Switchboard
from switchboard_server.sync import ConnectionClosed

sb = Switchboard(url_prefix="/rt")


@sb.on_connect
def who(connect):
    """`?as=NAME` names the user (as a session cookie would), `?deny=1` is turned away."""
    if connect.args.get("deny"):
        raise Refuse("not today")
    return {"user": connect.args["as"]} if "as" in connect.args else None


@sb.on_disconnect
def gone(client, code):
    """Tells the `disconnects` channel who left and how, as soon as the hub has let go."""
    sb.publish("disconnects", {"user": client.user, "code": code})


def create_app() -> Flask:
    # The host's logging: the route's traceback must reach Gunicorn's output through it.
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s %(message)s")
    app = Flask(__name__)

    @app.get("/ready")
    def ready():
        return jsonify(ok=True)

    @app.post("/notify")
    def notify():
        """A plain view publishing with the extension."""
        return jsonify(offset=sb.publish(request.form["channel"], {"text": request.form["text"]}))

    sb.init_app(app)
    return app


@sb.route("/ws/wait")
def wait(ws):
    """receive(timeout=...) with nothing sent: None."""
    ws.send(repr(ws.receive(timeout=float(request.args["timeout"]))))


@sb.route("/ws/shout")
def shout(ws):
    """Iteration: every message back in capitals until `end`; the return closes with 1000."""
    count = 0
    for message in ws:
        if message == "end":
            break
        count += 1
        ws.send(message.upper())
    ws.send(f"{count} messages")


@sb.route("/ws/boom")
def boom(ws):
    """A bug: closes with 1011, the traceback in the log."""
    ws.receive()
    raise RuntimeError("the game broke down")


@sb.route("/ws/watched/<name>")
def watched(ws, name):
    """An echo that tells the `ended` channel how its client left (its ConnectionClosed)."""
    try:
        while True:
            ws.send(ws.receive())
    except ConnectionClosed as closed:
        sb.publish("ended", {"name": name, "reason": closed.reason, "message": closed.message})
        raise


@sb.route("/ws/game")
def game(ws):
    """Channels: subscribe to ?channel=, then `who` asks presence, `leave` unsubscribes, and any
    other message is published to the channel (and so comes back, as a push)."""
    channel = request.args["channel"]
    ws.subscribe(channel)
    ws.send(f"subscribed as {ws.user}")
    for message in ws:
        if message == "who":
            ws.send(repr(sorted(member["user"] for member in ws.presence(channel))))
        elif message == "leave":
            ws.send(f"left: {ws.unsubscribe(channel)}")
        else:
            ws.publish(channel, {"said": message})


@sb.route("/ws/busy")
def busy(ws):
    """Subscribes, then is busy elsewhere for ?for= seconds without a single `ws` call: whatever
    its client does meanwhile (a ping, a close) is the server's to handle alone."""
    ws.subscribe("busy")
    ws.send("subscribed")
    gevent.sleep(float(request.args["for"]))
