"""Switchboard: real-time channels for Flask under Gunicorn's gevent workers.

`from switchboard_server import Switchboard` for the Flask extension; the Gunicorn worker class is
`switchboard_server.Worker`. Importing this package loads nothing else until a name is used, so
Gunicorn's master can name the worker before gevent patches the standard library.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.2.0"

_NAMES = {
    "Switchboard": "switchboard_server.extension",
    "Config": "switchboard_server.core.config",
    "Refuse": "switchboard_server.core.hooks",
    "Client": "switchboard_server.core.hooks",
    "Connect": "switchboard_server.core.hooks",
    "Publish": "switchboard_server.core.hooks",
    "ProtocolError": "switchboard_server.core.errors",
    "Worker": "switchboard_server.transport.worker",
    "create_app": "switchboard_server.standalone",
}
__all__ = [*_NAMES, "__version__"]


def __getattr__(name: str) -> Any:
    module = _NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'switchboard_server' has no attribute {name!r}")
    return getattr(import_module(module), name)
