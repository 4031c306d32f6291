"""Operations routes: Prometheus metrics (GET /metrics) and the live stats page (GET /stats).

SWITCHBOARD_METRICS says where /metrics answers: behind the API key like /api (the default), alone
on an address of its own (Gunicorn also listens there, and that address serves nothing else), or
nowhere. The stats page is off unless SWITCHBOARD_STATS_PAGE=1; the page holds no figures itself:
it asks for the API key and polls GET /stats.json with it.
"""

from __future__ import annotations

from flask import Blueprint, Flask, Response, current_app, jsonify, request, send_from_directory
from flask.blueprints import BlueprintSetupState

from handlers import current_hub
from handlers.api import require_api_key
from hub import ProtocolError
from hub.metrics import Recorder

bp = Blueprint("ops", __name__)


@bp.record_once
def _create_recorder(state: BlueprintSetupState) -> None:
    app: Flask = state.app
    config = app.extensions["switchboard"].config
    if config.metrics not in ("api", "off") and not _port(config.metrics).isdigit():
        raise ValueError(f"SWITCHBOARD_METRICS={config.metrics!r} must be api, off or host:port")
    wanted = config.metrics != "off" or config.stats_page
    app.extensions["switchboard.metrics"] = Recorder(app.extensions["switchboard"]) if wanted else None


def _port(address: str) -> str:
    return address.rpartition(":")[2]


def _recorder() -> Recorder:
    return current_app.extensions["switchboard.metrics"]


@bp.before_app_request
def _start_recorder_and_keep_metrics_apart() -> None:
    """Start syncing on the worker's first request; on a metrics address serve /metrics only."""
    recorder = _recorder()
    if recorder is not None:
        recorder.start()
    metrics = current_hub().config.metrics
    if ":" in metrics and (request.environ.get("SERVER_PORT") == _port(metrics)) != (request.path == "/metrics"):
        raise ProtocolError("not_found", "not here: /metrics has an address of its own (SWITCHBOARD_METRICS)")


@bp.get("/metrics")
def metrics():
    setting = current_hub().config.metrics
    if setting == "off":
        raise ProtocolError("not_found", "metrics are off: set SWITCHBOARD_METRICS=api or host:port")
    if setting == "api":
        require_api_key()
    body, content_type = _recorder().exposition()
    return Response(body, content_type=content_type)


def _require_stats_page() -> None:
    if not current_hub().config.stats_page:
        raise ProtocolError("not_found", "the stats page is off: start the server with SWITCHBOARD_STATS_PAGE=1")


@bp.get("/stats")
def stats_page():
    _require_stats_page()
    response = send_from_directory(current_app.static_folder, "stats.html")
    # The page runs only its own script and talks only to this server.
    response.headers["Content-Security-Policy"] = "default-src 'self'; style-src 'self' 'unsafe-inline'"
    return response


@bp.get("/stats.json")
def stats_json():
    """This server's figures, added up over its workers; the page turns them into rates."""
    _require_stats_page()
    require_api_key()
    return jsonify(_recorder().snapshot())
