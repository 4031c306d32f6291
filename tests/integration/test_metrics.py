"""GET /metrics: what clients did, counted by every worker and added up in one scrape."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.servers import API_KEY, RawSocket, RedisServer, Server, flood, free_port
from tests.pusher.deployments import WireClient, deploy


def get(url: str, key: str | None = API_KEY) -> tuple[int, bytes]:
    request = urllib.request.Request(url)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(url: str, key: str | None = API_KEY) -> dict[str, float]:
    """Every sample of a scrape, keyed like the text format: `name{label="value"}`."""
    status, body = get(url + "/metrics", key)
    assert status == 200, body
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{name}="{value}"' for name, value in sorted(sample.labels.items()))
            samples[sample.name + (f"{{{labels}}}" if labels else "")] = sample.value
    return samples


def settle(server: Server, expected: dict[str, float], timeout: float = 15.0) -> dict[str, float]:
    """Scrape until the expected values show (each worker syncs once a second), and return the scrape."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server.url)
        wrong = {name: (samples.get(name), value) for name, value in expected.items() if samples.get(name) != value}
        if not wrong:
            return samples
        if time.monotonic() > deadline:
            pytest.fail(f"scraped (got, expected): {wrong}")
        time.sleep(0.2)


def per_worker(metrics_dir: Path, name: str) -> list[float]:
    """One counter as each worker's own file has it, to see that more than one worker counted."""
    values = []
    for path in metrics_dir.glob("counter_*.db"):
        for metric in MultiProcessCollector.merge([str(path)], accumulate=False):
            values += [sample.value for sample in metric.samples if sample.name == name]
    return values


@pytest.fixture
def two_workers(start_server, tmp_path):
    """Two workers sharing a Redis, with their metrics files where the test can read them."""
    redis = RedisServer(tmp_path)
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_1.db").write_bytes(b"left over from an earlier run: on_starting removes it")
    env = {
        "SWITCHBOARD_REDIS_URL": redis.url,
        "SWITCHBOARD_WORKERS": "2",
        "SWITCHBOARD_SEND_QUEUE_BYTES": "262144",
        "SWITCHBOARD_RATE_MESSAGES": "0",
        "SWITCHBOARD_STATS_PAGE": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
    }
    yield start_server(env), metrics_dir
    redis.stop()


def test_two_workers_add_up_to_what_the_clients_did(two_workers):
    server, metrics_dir = two_workers
    clients = [server.client() for _ in range(4)]

    def both_workers_have_clients() -> bool:
        opened = per_worker(metrics_dir, "switchboard_connections_opened_total")
        if sum(opened) != len(clients):
            return False  # not synced yet
        if sum(1 for value in opened if value) >= 2:
            return True
        clients.append(server.client())  # the kernel gave them all to one worker: one more
        return False

    server.wait_until(both_workers_have_clients, timeout=30)
    n = len(clients)

    # A chat: everyone subscribes, three WebSocket publishes and one over HTTP reach all.
    for client in clients:
        client.command("subscribe", channel="room")
    for text in ("one", "two", "three"):
        assert clients[0].command("publish", channel="room", data=text)["type"] == "reply"
    assert server.api("POST", "/api/publish", {"channel": "room", "data": "four"})[0] == 200
    for client in clients:
        assert [message["data"] for message in client.messages(4)] == ["one", "two", "three", "four"]
    clients[1].send("not json")
    assert clients[1].recv()["code"] == "bad_json"
    for client in clients[-2:]:
        client.close()

    expected = {
        "switchboard_connections_open": n - 2,
        "switchboard_connections_opened_total": n,
        'switchboard_connections_closed_total{code="1000"}': 2,
        'switchboard_messages_in_total{type="subscribe"}': n,
        'switchboard_messages_in_total{type="publish"}': 3,
        'switchboard_messages_in_total{type="invalid"}': 1,
        'switchboard_messages_out_total{type="welcome"}': n,
        'switchboard_messages_out_total{type="message"}': 4 * n,
        'switchboard_messages_out_total{type="reply"}': n + 3,
        'switchboard_messages_out_total{type="error"}': 1,
        'switchboard_publishes_total{source="ws"}': 3,
        'switchboard_publishes_total{source="http"}': 1,
        'switchboard_errors_total{code="bad_json"}': 1,
        "switchboard_slow_consumer_disconnects_total": 0,
        "switchboard_broker_reconnects_total": 0,
    }
    samples = settle(server, expected)
    assert samples["switchboard_bytes_in_total"] > 0 and samples["switchboard_bytes_out_total"] > 0
    assert samples["switchboard_fanout_latency_seconds_count"] >= 1
    assert samples["switchboard_send_queue_high_water"] >= 1
    # Whichever worker answers, the scrape is the same.
    for _ in range(4):
        assert {name: scrape(server.url).get(name) for name in expected} == expected

    # A client that never reads is cut as a slow consumer, and counted once, by its worker.
    stalled = RawSocket(server.port, rcvbuf=4096)
    frames = stalled.frames()
    next(frames)  # welcome
    stalled.send_frame(b'{"type":"subscribe","channel":"firehose","id":1}')
    next(frames)  # the reply: subscribed everywhere
    sent = flood(clients[0], "firehose", lambda: scrape(server.url).get("switchboard_slow_consumer_disconnects_total"))
    assert stalled.close_code(timeout=30) in (1008, None)
    stalled.close()
    # (What the firehose delivered depends on when the cut came: not counted here.)
    del expected['switchboard_messages_out_total{type="message"}']
    expected.update(
        {
            "switchboard_connections_opened_total": n + 1,
            'switchboard_messages_out_total{type="welcome"}': n + 1,
            'switchboard_messages_out_total{type="reply"}': n + 3 + 1 + sent,
            'switchboard_connections_closed_total{code="1008"}': 1,
            'switchboard_messages_in_total{type="subscribe"}': n + 1,
            'switchboard_messages_in_total{type="publish"}': 3 + sent,
            'switchboard_publishes_total{source="ws"}': 3 + sent,
            "switchboard_slow_consumer_disconnects_total": 1,
        }
    )
    samples = settle(server, expected)
    assert samples["switchboard_send_queue_high_water"] > 1

    # The stats page's figures are the same numbers, behind the same key.
    assert get(server.url + "/stats.json", key=None)[0] == 401
    status, body = get(server.url + "/stats.json")
    stats = json.loads(body)
    assert status == 200 and stats["totals"]["connections_open"] == n - 2
    assert stats["by_label"]["publishes_total"] == {"ws": 3 + sent, "http": 1}
    for client in clients[:-2]:
        client.close()


