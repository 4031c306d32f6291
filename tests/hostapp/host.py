"""A host Flask app of its own, with Switchboard mounted under /rt: what docs/flask.md describes.

It has what a real app has (a session login, template pages, an upload well over Switchboard's
message limit, its own 404 page and request hooks) and publishes from a plain view. Gunicorn runs
it from the repository root:

    gunicorn -k switchboard_server.Worker -b 127.0.0.1:8000 'tests.hostapp.host:create_app()'

HOSTAPP_WITHOUT_SWITCHBOARD=1 builds the same app without Switchboard, the baseline the tests
compare with. Nothing here patches gevent (the worker does), so importing it alone is safe.
"""

from __future__ import annotations

import os
import secrets
from collections import Counter
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, g, jsonify, render_template, request, send_file, session

from switchboard_server import Switchboard

# The browser client is the checkout's static/switchboard.js; a host app serves a copy of its own.
BROWSER_CLIENT = Path(__file__).resolve().parents[2] / "static" / "switchboard.js"

sb = Switchboard(url_prefix="/rt", protocols=("native", "graphql", "pusher", "echo"))
# The paths the host's own hook saw, in this (single) worker: a handshake Switchboard's worker
# answers before Flask never reaches it.
HOOKED: Counter[str] = Counter()
pages = Blueprint("pages", __name__)


def create_app() -> Flask:
    """The host app; Switchboard is set up on it unless HOSTAPP_WITHOUT_SWITCHBOARD is set."""
    app = Flask(__name__)
    app.secret_key = os.environ.get("HOSTAPP_SECRET_KEY", "host-app-test-secret")
    app.config["MAX_CONTENT_LENGTH"] = 4 * 1024 * 1024  # the host's own limit, not Switchboard's 64 KiB
    app.before_request(tag_request)
    app.after_request(add_headers)
    app.register_error_handler(404, not_found)
    app.register_blueprint(pages)
    if not os.environ.get("HOSTAPP_WITHOUT_SWITCHBOARD"):
        sb.init_app(app)
    return app


def tag_request() -> None:
    """The host's own hook: every request it serves gets a tag."""
    g.request_tag = secrets.token_hex(4)
    HOOKED[request.path] += 1


def add_headers(response: Response) -> Response:
    response.headers["X-Host-Hook"] = "tagged" if "request_tag" in g else "untagged"
    return response


def not_found(error: Exception) -> tuple[str, int, dict[str, str]]:
    page = render_template("not_found.html", path=request.path)
    return page, 404, {"Content-Type": "text/html; charset=utf-8", "X-Host-Page": "not-found"}


@pages.post("/login")
def login() -> Response:
    name = request.form.get("name", "").strip()
    if not name:
        abort(400)
    session["user"] = name
    return jsonify(user=name)


@pages.get("/me")
def me() -> Response:
    return jsonify(user=session.get("user"), tagged="request_tag" in g)


@pages.get("/")
def home() -> str:
    return render_template("home.html", user=session.get("user"))


@pages.get("/chat")
def chat() -> str:
    """A page with the browser client on it, connected to /rt/ws and showing the room's messages."""
    return render_template("chat.html", user=session.get("user") or "guest")


@pages.post("/upload")
def upload() -> Response:
    """Multipart (a `file` field) or a raw body; answers with its size."""
    sent = request.files.get("file")
    return jsonify(size=len(sent.read()) if sent is not None else len(request.get_data()))


@pages.post("/notify")
def notify() -> Response:
    """Publish from a plain view, to every subscriber on every protocol."""
    channel = request.form["channel"]
    data = {"text": request.form["text"], "by": session.get("user")}
    offset = sb.publish(channel, data, event=request.form.get("event"))
    return jsonify(channel=channel, offset=offset)


@pages.get("/channel/<name>")
def channel(name: str) -> Response:
    """Who is on a channel and what it holds, read from a plain view."""
    epoch, offset, messages = sb.history(name, since=0)
    return jsonify(members=sb.presence(name), epoch=epoch, offset=offset, messages=messages)


@pages.get("/assets/switchboard.js")
def browser_client() -> Response:
    return send_file(BROWSER_CLIENT, mimetype="text/javascript")


@pages.get("/hooked")
def hooked() -> Response:
    """How many requests the host's hook saw, by path."""
    return jsonify(HOOKED)
