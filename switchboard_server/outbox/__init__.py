"""The transactional outbox: publish a message only if the application's own transaction commits.

The application writes a row into `switchboard_outbox` (`schema.sql`) in its transaction
(`write` here for psycopg 3, `outbox.sqlalchemy.write` for SQLAlchemy sessions); the relay
(`relay.py`, run as `switchboard-server outbox-relay`) publishes committed rows through the HTTP
API and deletes them. Importing this module loads no database driver.
"""

from __future__ import annotations

from switchboard_server.outbox.rows import DEFAULT_PARTITIONS, TABLE, partition_of, schema_sql, write

__all__ = ["DEFAULT_PARTITIONS", "TABLE", "partition_of", "schema_sql", "write"]