def test_webhooks_and_closed_connections_are_scraped(tmp_path):
    """What the Pusher webhooks did and how connections ended, in a real scrape after real webhooks."""
    deployment = deploy(tmp_path)
    server, backend = deployment.server, deployment.backend
    try:
        backend.fail_next = 2  # the first request is answered 500 twice, then taken
        with WireClient(server) as client:
            client.subscribe("metered")
        backend.wait_events(
            lambda events: (
                {"name": "channel_vacated", "channel": "metered"} in events
                and {"name": "channel_occupied", "channel": "metered"} in events
            )
        )
        samples = settle(
            server,
            {
                "switchboard_webhook_events_sent_total": 2,
                "switchboard_webhook_retries_total": 2,
                "switchboard_webhook_events_failed_total": 0,
                "switchboard_webhook_events_dropped_total": 0,
                'switchboard_connections_closed_total{code="1000"}': 1,
            },
        )
        # The hub's total of closed connections is the labelled metric's sum, under no other name.
        closed = server.api("GET", "/api/stats")[1]["counters"]["connections_closed"]
        by_code = [value for name, value in samples.items() if name.startswith("switchboard_connections_closed_total{")]
        assert sum(by_code) == closed == 1
    finally:
        deployment.stop()


def test_metrics_need_the_api_key(start_server):
    server = start_server()
    assert get(server.url + "/metrics", key=None)[0] == 401
    assert get(server.url + "/metrics", key="wrong")[0] == 401
    with server.client():
        assert settle(server, {"switchboard_connections_open": 1})


def test_metrics_on_an_address_of_their_own(start_server):
    port = free_port()
    server = start_server({"SWITCHBOARD_METRICS": f"127.0.0.1:{port}"})
    metrics_url = f"http://127.0.0.1:{port}"
    with server.client():
        assert scrape(metrics_url, key=None)["switchboard_connections_opened_total"] == 1
    # Only /metrics there, and /metrics only there.
    assert get(metrics_url + "/healthz", key=None)[0] == 404
    assert get(metrics_url + "/api/stats")[0] == 404
    assert get(server.url + "/metrics")[0] == 404
    assert server.health()[0] == 200


def test_metrics_off_and_the_stats_page_off_by_default(start_server):
    server = start_server({"SWITCHBOARD_METRICS": "off"})
    for path in ("/metrics", "/stats", "/stats.json"):
        assert get(server.url + path)[0] == 404
