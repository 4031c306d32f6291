"""Latest-value channels: a subscriber gets the channel's latest publication (per conflation key)
at once, on subscribe and on every resubscribe, on every protocol and with both brokers. The
host app (tests/namespaces/host.py) declares `ticker.` as latest-value, keyed by `symbol`."""

from __future__ import annotations

import itertools
import json

from switchboard_client import connect as client_connect
from websockets.sync.client import connect

from tests.graphql.clients import MESSAGES, RawGraphQL
from tests.integration.servers import Server
from tests.pusher.deployments import WireClient
from tests.pyclient.proxy import CuttingProxy

_names = itertools.count()


def ticker_with_prices(host: Server) -> tuple[str, list[dict]]:
    """A fresh `ticker.` channel holding EUR 1.0, USD 2.0, then EUR 1.1 (published by the app)."""
    channel = f"ticker.t{next(_names)}"
    prices = [{"symbol": "EUR", "price": 1.0}, {"symbol": "USD", "price": 2.0}, {"symbol": "EUR", "price": 1.1}]
    for data in prices:
        status, body = host.api("POST", "/publish", {"channel": channel, "data": data})
        assert status == 200, body
    return channel, prices


# What a subscriber of such a channel is sent at once: the latest value of each symbol, oldest first.
LATEST = [(2, {"symbol": "USD", "price": 2.0}), (3, {"symbol": "EUR", "price": 1.1})]


def test_native_subscribers_get_the_latest_value_per_key_on_subscribe_and_resubscribe(host):
    channel, _prices = ticker_with_prices(host)
    client = host.client()
    reply = client.command("subscribe", channel=channel)
    # The latest values follow the reply's offset, as replayed messages do, and offsets may skip.
    assert reply["result"]["offset"] == 1 and reply["result"]["offsets_skip"] is True
    assert [(m["offset"], m["data"]) for m in client.messages(2)] == LATEST
    assert client.command("unsubscribe", channel=channel)["type"] == "reply"
    client.command("subscribe", channel=channel)
    assert [(m["offset"], m["data"]) for m in client.messages(2)] == LATEST
    host.api("POST", "/publish", {"channel": channel, "data": {"symbol": "GBP", "price": 3.0}})
    assert client.next_push("message")["data"] == {"symbol": "GBP", "price": 3.0}
    client.close()


def test_a_resubscribe_at_the_latest_offset_gets_nothing_twice(host):
    channel, _prices = ticker_with_prices(host)
    client = host.client()
    reply = client.command("subscribe", channel=channel, since=3)
    assert reply["result"]["recovered"] is True
    assert client.command("ping")["type"] == "reply"
    assert [push for push in client.pushes if push["type"] == "message"] == []
    client.close()


def test_graphql_subscriptions_start_with_the_latest_values(host):
    channel, _prices = ticker_with_prices(host)
    with RawGraphQL(host) as graphql:
        graphql.init()
        for op_id in ("first", "again"):
            graphql.subscribe(op_id, MESSAGES, channel=channel)
            received = [graphql.recv()["payload"]["data"]["messages"] for _ in range(2)]
            assert [(m["offset"], m["data"]) for m in received] == LATEST
            graphql.send({"id": op_id, "type": "complete"})


def test_pusher_subscribers_get_the_latest_values_after_subscription_succeeded(host):
    channel, _prices = ticker_with_prices(host)
    with WireClient(host) as pusher:
        for _ in range(2):
            pusher.subscribe(channel)
            events = [pusher.next("message", channel) for _ in range(2)]
            assert [event["data"] for event in events] == [data for _offset, data in LATEST]
            pusher.send("pusher:unsubscribe", {"channel": channel})


def test_sync_route_subscriptions_get_the_latest_values(host):
    channel, _prices = ticker_with_prices(host)
    with connect(f"{host.ws_url}/ws/feed?channel={channel}", open_timeout=10) as ws:
        for _ in range(2):
            received = [json.loads(ws.recv(timeout=10)) for _ in range(2)]
            assert [(m["offset"], m["data"]) for m in received] == LATEST
            ws.send("again")


def test_the_python_client_resubscribing_after_a_lost_connection_gets_the_latest_value(host):
    channel, _prices = ticker_with_prices(host)
    # The proxy cuts the connection as the server sends the GBP price, which the client never sees.
    proxy = CuttingProxy(host.port, cut=lambda data: b'"GBP"' in data)
    try:
        with client_connect(f"ws://127.0.0.1:{proxy.port}/ws", min_delay=0.05, max_delay=0.2) as client:
            subscription = client.subscribe(channel)
            assert [(m.offset, m.data) for m in (subscription.recv(10), subscription.recv(10))] == LATEST
            host.api("POST", "/publish", {"channel": channel, "data": {"symbol": "GBP", "price": 3.0}})
            resumed = subscription.recv(10)
            assert (resumed.offset, resumed.data) == (4, {"symbol": "GBP", "price": 3.0})
            assert proxy.cuts == 1
    finally:
        proxy.close()
