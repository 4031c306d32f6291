"""A token callable that raises: the application's bug reaches the caller, in both clients, instead
of turning into a reconnect loop; a token service that is away is retried like the network."""

from __future__ import annotations

import pytest


class TokenBug(Exception):
    """What a bug in the application's token function raises."""


def test_a_token_callable_that_raises_at_connect_raises_to_the_caller(server, flavour):
    def token() -> str:
        raise TokenBug("the token service's URL is misspelled")

    with pytest.raises(TokenBug, match="misspelled"):
        flavour.connect(server.ws_url + "/ws", token, timeout=5)


def test_a_token_callable_that_raises_on_reconnect_closes_the_client_with_its_error(start_server, flavour):
    server = start_server()
    calls = []

    def token() -> str:
        calls.append(1)
        if len(calls) > 1:
            raise TokenBug("the second call fails")
        return server.token("ann")

    client = flavour.connect(server.ws_url + "/ws", token, timeout=5)
    subscription = client.subscribe("news")
    server.stop()  # the client reconnects, and calls the token function again
    with pytest.raises(TokenBug, match="second call"):
        subscription.recv(timeout=10)
    with pytest.raises(TokenBug):
        client.ping()


def test_a_token_service_that_is_away_is_retried_like_the_network(server, flavour):
    calls = []

    def token() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionRefusedError("the token service is restarting")
        return server.token("ann")

    with flavour.connect(server.ws_url + "/ws", token, timeout=10) as client:
        client.ping()
    assert len(calls) == 3
