"""Thin Flask adapters: they translate HTTP and WebSocket handshakes into hub calls and back.

Each module is a blueprint the extension mounts under its URL prefix. Errors, body limits and
request hooks are the blueprints' own (routes/errors.py): nothing here changes the host app.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from switchboard_server.core.hub import Hub
    from switchboard_server.state import SwitchboardState


def current_state() -> SwitchboardState:
    """The Switchboard of the app serving this request (one per worker process)."""
    return current_app.extensions["switchboard"]


def current_hub() -> Hub:
    return current_state().hub
