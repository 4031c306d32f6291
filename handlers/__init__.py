"""Thin Flask adapters: they translate HTTP and WebSocket handshakes into hub calls and back.

Nothing here imports the hub at import time: Gunicorn's master imports handlers.worker (the worker
class) before it forks, and the hub's modules belong in the worker, after gevent has patched.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from flask import current_app

if TYPE_CHECKING:
    from hub import Hub


def current_hub() -> Hub:
    """The hub of the app serving this request (one per worker process)."""
    return current_app.extensions["switchboard"]
