"""The standalone server's factory: the package's server, plus this checkout's demo page."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from handlers import demo
from switchboard_server.core.config import Config
from switchboard_server.standalone import create_app as create_server


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Build the app; `config` is a Config, or overrides applied on top of the environment's."""
    app = create_server(config, static_folder=Path(__file__).parent / "static")
    app.register_blueprint(demo.bp)
    return app
