"""The chat's Flask app: a name to log in with, rooms, and Switchboard for everything live.

    gunicorn -k switchboard_server.Worker -b 127.0.0.1:8001 'examples.chat.app:create_app()'

Settings from the environment: CHAT_DATABASE_URL (an SQLAlchemy URL; SQLite in the instance
folder when unset) and CHAT_SECRET_KEY (signs the session cookie; set your own outside a try-out).
Nothing here patches gevent (the worker does), so importing it alone is safe.
"""

from __future__ import annotations

import os
from pathlib import Path

from flask import Blueprint, Flask, Response, abort, redirect, render_template, request, send_file, session, url_for

from .models import db
from .realtime import ROOM, sb

HERE = Path(__file__).resolve().parent
# The browser client is the checkout's static/switchboard.js, served by the app as its own asset.
BROWSER_CLIENT = HERE.parents[1] / "static" / "switchboard.js"
MAX_NAME = 40

pages = Blueprint("pages", __name__)


def create_app() -> Flask:
    """The chat app, its database tables created if missing, Switchboard mounted under /rt."""
    app = Flask(__name__, instance_path=str(HERE / "instance"))
    app.secret_key = os.environ.get("CHAT_SECRET_KEY", "chat-example: set CHAT_SECRET_KEY")
    app.config["SQLALCHEMY_DATABASE_URI"] = os.environ.get("CHAT_DATABASE_URL") or default_database(app)
    db.init_app(app)
    with app.app_context():
        db.create_all()
    app.register_blueprint(pages)
    sb.init_app(app)
    return app


def default_database(app: Flask) -> str:
    """SQLite in the instance folder (examples/chat/instance/chat.sqlite3), made on first start."""
    Path(app.instance_path).mkdir(exist_ok=True)
    return f"sqlite:///{Path(app.instance_path) / 'chat.sqlite3'}"


@pages.get("/")
def home() -> str:
    return render_template("home.html", user=session.get("user"))


@pages.post("/login")
def login() -> Response:
    """Any name will do (this is an example, not an account system); the room is where to go."""
    name = request.form.get("name", "").strip()
    room = request.form.get("room", "").strip() or "lobby"
    if not name or len(name) > MAX_NAME or not ROOM.fullmatch(room):
        return render_template("home.html", user=None, problem="a name (40 characters at most) and a room"), 400
    session["user"] = name
    return redirect(url_for("pages.room", name=room))


@pages.post("/logout")
def logout() -> Response:
    session.clear()
    return redirect(url_for("pages.home"))


@pages.get("/rooms/<name>")
def room(name: str) -> Response | str:
    if not ROOM.fullmatch(name):
        abort(404)
    if "user" not in session:
        return redirect(url_for("pages.home"))
    return render_template("room.html", room=name, user=session["user"])


@pages.get("/assets/switchboard.js")
def browser_client() -> Response:
    return send_file(BROWSER_CLIENT, mimetype="text/javascript")
