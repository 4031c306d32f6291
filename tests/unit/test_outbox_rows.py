"""The outbox's rows without a database: a channel's partition is the same everywhere, and a row
the server would refuse is refused in the application's transaction instead."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from switchboard_server.core.errors import ProtocolError
from switchboard_server.outbox import partition_of, schema_sql, write

CHANNELS = ["orders", "room:42", "prices.EURUSD", "é"]


def test_a_channel_has_one_partition_in_every_process():
    """Python's hash() of a string changes with PYTHONHASHSEED; the partition must not."""
    code = f"from switchboard_server.outbox import partition_of; print([partition_of(c, 8) for c in {CHANNELS!r}])"
    seen = {
        subprocess.run(
            [sys.executable, "-c", code], env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True, text=True
        ).stdout
        for seed in ("1", "2", "3")
    }
    assert seen == {"[6, 0, 2, 6]\n"}


def test_the_partition_is_crc32_of_the_utf8_name_so_other_languages_can_compute_it():
    assert [partition_of(c, 128) for c in CHANNELS] == [110, 0, 114, 62]


def test_a_channel_the_server_would_refuse_fails_before_any_sql():
    with pytest.raises(ProtocolError) as refused:
        write(None, "no spaces allowed", {"n": 1})
    assert refused.value.code == "invalid_channel"


def test_the_schema_creates_the_table_and_a_hint_that_carries_no_message():
    sql = schema_sql()
    assert "CREATE TABLE IF NOT EXISTS switchboard_outbox" in sql
    assert "pg_notify('switchboard_outbox', NEW.partition::text)" in sql
