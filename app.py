"""The application factory: config, one hub per app, the route blueprints; nothing else."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from flask import Flask

from handlers import api, demo, errors, graphql, ops, pages, pusher, websocket
from hub import Config, Hub, logs
from hub.graphql import GraphQLServer
from hub.pusher.service import PusherService


def create_app(config: Config | Mapping[str, Any] | None = None) -> Flask:
    """Build the app; `config` is a Config, or overrides applied on top of the environment's."""
    if config is None:
        config = Config.from_env()
    elif isinstance(config, Mapping):
        config = dataclasses.replace(Config.from_env(), **config)
    logs.configure(config.log_level, config.log_format)
    app = Flask(__name__, static_folder=Path(__file__).parent / "static")
    app.config["MAX_CONTENT_LENGTH"] = config.max_message_size
    hub = app.extensions["switchboard"] = Hub(config)
    app.extensions["switchboard.graphql"] = GraphQLServer(hub)
    app.extensions["switchboard.pusher"] = PusherService.from_config(hub)
    errors.register(app)
    app.register_blueprint(websocket.bp)
    app.register_blueprint(graphql.bp)
    app.register_blueprint(pusher.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(demo.bp)
    app.register_blueprint(ops.bp)
    return app
