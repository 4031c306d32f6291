"""A host app whose namespaces are declared in Python, with every protocol and one sync route.

    gunicorn -k switchboard_server.Worker -b 127.0.0.1:8000 'tests.namespaces.host:create_app()'

`ticker.` channels are latest-value channels conflated per `symbol`; `quiet.` channels keep one
message and refuse client publishes. Pusher's channel names hold no `:`, hence the dots.
"""

from __future__ import annotations

from flask import Flask, jsonify, request

from switchboard_server import Switchboard

sb = Switchboard(
    protocols=("native", "graphql", "pusher"),
    namespaces={"ticker.": {"latest": True, "history_size": 10}},
)
sb.namespace("ticker.", conflate=True, conflation_key="symbol", conflation_window=0.05)
sb.namespace("quiet.", history_size=1, client_publish=False)


def create_app() -> Flask:
    app = Flask(__name__)

    @app.get("/ready")
    def ready():
        return jsonify(ok=True)

    @app.post("/publish")
    def publish():
        """The extension's own publish, as a view of the application would call it."""
        body = request.get_json()
        return jsonify(offset=sb.publish(body["channel"], body["data"]))

    sb.init_app(app)
    return app


@sb.route("/ws/feed")
def feed(ws):
    """A sync route subscribing its client to ?channel= (its pushes go straight to the client);
    `again` subscribes again, as a route does after its client asked to start over."""
    channel = request.args["channel"]
    ws.subscribe(channel)
    for message in ws:
        if message == "again":
            ws.unsubscribe(channel)
            ws.subscribe(channel)
