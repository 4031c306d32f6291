"""`switchboard-server outbox-relay`: the relay as a command of its own, beside the server.

Options set the `SWITCHBOARD_OUTBOX_*` variables named in their help, so a deployment may use
either. SIGTERM and SIGINT stop it after the current pass.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys

OPTION_VARIABLES = {
    "dsn": "SWITCHBOARD_OUTBOX_DSN",
    "server_url": "SWITCHBOARD_OUTBOX_SERVER_URL",
    "api_key": "SWITCHBOARD_API_KEY",
    "partitions": "SWITCHBOARD_OUTBOX_PARTITIONS",
    "poll_interval": "SWITCHBOARD_OUTBOX_POLL_INTERVAL",
    "batch_size": "SWITCHBOARD_OUTBOX_BATCH_SIZE",
    "key_prefix": "SWITCHBOARD_OUTBOX_KEY_PREFIX",
    "log_level": "SWITCHBOARD_LOG_LEVEL",
}


def parser() -> argparse.ArgumentParser:
    command = argparse.ArgumentParser(
        prog="switchboard-server outbox-relay",
        description="Publish the committed rows of the switchboard_outbox table through a Switchboard "
        "server's HTTP API, then delete them (see the outbox page of the docs).",
    )
    command.add_argument("--dsn", help="PostgreSQL connection string (SWITCHBOARD_OUTBOX_DSN)")
    command.add_argument(
        "--server-url", help="the server to publish to (SWITCHBOARD_OUTBOX_SERVER_URL, default http://127.0.0.1:8000)"
    )
    command.add_argument("--api-key", help="the server's API key (SWITCHBOARD_API_KEY)")
    command.add_argument("--partitions", type=int, help="as the writers use (SWITCHBOARD_OUTBOX_PARTITIONS, default 8)")
    command.add_argument(
        "--poll-interval", type=float, help="seconds between polls (SWITCHBOARD_OUTBOX_POLL_INTERVAL, default 0.5)"
    )
    command.add_argument("--batch-size", type=int, help="rows per pass (SWITCHBOARD_OUTBOX_BATCH_SIZE, default 100)")
    command.add_argument(
        "--key-prefix", help="starts each idempotency key (SWITCHBOARD_OUTBOX_KEY_PREFIX, default outbox)"
    )
    command.add_argument(
        "--no-listen", action="store_true", help="poll only, ignore NOTIFY hints (SWITCHBOARD_OUTBOX_LISTEN=false)"
    )
    command.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="SWITCHBOARD_LOG_LEVEL (default info)"
    )
    command.add_argument("--create-table", action="store_true", help="create the table and trigger first (idempotent)")
    command.add_argument("--schema", action="store_true", help="print the table's SQL and exit")
    return command


def main(argv: list[str]) -> None:
    options = parser().parse_args(argv)
    from switchboard_server.outbox.rows import schema_sql

    if options.schema:
        sys.stdout.write(schema_sql())
        return
    for name, variable in OPTION_VARIABLES.items():
        value = getattr(options, name)
        if value is not None:
            os.environ[variable] = str(value)
    if options.no_listen:
        os.environ["SWITCHBOARD_OUTBOX_LISTEN"] = "false"
    run(create_table=options.create_table)


def run(create_table: bool) -> None:
    """Build the relay from the environment and run it until a signal stops it."""
    # psycopg is an optional extra: loaded only here, with a message that says how to get it.
    try:
        import psycopg
    except ImportError:
        sys.exit("the outbox relay needs psycopg 3: pip install 'switchboard-server[postgres]'")
    from switchboard_server.ops import logs
    from switchboard_server.outbox.relay import Relay, RelaySettings
    from switchboard_server.outbox.rows import schema_sql

    logs.configure(os.environ.get("SWITCHBOARD_LOG_LEVEL", "info"), os.environ.get("SWITCHBOARD_LOG_FORMAT", "auto"))
    try:
        settings = RelaySettings.from_env()
    except ValueError as error:
        sys.exit(str(error))
    if create_table:
        with psycopg.connect(settings.dsn) as connection:
            connection.execute(schema_sql())
    relay = Relay(settings)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: relay.stop())
    try:
        relay.run()
    except psycopg.errors.UndefinedTable:
        sys.exit("no switchboard_outbox table: create it with --create-table or the SQL of --schema")
