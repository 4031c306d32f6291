"""Every error code of docs/protocol.md, raised as its own exception class, over both faces."""

from __future__ import annotations

import contextlib

import pytest
from switchboard_client import (
    BadCommandError,
    BadJsonError,
    BadRequestError,
    ForbiddenError,
    HTTPClient,
    InvalidChannelError,
    NotConfiguredError,
    NotFoundError,
    NotSubscribedError,
    RateLimitedError,
    ServerFullError,
    SwitchboardError,
    TooLargeError,
    TooManyConnectionsError,
    TooManySubscriptionsError,
    UnauthorizedError,
    UnavailableError,
)

from tests.integration.servers import API_KEY


@contextlib.contextmanager
def raises(error_class: type[SwitchboardError], code: str):
    """pytest.raises, and the error carries its code and a message."""
    with pytest.raises(error_class) as info:
        yield info
    assert info.value.code == code and info.value.message


def test_command_errors_over_the_websocket(server, flavour):
    with flavour.connect(server.ws_url + "/ws") as client:
        with raises(InvalidChannelError, "invalid_channel"):
            client.subscribe("has spaces")
        with raises(BadCommandError, "bad_command"):
            client.subscribe("room", since=-1)
        with raises(BadCommandError, "bad_command"):
            client.publish("room", "x", idempotency_key="k" * 129)
        with raises(BadJsonError, "bad_json"):
            client.publish("room", nested(300))
        with raises(NotSubscribedError, "not_subscribed"):
            client.unsubscribe("room")
        with raises(ForbiddenError, "forbidden"):
            client.subscribe("private-payroll")
        with raises(ForbiddenError, "forbidden"):
            client.publish("presence-room", "anonymous may not")
        client.ping()  # none of it cost the connection


def test_a_refused_token_is_unauthorized(server, flavour):
    with raises(UnauthorizedError, "unauthorized"):
        flavour.connect(server.ws_url + "/ws", "forged.token.here")


def test_limits_over_the_websocket(start_server, flavour):
    server = start_server(
        {
            "SWITCHBOARD_MAX_SUBSCRIPTIONS": "1",
            "SWITCHBOARD_MAX_MESSAGE_SIZE": "1024",
            "SWITCHBOARD_MAX_CONNECTIONS": "1",
        }
    )
    url = server.ws_url + "/ws"
    with flavour.connect(url) as client:
        client.subscribe("one")
        with raises(TooManySubscriptionsError, "too_many_subscriptions"):
            client.subscribe("two")
        with raises(TooLargeError, "too_large"):  # the server closes with 1009...
            client.publish("one", "x" * 2000)
        assert client.publish("one", "small") > 0  # ...and the client reconnects and goes on
        # Retried (a full server may have room soon) until the timeout, then raised.
        with raises(ServerFullError, "server_full"):
            flavour.connect(url, timeout=1.5)


def test_rate_and_connections_per_address(start_server, flavour):
    server = start_server({"SWITCHBOARD_RATE_MESSAGES": "1", "SWITCHBOARD_MAX_CONNECTIONS_PER_ADDRESS": "1"})
    url = server.ws_url + "/ws"
    with flavour.connect(url) as client:
        client.publish("room", 1)  # the bucket holds one second's worth: one message
        with raises(RateLimitedError, "rate_limited"):
            client.publish("room", 2)
        with raises(TooManyConnectionsError, "too_many_connections"):
            flavour.connect(url, timeout=1.5)


def test_a_broker_outage_is_unavailable_on_both_faces(start_server, redis_server, flavour):
    server = start_server({"SWITCHBOARD_REDIS_URL": redis_server.url, "SWITCHBOARD_WORKERS": "1"})
    with flavour.connect(server.ws_url + "/ws") as client:
        client.publish("news", "up")
        redis_server.stop()
        with raises(UnavailableError, "unavailable"):
            client.publish("news", "down")
        with HTTPClient(server.url, API_KEY, retries=2, min_delay=0.05, max_delay=0.1) as http:
            with raises(UnavailableError, "unavailable") as refused:
                http.publish("news", "down")
            assert "after 3 attempts" in refused.value.message


def test_http_errors(server, start_server):
    with HTTPClient(server.url, "wrong-key") as http:
        with raises(UnauthorizedError, "unauthorized"):
            http.channels()
    with HTTPClient(server.url, API_KEY) as http:
        with raises(BadRequestError, "bad_request"):
            http.history("room", since=-1)
        with raises(BadRequestError, "bad_request"):
            http.token("ann", ttl=0)
        with raises(InvalidChannelError, "invalid_channel"):
            http.publish("has spaces", 1)
        with raises(BadJsonError, "bad_json"):
            http.publish("room", nested(300))
        with raises(TooLargeError, "too_large"):
            http.publish("room", "x" * 70000)
        with raises(NotFoundError, "not_found"):
            http.presence("no/such/route")
    closed = start_server({"SWITCHBOARD_API_KEY": ""})
    with HTTPClient(closed.url, API_KEY) as http:
        with raises(NotConfiguredError, "not_configured"):
            http.publish("room", 1)


def nested(depth: int) -> list:
    value: list = []
    for _ in range(depth):
        value = [value]
    return value
