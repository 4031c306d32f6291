"""Open routes: the health check and the static pages."""

from __future__ import annotations

from flask import jsonify

from switchboard_server.routes import current_hub
from switchboard_server.routes.blueprint import blueprint

bp = blueprint("health", __name__)


@bp.get("/healthz")
def healthz():
    """Ready (200), draining (503: the worker is stopping) or degraded (503, with the reason):
    a balancer or a readiness probe can route around a worker."""
    hub = current_hub()
    if hub.draining:
        response = jsonify(status="draining", connections=len(hub.connections))
        response.status_code = 503
        return response
    problem = hub.broker.problem()
    if problem is not None:
        response = jsonify(status="degraded", reason=problem, connections=len(hub.connections))
        response.status_code = 503
        return response
    return jsonify(status="ok", connections=len(hub.connections))
