"""The outbox for SQLAlchemy and Flask-SQLAlchemy apps: the table in the app's metadata (so
`create_all()` creates it, with its index and NOTIFY trigger) and `write` on a session or connection.

`write` runs in the session's transaction and never commits: the app's `commit()` publishes, its
`rollback()` forgets.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import DDL, BigInteger, Column, DateTime, Index, Integer, MetaData, Table, Text, func, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.event import listen

from switchboard_server.outbox.rows import DEFAULT_PARTITIONS, TABLE, row_values, schema_sql

# The trigger's statements of schema.sql: one definition of the NOTIFY hint.
_TRIGGER = schema_sql()[schema_sql().index("CREATE OR REPLACE FUNCTION") :]

_INSERT = text(
    f"INSERT INTO {TABLE} (partition, channel, data, event) "
    "VALUES (:partition, :channel, CAST(:data AS jsonb), :event) RETURNING id"
)


def outbox_table(metadata: MetaData, notify: bool = True) -> Table:
    """`switchboard_outbox` in `metadata` (Flask-SQLAlchemy: `db.metadata`), as `schema.sql` makes
    it; with `notify`, creating it creates the trigger that wakes the relay."""
    table = Table(
        TABLE,
        metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("partition", Integer, nullable=False),
        Column("channel", Text, nullable=False),
        Column("data", JSONB, nullable=False),
        Column("event", Text),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Index("switchboard_outbox_partition_id", "partition", "id"),
    )
    if notify:
        listen(table, "after_create", DDL(_TRIGGER).execute_if(dialect="postgresql"))
    return table


def write(
    session: Any, channel: str, data: Any, *, event: str | None = None, partitions: int = DEFAULT_PARTITIONS
) -> int:
    """Add a publish to the outbox in `session`'s transaction (a `Session`, Flask-SQLAlchemy's
    `db.session`, or a `Connection`); returns the row's id. Commit the session to publish it."""
    partition, channel, payload, event = row_values(channel, data, event, partitions)
    values = {"partition": partition, "channel": channel, "data": payload, "event": event}
    return session.execute(_INSERT, values).scalar_one()
