"""What an outbox row is and how the application writes one: the table's SQL, the partition of a
channel, and an INSERT run on the caller's own connection, so it commits or rolls back with it.

Never commits, never opens a connection of its own: the row must share the caller's transaction.
"""

from __future__ import annotations

import zlib
from importlib.resources import files
from typing import Any

import orjson

from switchboard_server.core.envelope import validate_channel, validate_event

TABLE = "switchboard_outbox"
# Writers and the relay must agree on it (SWITCHBOARD_OUTBOX_PARTITIONS for the relay).
DEFAULT_PARTITIONS = 8

INSERT = f"INSERT INTO {TABLE} (partition, channel, data, event) VALUES (%s, %s, %s::jsonb, %s) RETURNING id"


def schema_sql() -> str:
    """The SQL that creates the table, its index and the NOTIFY trigger (idempotent)."""
    return files(__package__).joinpath("schema.sql").read_text()


def partition_of(channel: str, partitions: int = DEFAULT_PARTITIONS) -> int:
    """The partition of `channel`: CRC-32 of its UTF-8 bytes modulo `partitions`.

    The same in every process and language (Python's `hash()` of a string is salted per process),
    so one channel's rows always land in one partition and are published in order.
    """
    if partitions < 1:
        raise ValueError("partitions must be at least 1")
    return zlib.crc32(channel.encode()) % partitions


def row_values(
    channel: str, data: Any, event: str | None = None, partitions: int = DEFAULT_PARTITIONS
) -> tuple[int, str, str, str | None]:
    """(partition, channel, data as JSON text, event), checked as the HTTP API would check them,
    so a bad channel fails in the application's transaction instead of at the relay."""
    validate_channel(channel)
    validate_event(event)
    return partition_of(channel, partitions), channel, orjson.dumps(data).decode(), event


def write(
    connection: Any, channel: str, data: Any, *, event: str | None = None, partitions: int = DEFAULT_PARTITIONS
) -> int:
    """Add a publish of `data` on `channel` to the outbox in the caller's open transaction; returns
    the row's id. `connection` is a psycopg 3 connection (or cursor); nothing is committed here."""
    values = row_values(channel, data, event, partitions)
    return connection.execute(INSERT, values).fetchone()[0]
