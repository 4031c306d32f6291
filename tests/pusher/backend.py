"""The application back end a Pusher user runs beside Switchboard, built on the `pusher` library.

It does what such a back end does: signs private and presence subscriptions (`/pusher/auth`, and
`/broadcasting/auth` as Laravel Echo expects), triggers events (`/trigger`, for the Node tests),
and receives webhooks, keeping only those `validate_webhook` accepts. It also serves the browser
test page with pusher-js's and Laravel Echo's browser builds, so the page's auth requests are
same-origin. A real Flask app on werkzeug's threaded server, in a thread of the test process.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import pusher
from flask import Flask, jsonify, request, send_file
from werkzeug.serving import make_server

from tests.integration.servers import ROOT

APP_ID, KEY, SECRET = "1", "key1", "secret1"
OTHER_APP_ID, OTHER_KEY, OTHER_SECRET = "2", "key2", "secret2"
APPS = f"{APP_ID}:{KEY}:{SECRET},{OTHER_APP_ID}:{OTHER_KEY}:{OTHER_SECRET}"
PAGE = Path(__file__).with_name("page.html")
BUILDS = {
    "pusher.js": ROOT / "node_modules" / "pusher-js" / "dist" / "web" / "pusher.min.js",
    "echo.js": ROOT / "node_modules" / "laravel-echo" / "dist" / "echo.iife.js",
}


def library(port: int, app_id: str = APP_ID, key: str = KEY, secret: str = SECRET) -> pusher.Pusher:
    """The `pusher` server library, pointed at a Switchboard on `port`."""
    return pusher.Pusher(app_id=app_id, key=key, secret=secret, host="127.0.0.1", port=port, ssl=False)


class Backend:
    """The back end, for a Switchboard listening (or about to listen) on `switchboard_port`."""

    def __init__(self, switchboard_port: int) -> None:
        self.pusher = library(switchboard_port)
        self.webhooks: list[dict] = []  # verified webhook bodies, in arrival order
        self.rejected = 0  # webhooks whose signature did not verify
        self.attempts = 0
        self.fail_next = 0  # answer this many webhook requests with 500 first
        self._changed = threading.Condition()
        self.app = self._build()
        self._server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    def _build(self) -> Flask:
        app = Flask(__name__)

        @app.post("/pusher/auth")
        @app.post("/broadcasting/auth")
        def auth():
            """A user named by the page (`user`); `forger` gets a signature made with the wrong secret."""
            socket_id, channel = request.form["socket_id"], request.form["channel_name"]
            user = request.form.get("user", "guest")
            signer = library(1, secret="not-the-secret") if user == "forger" else self.pusher
            if not channel.startswith(("private-", "presence-")):
                return jsonify(error="not a protected channel"), 403
            member = {"user_id": user, "user_info": {"name": user.title()}}
            return jsonify(signer.authenticate(channel, socket_id, member if channel.startswith("presence-") else None))

        @app.post("/trigger")
        def trigger():
            body = request.get_json()
            return jsonify(self.pusher.trigger(body["channels"], body["event"], body["data"], body.get("socket_id")))

        @app.post("/webhooks")
        def webhooks():
            with self._changed:
                self.attempts += 1
                if self.fail_next:
                    self.fail_next -= 1
                    return "not now", 500
                body = request.get_data(as_text=True)
                verified = self.pusher.validate_webhook(
                    request.headers.get("X-Pusher-Key", ""), request.headers.get("X-Pusher-Signature", ""), body
                )
                if verified is None:
                    self.rejected += 1
                    return "bad signature", 401
                self.webhooks.append(verified)
                self._changed.notify_all()
            return "", 200

        @app.get("/")
        def page():
            return send_file(PAGE)

        @app.get("/<name>")
        def build(name: str):
            return send_file(BUILDS[name], mimetype="text/javascript")

        return app

    def events(self) -> list[dict]:
        """Every webhook event received so far, in order."""
        with self._changed:
            return [event for hook in self.webhooks for event in hook["events"]]

    def wait_events(self, done: Callable[[list[dict]], bool], timeout: float = 20.0) -> list[dict]:
        """Wait until the events received so far satisfy `done`; returns them."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                events = [event for hook in self.webhooks for event in hook["events"]]
                if done(events):
                    return events
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"webhook events never matched; got {events}")
                self._changed.wait(left)

    def close(self) -> None:
        self._server.shutdown()
        self._thread.join(10)
