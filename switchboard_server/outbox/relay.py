"""The relay: publishes committed outbox rows, per partition in id order, and deletes them.

Each pass over a partition is one transaction: take the partition's advisory lock (try, never
wait: a partition another relay holds is skipped, so relays share the partitions and never publish
a row twice), read up to a batch of rows in id order, publish each through the HTTP API with
`<prefix>-<table oid>-<id>` as its idempotency key, delete the published ones, commit. A relay that dies before
its commit leaves its rows to be published again, which the key turns into no delivery (as long
as it happens within the server's idempotency window): at least once here, once at the client.

Rows are found by reading what is there, never by a cursor over ids: a row whose transaction
commits after a higher id's is still found on a later pass. NOTIFY (the table's trigger) only says
which partition to look at soon; polling every `poll_interval` finds everything anyway.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import zlib
from collections.abc import Mapping
from dataclasses import dataclass

import psycopg

from switchboard_server.outbox.publisher import HttpPublisher, PublishRefused, ServerUnavailable
from switchboard_server.outbox.rows import DEFAULT_PARTITIONS, TABLE

log = logging.getLogger("switchboard.outbox")

CHANNEL = "switchboard_outbox"  # the NOTIFY channel the table's trigger signals
# The advisory locks' first key, the same in every relay; the second is the partition.
LOCK_SPACE = zlib.crc32(TABLE.encode()) - (1 << 31)
TRY_LOCK = "SELECT pg_try_advisory_xact_lock(%s, %s)"
SELECT_ROWS = f"SELECT id, channel, data::text, event FROM {TABLE} WHERE partition = %s ORDER BY id LIMIT %s"
DELETE_ROWS = f"DELETE FROM {TABLE} WHERE id = ANY(%s)"
TABLE_OID = f"SELECT '{TABLE}'::regclass::oid"
STRAY_ROWS = f"SELECT count(*) FROM {TABLE} WHERE partition < 0 OR partition >= %s"
MAX_RETRY_DELAY = 5.0


@dataclass(frozen=True)
class RelaySettings:
    """What the relay needs, from `SWITCHBOARD_OUTBOX_*` (and `SWITCHBOARD_API_KEY`)."""

    dsn: str
    server_url: str = "http://127.0.0.1:8000"
    api_key: str = ""
    partitions: int = DEFAULT_PARTITIONS
    poll_interval: float = 0.5
    batch_size: int = 100
    listen: bool = True
    # Starts every idempotency key; give each outbox that publishes to one server its own.
    key_prefix: str = "outbox"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> RelaySettings:
        env = os.environ if environ is None else environ

        def get(name: str, default: str) -> str:
            return env.get(f"SWITCHBOARD_OUTBOX_{name}", default)

        settings = cls(
            dsn=get("DSN", ""),
            server_url=get("SERVER_URL", cls.server_url),
            api_key=env.get("SWITCHBOARD_API_KEY", ""),
            partitions=int(get("PARTITIONS", str(cls.partitions))),
            poll_interval=float(get("POLL_INTERVAL", str(cls.poll_interval))),
            batch_size=int(get("BATCH_SIZE", str(cls.batch_size))),
            listen=get("LISTEN", "true").lower() in ("1", "true", "yes", "on"),
            key_prefix=get("KEY_PREFIX", cls.key_prefix),
        )
        settings.check()
        return settings

    def check(self) -> None:
        if not self.dsn:
            raise ValueError("set SWITCHBOARD_OUTBOX_DSN (or --dsn) to the database that holds the outbox")
        if not self.api_key:
            raise ValueError("set SWITCHBOARD_API_KEY: the relay publishes through the server's HTTP API")
        if self.partitions < 1 or self.batch_size < 1 or self.poll_interval <= 0:
            raise ValueError("partitions and batch size must be at least 1, the poll interval above 0")
        if not 1 <= len(self.key_prefix) <= 64:
            raise ValueError("the key prefix must be 1 to 64 characters")


class Relay:
    """One relay process's loop; `run` until `stop`. Any number of relays may share a table."""

    def __init__(self, settings: RelaySettings, publisher: HttpPublisher | None = None) -> None:
        self.settings = settings
        self.publisher = publisher or HttpPublisher(settings.server_url, settings.api_key)
        self.published = 0
        self._stopping = threading.Event()
        self._retry_delay = settings.poll_interval
        self._key_start = ""

    def stop(self) -> None:
        """Stop after the current pass (safe from a signal handler)."""
        self._stopping.set()

    def run(self) -> None:
        """Relay until `stop`, reconnecting to the database and the server as long as it takes."""
        while not self._stopping.is_set():
            try:
                self._serve()
            except psycopg.OperationalError as error:
                log.warning("database unavailable", extra={"error": str(error).strip()})
                self._back_off()
        self.publisher.close()
        log.info("relay stopped", extra={"published": self.published})

    def _back_off(self) -> None:
        self._stopping.wait(self._retry_delay)
        self._retry_delay = min(self._retry_delay * 2, MAX_RETRY_DELAY)

    def _serve(self) -> None:
        """Relay on one pair of connections until `stop` or until the database goes away."""
        with psycopg.connect(self.settings.dsn, autocommit=True) as work, self._listener() as listener:
            # The table's oid is in every key: ids that restart with a new table make new keys.
            self._key_start = f"{self.settings.key_prefix}-{work.execute(TABLE_OID).fetchone()[0]}-"
            self._warn_about_stray_rows(work)
            log.info(
                "relay ready",
                extra={"partitions": self.settings.partitions, "listen": listener is not None, "pid": os.getpid()},
            )
            self._retry_delay = self.settings.poll_interval
            due, next_poll = set(range(self.settings.partitions)), time.monotonic() + self.settings.poll_interval
            while not self._stopping.is_set():
                try:
                    self._drain(work, due)
                except ServerUnavailable as error:
                    log.warning("server unavailable", extra={"error": str(error)})
                    self._back_off()
                    due = set(range(self.settings.partitions))
                    continue
                self._retry_delay = self.settings.poll_interval
                due, next_poll = self._wait(listener, next_poll)

    def _listener(self) -> contextlib.AbstractContextManager[psycopg.Connection | None]:
        """A connection that LISTENs for the trigger's hints, or none when polling alone."""
        if not self.settings.listen:
            return contextlib.nullcontext()
        connection = psycopg.connect(self.settings.dsn, autocommit=True)
        connection.execute(f"LISTEN {CHANNEL}")
        return connection

    def _warn_about_stray_rows(self, work: psycopg.Connection) -> None:
        stray = work.execute(STRAY_ROWS, (self.settings.partitions,)).fetchone()[0]
        if stray:
            log.error(
                "rows in partitions this relay never reads: give writers and relay the same partitions",
                extra={"rows": stray, "partitions": self.settings.partitions},
            )

    def _wait(self, listener: psycopg.Connection | None, next_poll: float) -> tuple[set[int], float]:
        """The partitions to look at next, and when to poll: those a hint named, or all at poll time."""
        remaining = next_poll - time.monotonic()
        if remaining > 0:
            hinted = self._hints(listener, remaining)
            if hinted:
                return hinted, next_poll
        if time.monotonic() < next_poll:  # woken by a hint for a partition we do not read, or stopping
            return set(), next_poll
        return set(range(self.settings.partitions)), time.monotonic() + self.settings.poll_interval

    def _hints(self, listener: psycopg.Connection | None, timeout: float) -> set[int]:
        """Partitions named by NOTIFY within `timeout` (the first, and any that came with it)."""
        if listener is None:
            self._stopping.wait(timeout)
            return set()
        payloads = [note.payload for note in listener.notifies(timeout=timeout, stop_after=1)]
        if payloads:
            payloads += [note.payload for note in listener.notifies(timeout=0)]
        return {int(p) for p in payloads if p.isdigit() and int(p) < self.settings.partitions}

    def _drain(self, work: psycopg.Connection, partitions: set[int]) -> None:
        """Pass over each partition until it has less than a batch left (or another relay holds it)."""
        for partition in sorted(partitions):
            full = True
            while full and not self._stopping.is_set():
                full = self._pass(work, partition) == self.settings.batch_size

    def _pass(self, work: psycopg.Connection, partition: int) -> int:
        """One transaction over one partition; returns how many rows it read (0: held elsewhere)."""
        with work.transaction():
            if not work.execute(TRY_LOCK, (LOCK_SPACE, partition)).fetchone()[0]:
                return 0
            rows = work.execute(SELECT_ROWS, (partition, self.settings.batch_size)).fetchall()
            done, unavailable = self._publish(rows, partition)
            if done:
                work.execute(DELETE_ROWS, (done,))
        if unavailable is not None:
            raise unavailable
        return len(rows)

    def _publish(self, rows: list[tuple], partition: int) -> tuple[list[int], ServerUnavailable | None]:
        """Publish rows in order until the server stops taking them; returns the ids to delete
        (published, or refused for good) and what stopped it, if anything did."""
        done: list[int] = []
        for row_id, channel, data_json, event in rows:
            try:
                offset = self.publisher.publish(channel, data_json, event, f"{self._key_start}{row_id}")
            except ServerUnavailable as error:
                return done, error
            except PublishRefused as error:
                log.error(
                    "row refused by the server, dropped", extra={"id": row_id, "channel": channel, "error": str(error)}
                )
            else:
                self.published += 1
                log.debug(
                    "published", extra={"id": row_id, "partition": partition, "channel": channel, "offset": offset}
                )
            done.append(row_id)
        return done, None
