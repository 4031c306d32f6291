"""The Redis pipeline against a real redis-server: only a failed connection counts as Redis being
unavailable; an error reply or a bug is raised (or logged with its traceback), never a blip."""

from __future__ import annotations

import logging

import gevent
import pytest
import redis

from switchboard_server.brokers.pipeline import Pipeline, Script

FAILING = Script("return redis.call('INCR', KEYS[1])")


@pytest.fixture
def pipeline(redis_server):
    """A pipeline with one script, and the connection failures it reported."""
    failures: list[Exception] = []
    client = redis.Redis.from_url(redis_server.url, socket_timeout=5)
    client.set("text", "not a number")
    yield Pipeline(client, [FAILING], failures.append), failures
    client.close()


def test_a_script_error_is_raised_to_whoever_waits(pipeline):
    commands, failures = pipeline
    with pytest.raises(redis.exceptions.ResponseError, match="not an integer"):
        commands.execute(*FAILING.command(["text"], []))
    assert commands.execute("PING") is True
    assert failures == []


def test_errors_nobody_waits_for_are_logged_with_their_traceback_not_reported_as_outages(pipeline, caplog):
    commands, failures = pipeline
    caplog.set_level(logging.ERROR, logger="switchboard.redis")
    commands.send(*FAILING.command(["text"], []))  # an error reply
    gevent.idle()  # the sender has sent that batch
    commands.send("SET", "key", None)  # a bug: redis-py cannot send None
    gevent.idle()
    assert commands.execute("PING") is True  # later commands go on
    assert failures == []
    errors = [record.exc_info[0] for record in caplog.records if record.exc_info]
    assert errors == [redis.exceptions.ResponseError, redis.exceptions.DataError]


def test_a_lost_connection_is_reported_as_one(pipeline, redis_server):
    commands, failures = pipeline
    redis_server.stop()
    commands.send("PING")
    with pytest.raises(redis.exceptions.ConnectionError):
        commands.execute("PING")
    assert [type(failure) for failure in failures] == [redis.exceptions.ConnectionError]
