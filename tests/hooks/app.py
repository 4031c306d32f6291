"""A host app whose own code runs on Switchboard's events, mounted under /rt (docs/hooks.md).

Gunicorn runs it from the repository root:
    gunicorn -k switchboard_server.Worker -b 127.0.0.1:PORT 'tests.hooks.app:create_app()'
"""

from __future__ import annotations

import json
import os

import gevent
from flask import Flask, jsonify, request, session

from switchboard_server import Refuse, Switchboard

sb = Switchboard(url_prefix="/rt", protocols=("native", "graphql", "pusher"))
# What the disconnect, join and leave hooks were told: one JSON line each, appended to the file
# HOOKS_EVENTS names, so that what every worker heard is in one place.
EVENTS = os.environ.get("HOOKS_EVENTS", os.devnull)


def record(**event) -> None:
    with open(EVENTS, "a") as events:
        events.write(json.dumps(event) + "\n")


@sb.on_connect
def who(connect):
    """The logged-in user from Flask's session; `?deny=1` is turned away; `?broken=1` is a bug."""
    if connect.args.get("deny"):
        raise Refuse("this server does not want you today")
    if connect.args.get("broken"):
        raise RuntimeError("a bug in the connect hook")
    if connect.args.get("wrong"):
        return {"name": "no user key"}
    if "user" in session:
        return {"user": session["user"], "info": {"via": "session"}}
    return None  # the token's identity, or anonymous


@sb.on_subscribe
def may_subscribe(client, channel):
    if channel.startswith("staff-") and client.user != "boss":
        return False
    if channel.startswith("presence-"):
        return {"role": "boss" if client.user == "boss" else "member"}
    return True


@sb.on_publish(api=True)
def check(publish):
    data = publish.data
    if isinstance(data, dict) and "text" in data:
        if not data["text"].strip():
            raise Refuse("empty messages are not published", code="bad_request")
        if data["text"] == "crash":
            raise ValueError("a bug in the publish hook")
        publish.data = {**data, "text": data["text"].strip(), "checked": True}


@sb.on_disconnect
def gone(client, code):
    record(event="disconnect", user=client.user, code=code)


@sb.on_join
def joined(channel, member):
    record(event="join", channel=channel, user=member["user"])


@sb.on_leave
def left(channel, member):
    record(event="leave", channel=channel, user=member["user"])


@sb.rpc("add")
def add(client, params):
    return {"sum": params["a"] + params["b"], "for": client.user}


@sb.rpc("slow")
def slow(client, seconds):
    gevent.sleep(seconds)
    return "done"


@sb.rpc("boom")
def boom(client, params):
    raise KeyError("a bug in an RPC method")


@sb.rpc("not_json")
def not_json(client, params):
    return object()


def create_app() -> Flask:
    app = Flask(__name__)
    app.secret_key = "hooks-test-secret"

    @app.post("/login")
    def login():
        session["user"] = request.form["name"]
        return jsonify(user=session["user"])

    sb.init_app(app)
    return app
