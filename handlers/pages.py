"""Open routes: the health check and the static pages."""

from __future__ import annotations

from flask import Blueprint, jsonify

from handlers import current_hub

bp = Blueprint("pages", __name__)


@bp.get("/healthz")
def healthz():
    hub = current_hub()
    return jsonify(status="ok", connections=len(hub.connections), epoch=hub.epoch)
