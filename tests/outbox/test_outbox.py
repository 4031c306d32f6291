"""The transactional outbox end to end: an application's transaction writes rows into a real
PostgreSQL, relays run as their own command and publish through a real Gunicorn, and a real
WebSocket client counts what arrives."""

from __future__ import annotations

import signal
import time

import psycopg
import pytest
from sqlalchemy import MetaData, create_engine
from sqlalchemy.orm import Session

from bench.postgres import PostgresServer
from switchboard_server import outbox
from switchboard_server.outbox import sqlalchemy as outbox_sqlalchemy
from tests.integration.servers import Client, Server


def subscribed(server: Server, *channels: str) -> Client:
    client = server.client()
    for channel in channels:
        assert client.command("subscribe", channel=channel)["type"] == "reply"
    return client


def rows_left(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        return connection.execute("SELECT count(*) FROM switchboard_outbox").fetchone()[0]


def wait_until(condition, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError("condition never held")
        time.sleep(0.05)


def commit_rows(dsn: str, channel: str, numbers: range) -> None:
    """One transaction per row, as an application's requests would write them."""
    with psycopg.connect(dsn) as connection:
        for n in numbers:
            outbox.write(connection, channel, {"n": n})
            connection.commit()


def test_a_rolled_back_transaction_publishes_nothing(postgres: PostgresServer, server: Server, start_relay):
    # The table made by SQLAlchemy's create_all (with its NOTIFY trigger), as a Flask app would.
    dsn = postgres.new_database("outbox_sqlalchemy", create_table=False)
    engine = create_engine(f"postgresql+psycopg://switchboard@127.0.0.1:{postgres.port}/outbox_sqlalchemy")
    metadata = MetaData()
    outbox_sqlalchemy.outbox_table(metadata)
    metadata.create_all(engine)
    start_relay(dsn)
    client = subscribed(server, "orders-rollback")

    with Session(engine) as session:
        outbox_sqlalchemy.write(session, "orders-rollback", {"order": "never"})
        session.rollback()
    with psycopg.connect(dsn) as connection:
        outbox.write(connection, "orders-rollback", {"order": "never either"})
        connection.rollback()
    with Session(engine) as session:
        outbox_sqlalchemy.write(session, "orders-rollback", {"order": 1})
        session.commit()

    message = client.next_push("message")
    assert (message["offset"], message["data"]) == (1, {"order": 1})  # the rolled-back rows never went out
    wait_until(lambda: rows_left(dsn) == 0)
    engine.dispose()


def test_a_relay_killed_between_publishing_and_deleting_delivers_each_message_once(
    dsn: str, server: Server, start_relay
):
    client = subscribed(server, "orders-kill")
    commit_rows(dsn, "orders-kill", range(5))
    # Another session holds the rows (FOR SHARE): the relay can read and publish them, but its
    # DELETE waits, so the relay is killed with every row published and none deleted.
    blocker = psycopg.connect(dsn)
    blocker.execute("SELECT id FROM switchboard_outbox FOR SHARE").fetchall()
    first = start_relay(dsn)
    assert [m["data"]["n"] for m in client.messages(5)] == [0, 1, 2, 3, 4]
    wait_until(lambda: blocked_deletes(dsn) == 1)
    first.stop(signal.SIGKILL)
    blocker.rollback()
    blocker.close()

    second = start_relay(dsn)
    wait_until(lambda: rows_left(dsn) == 0)
    assert sorted(second.published_ids()) == [1, 2, 3, 4, 5]  # published again: at least once
    commit_rows(dsn, "orders-kill", range(5, 6))
    message = client.next_push("message")  # no second copy came before the next message
    assert (message["offset"], message["data"]) == (6, {"n": 5})
    client.close()


def blocked_deletes(dsn: str) -> int:
    with psycopg.connect(dsn) as connection:
        return connection.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'DELETE%'"
        ).fetchone()[0]


def test_two_relays_share_the_partitions_and_never_publish_a_row_twice(dsn: str, server: Server, start_relay):
    channels = [f"share-{i}" for i in range(8)]
    client = subscribed(server, *channels)
    relays = [start_relay(dsn, "--partitions", "4", "--batch-size", "5") for _ in range(2)]

    with psycopg.connect(dsn) as connection:
        for batch in range(10):
            for n in range(batch * 3, batch * 3 + 3):
                for channel in channels:
                    outbox.write(connection, channel, {"n": n}, partitions=4)
            connection.commit()
    messages = client.messages(8 * 30, timeout=30)

    for channel in channels:  # each channel in order, once
        assert [m["data"]["n"] for m in messages if m["channel"] == channel] == list(range(30))
    # A relay logs a row once its publish is answered: the client may have the message first.
    wait_until(lambda: sum(len(relay.published_ids()) for relay in relays) >= 240)
    published = [relay.published_ids() for relay in relays]
    assert sorted(published[0] + published[1]) == list(range(1, 241))  # no row published twice
    assert published[0] and published[1]  # both relays did part of the work
    client.close()


def test_a_row_committed_after_a_higher_id_is_still_published(dsn: str, server: Server, start_relay):
    client = subscribed(server, "orders-late")
    start_relay(dsn)
    slow, fast = psycopg.connect(dsn), psycopg.connect(dsn)
    early_id = outbox.write(slow, "orders-late", {"n": "written first"})
    late_id = outbox.write(fast, "orders-late", {"n": "committed first"})
    fast.commit()
    assert client.next_push("message")["data"] == {"n": "committed first"}
    slow.commit()
    assert client.next_push("message")["data"] == {"n": "written first"}
    assert early_id < late_id
    wait_until(lambda: rows_left(dsn) == 0)
    slow.close()
    fast.close()


def test_the_database_going_away_and_coming_back_loses_nothing(server: Server, start_relay):
    postgres = PostgresServer()
    try:
        dsn = postgres.new_database("outbox_outage")
        client = subscribed(server, "orders-outage")
        relay = start_relay(dsn)
        commit_rows(dsn, "orders-outage", range(40))
        postgres.stop()
        relay.wait_for("database unavailable")
        postgres.start()
        commit_rows(dsn, "orders-outage", range(40, 60))
        assert [m["data"]["n"] for m in client.messages(60, timeout=30)] == list(range(60))
        wait_until(lambda: rows_left(dsn) == 0)
        client.close()
    finally:
        postgres.remove()


def test_a_payload_over_8000_bytes_is_published(dsn: str, server: Server, start_relay):
    """NOTIFY carries only the partition number: a payload that could never travel in it
    (over 8,000 bytes) goes through the table."""
    client = subscribed(server, "orders-big")
    start_relay(dsn)
    big = {"text": "x" * 20000}
    with psycopg.connect(dsn) as connection:
        outbox.write(connection, "orders-big", big)
    assert client.next_push("message")["data"] == big
    client.close()


@pytest.mark.parametrize("listen", [True, False])
def test_polling_alone_finds_rows_without_the_hint(dsn: str, server: Server, start_relay, listen: bool):
    client = subscribed(server, "orders-poll")
    start_relay(dsn, *(() if listen else ("--no-listen",)))
    commit_rows(dsn, "orders-poll", range(3))
    assert [m["data"]["n"] for m in client.messages(3)] == [0, 1, 2]
    client.close()
