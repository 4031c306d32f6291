"""Open routes: the health check and the static pages."""

from __future__ import annotations

from flask import Blueprint, jsonify

from handlers import current_hub

bp = Blueprint("pages", __name__)


@bp.get("/healthz")
def healthz():
    """Ready (200) or degraded (503, with the reason): a balancer can route around a worker."""
    hub = current_hub()
    problem = hub.broker.problem()
    if problem is not None:
        response = jsonify(status="degraded", reason=problem, connections=len(hub.connections))
        response.status_code = 503
        return response
    return jsonify(status="ok", connections=len(hub.connections))
