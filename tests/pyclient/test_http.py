"""The HTTP API client, sync and async, against a real Gunicorn: what a publishing service uses."""

from __future__ import annotations

import pytest
from switchboard_client import AsyncHTTPClient, ForbiddenError, HTTPClient, connect

from tests.integration.servers import API_KEY
from tests.pyclient.flavours import run_async
from tests.pyclient.proxy import CuttingProxy


def test_publish_history_presence_channels_and_tokens(server):
    with HTTPClient(server.url, API_KEY) as http:
        token = http.token("ann", info={"team": "ops"}, channels=["presence-*"], publish=True)
        with connect(server.ws_url + "/ws", token) as client:
            subscription = client.subscribe("presence-http")
            offset = http.publish("presence-http", {"from": "a service"})
            message = subscription.recv(10)
            assert (message.offset, message.data, message.sender) == (offset, {"from": "a service"}, None)
            assert [(m.user, m.info) for m in http.presence("presence-http")] == [("ann", {"team": "ops"})]
            assert http.channels()["presence-http"] == 1
            history = http.history("presence-http")
            assert [(m.offset, m.data) for m in history.messages] == [(offset, {"from": "a service"})]
            assert history.epoch == message.epoch and history.offset == offset


def test_a_subscription_token_opens_one_protected_channel(server):
    with HTTPClient(server.url, API_KEY) as http, connect(server.ws_url + "/ws", http.token("bo")) as client:
        with pytest.raises(ForbiddenError):
            client.subscribe("private-bo")
        subscription = client.subscribe("private-bo", token=http.subscription_token("bo", "private-bo"))
        http.publish("private-bo", "for bo only")
        assert subscription.recv(10).data == "for bo only"


@pytest.mark.parametrize("flavour", ["sync", "async"])
def test_a_publish_retried_five_times_is_delivered_once(server, flavour):
    """Five times the response is lost after the server stored the message; the sixth gets
    through. The idempotency key makes the six one publish."""
    channel = f"retried-{flavour}"
    proxy = CuttingProxy(server.port, cut=lambda data: data.startswith(b"HTTP/1.1 200"), times=5)
    url = f"http://127.0.0.1:{proxy.port}"
    try:
        with connect(server.ws_url + "/ws") as watcher:
            subscription = watcher.subscribe(channel)
            if flavour == "sync":
                with HTTPClient(url, API_KEY, retries=5, min_delay=0.01, max_delay=0.05) as http:
                    offset = http.publish(channel, "once")
            else:

                async def publish() -> int:
                    async with AsyncHTTPClient(url, API_KEY, retries=5, min_delay=0.01, max_delay=0.05) as http:
                        return await http.publish(channel, "once")

                offset = run_async(publish())
            assert proxy.cuts == 5
            message = subscription.recv(10)
            assert (message.data, message.offset) == ("once", offset)
            watcher.publish(channel, "next")
            assert subscription.recv(10).data == "next"  # the retries delivered nothing more
    finally:
        proxy.close()


def test_the_async_client_reads_like_the_sync_one(server):
    async def session():
        async with AsyncHTTPClient(server.url, API_KEY) as http:
            offset = await http.publish("async-http", [1, 2])
            history = await http.history("async-http")
            return offset, history, await http.channels(), await http.token("cy")

    offset, history, channels, token = run_async(session())
    assert [(m.offset, m.data) for m in history.messages] == [(offset, [1, 2])]
    assert isinstance(channels, dict) and token.count(".") == 2


def test_urls_are_checked_at_once():
    with pytest.raises(ValueError, match="HTTP URL"):
        HTTPClient("ws://127.0.0.1:8000")
    with pytest.raises(ValueError, match="WebSocket URL"):
        connect("http://127.0.0.1:8000/ws")
