"""Operations routes: Prometheus metrics (GET /metrics) and the live stats page (GET /stats).

SWITCHBOARD_METRICS says where /metrics answers: behind the API key like /api (the default), alone
on an address of its own (Gunicorn also listens there, and that address serves nothing else), or
nowhere. The stats page is off unless SWITCHBOARD_STATS_PAGE=1; the page holds no figures itself:
it asks for the API key and polls GET /stats.json with it.
"""

from __future__ import annotations

from flask import Response, jsonify, request, send_from_directory

from switchboard_server.core.errors import ProtocolError
from switchboard_server.ops.metrics import Recorder
from switchboard_server.routes import current_hub, current_state
from switchboard_server.routes.api import require_api_key
from switchboard_server.routes.blueprint import blueprint

# The stats page's own files ship in the package, so an installed server can serve them.
bp = blueprint("ops", __name__, static_folder="../static", static_url_path="/switchboard-static")


def _recorder() -> Recorder:
    return current_state().recorder


@bp.get("/metrics")
def metrics():
    setting = current_hub().config.metrics
    if setting == "off":
        raise ProtocolError("not_found", "metrics are off: set SWITCHBOARD_METRICS=api or host:port")
    if setting == "api":
        require_api_key()
    elif request.environ.get("SERVER_PORT") != setting.rpartition(":")[2]:
        # Served without a key only on its own address, which only Gunicorn's bind opens.
        raise ProtocolError("not_found", "not here: /metrics has an address of its own (SWITCHBOARD_METRICS)")
    body, content_type = _recorder().exposition()
    return Response(body, content_type=content_type)


def _require_stats_page() -> None:
    if not current_hub().config.stats_page:
        raise ProtocolError("not_found", "the stats page is off: start the server with SWITCHBOARD_STATS_PAGE=1")


@bp.get("/stats")
def stats_page():
    _require_stats_page()
    response = send_from_directory(bp.static_folder, "stats.html")
    # The page runs only its own script and talks only to this server.
    response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'"
    return response


@bp.get("/stats.json")
def stats_json():
    """This server's figures, added up over its workers; the page turns them into rates."""
    _require_stats_page()
    require_api_key()
    return jsonify(_recorder().snapshot())
