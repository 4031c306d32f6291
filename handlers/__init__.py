"""Thin Flask adapters: they translate HTTP and WebSocket handshakes into hub calls and back."""

from flask import current_app

from hub import Hub


def current_hub() -> Hub:
    """The hub of the app serving this request (one per worker process)."""
    return current_app.extensions["switchboard"]
