"""Switchboard's blueprints, each carrying Switchboard's request rules itself.

A host app keeps its own error pages, body limit and request hooks: Switchboard's JSON errors, its
body limit (SWITCHBOARD_MAX_MESSAGE_SIZE, 413 above it, chunked bodies included) and the start of
its metrics apply to requests its own blueprints serve, and to nothing else.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, current_app, request

from switchboard_server.routes import errors
from switchboard_server.routes.bodies import read_unsized_body


def blueprint(name: str, import_name: str, **options: Any) -> Blueprint:
    """A Blueprint named `switchboard_<name>` (never clashing with the host's own) with the rules."""
    bp = Blueprint(f"switchboard_{name}", import_name, **options)
    bp.before_request(_before_request)
    errors.register(bp)
    return bp


def _before_request() -> None:
    state = current_app.extensions["switchboard"]
    request.max_content_length = state.config.max_message_size
    read_unsized_body()
    if state.recorder is not None:
        state.recorder.start()
