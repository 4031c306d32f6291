"""`switchboard-server`: the standalone server under Gunicorn, with Switchboard's worker and settings.

Options are the common settings; each sets the environment variable named in its help, so the
server reads them like any other setting. Anything after `--` goes to Gunicorn as it is.
`switchboard-server outbox-relay ...` runs the outbox relay instead (`outbox/command.py`).
"""

from __future__ import annotations

import argparse
import os
import sys

GUNICORN_CONFIG = "python:switchboard_server.transport.gunicorn_config"
APP = "switchboard_server.standalone:create_app()"


def parser() -> argparse.ArgumentParser:
    command = argparse.ArgumentParser(
        prog="switchboard-server",
        description="Run Switchboard, the real-time messaging server, under Gunicorn with gevent. "
        "Every SWITCHBOARD_* environment variable applies too (see the configuration page).",
        epilog="Example: switchboard-server --port 8000 --workers 2 --redis-url redis://127.0.0.1:6379/0 "
        "-- --access-logfile -. The outbox relay: switchboard-server outbox-relay --help.",
    )
    command.add_argument("--bind-host", help="address to listen on (SWITCHBOARD_BIND_HOST, default 127.0.0.1)")
    command.add_argument("--port", type=int, help="port to listen on (PORT, default 8000)")
    command.add_argument(
        "--workers", type=int, help="Gunicorn workers (SWITCHBOARD_WORKERS; default 1, or one per core with Redis)"
    )
    command.add_argument("--redis-url", help="Redis for several workers or machines (SWITCHBOARD_REDIS_URL)")
    command.add_argument("--api-key", help="bearer key for the HTTP API (SWITCHBOARD_API_KEY)")
    command.add_argument("--token-secret", help="HS256 secret for connection tokens (SWITCHBOARD_TOKEN_SECRET)")
    command.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="SWITCHBOARD_LOG_LEVEL (default info)"
    )
    command.add_argument("gunicorn_args", nargs="*", help="after --: further Gunicorn options")
    return command


OPTION_VARIABLES = {
    "bind_host": "SWITCHBOARD_BIND_HOST",
    "port": "PORT",
    "workers": "SWITCHBOARD_WORKERS",
    "redis_url": "SWITCHBOARD_REDIS_URL",
    "api_key": "SWITCHBOARD_API_KEY",
    "token_secret": "SWITCHBOARD_TOKEN_SECRET",
    "log_level": "SWITCHBOARD_LOG_LEVEL",
}


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["outbox-relay"]:
        from switchboard_server.outbox.command import main as relay_main

        relay_main(argv[1:])
        return
    options = parser().parse_args(argv)
    for name, variable in OPTION_VARIABLES.items():
        value = getattr(options, name)
        if value is not None:
            os.environ[variable] = str(value)
    # Gunicorn becomes this process, so signals (SIGTERM, SIGHUP) reach its master directly.
    args = [sys.executable, "-m", "gunicorn", "-c", GUNICORN_CONFIG, *options.gunicorn_args, APP]
    os.execv(sys.executable, args)
