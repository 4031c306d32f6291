"""The standalone server: a Flask app that is Switchboard and nothing else, built from the extension.

`switchboard-server` runs it under Gunicorn (cli.py); the checkout's app.py adds the demo page to
it. Unlike the extension on a host app, it owns its app: every error is JSON, logging is set up
from SWITCHBOARD_LOG_LEVEL/FORMAT, every protocol is mounted, and /metrics answers by default.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask, current_app, request

from switchboard_server.core.config import Config
from switchboard_server.core.errors import ProtocolError
from switchboard_server.extension import Switchboard
from switchboard_server.ops import logs
from switchboard_server.routes import errors
from switchboard_server.state import PROTOCOLS


def create_app(config: Config | Mapping[str, Any] | None = None, static_folder: str | Path | None = None) -> Flask:
    """Build the server; `config` is a Config, or overrides applied on top of the environment's."""
    if config is None:
        config = Config.from_env()
    elif isinstance(config, Mapping):
        config = dataclasses.replace(Config.from_env(), **config)
    logs.configure(config.log_level, config.log_format)
    app = Flask(__name__, static_folder=static_folder)
    Switchboard(app, protocols=PROTOCOLS, config=config)
    errors.register(app)
    if ":" in config.metrics:
        app.before_request(_metrics_address_serves_metrics_only)
    return app


def _metrics_address_serves_metrics_only() -> None:
    """With SWITCHBOARD_METRICS=host:port, that address answers /metrics and nothing else (the
    metrics route itself refuses to answer anywhere else)."""
    metrics = current_app.extensions["switchboard"].config.metrics
    on_metrics_address = request.environ.get("SERVER_PORT") == metrics.rpartition(":")[2]
    if on_metrics_address and request.path != "/metrics":
        raise ProtocolError("not_found", "not here: /metrics has an address of its own (SWITCHBOARD_METRICS)")
