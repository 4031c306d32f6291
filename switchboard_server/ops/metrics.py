"""Prometheus metrics for one worker, made from the plain counts the hub keeps.

The hot paths never call prometheus_client: the hub counts in `Hub.counters` (a dict) and its
connections in the flusher's `Meter` (plain ints, per read, write or flush run, never per
delivery); `Recorder.sync` turns what changed into Prometheus values once a second, and again
before every scrape. Under Gunicorn, prometheus_client's multiprocess mode (PROMETHEUS_MULTIPROC_DIR,
set in gunicorn.conf.py before any worker imports it) keeps each worker's values in a file, so a
scrape answered by any worker adds up all of them; the other workers' figures are at most a
second old. Never imports Flask.
"""

from __future__ import annotations

import logging
import os
import time
from typing import TYPE_CHECKING, Any

import gevent
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

if TYPE_CHECKING:
    from switchboard_server.core.hub import Hub

log = logging.getLogger("switchboard.metrics")

SYNC_INTERVAL = 1.0
# From one socket written at once to tens of thousands: 50 µs to a second.
LATENCY_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


# Every name the hub counts under (`Hub.counters`) reaches a metric through one of these three
# tables; `metric_of` refuses any other name, and tests/unit/test_metric_names.py checks every
# name the code increments. Metric names lose their `switchboard_` prefix and `_total` suffix here.

# A counter named `<prefix><rest>` feeds a metric labelled with the rest: prefix -> (metric, label, help).
LABELLED = {
    "in_": ("messages_in", "type", "Client messages received, by command type."),
    "out_": ("messages_out", "type", "Messages sent to clients, by type (fan-out per recipient)."),
    "close_": ("connections_closed", "code", "Connections closed, by close code."),
    "errors_": ("errors", "code", "Error replies to client commands, by error code."),
    "refused_": ("handshakes_refused", "code", "WebSocket handshakes refused, by error code."),
    "publishes_": ("publishes", "source", "Messages published, by source (ws, http, graphql, pusher_*)."),
}
# A counter with a metric of its own: name -> (metric, help).
PLAIN = {
    "connections_opened": ("connections_opened", "WebSocket connections accepted."),
    "slow_consumers_closed": ("slow_consumer_disconnects", "Connections closed (1008) as slow."),
    "drain_closed": (
        "drain_disconnects",
        "Connections a draining worker closed (1012; 4200 on Pusher), told when to reconnect.",
    ),
    "closed_for_abuse": ("rate_limit_disconnects", "Connections closed (1008) for flooding."),
    "messages_conflated": (
        "messages_conflated",
        "Messages a lagging subscriber of a conflated channel was spared: replaced by a newer one of the same key.",
    ),
    "broker_reconnects": ("broker_reconnects", "Times the Redis broker came back after an outage."),
    "message_gaps": (
        "message_gaps",
        "Times a channel's messages were lost before reaching this worker, and its subscribers told.",
    ),
    "webhooks_sent": ("webhook_events_sent", "Pusher webhook events the application's endpoint took (2xx)."),
    "webhooks_failed": (
        "webhook_events_failed",
        "Pusher webhook events given up: every attempt failed, or still queued when the worker stopped.",
    ),
    "webhooks_dropped": ("webhook_events_dropped", "Pusher webhook events dropped, oldest first, from a full queue."),
    "webhooks_retried": (
        "webhook_retries",
        "Pusher webhook requests that failed (no answer, or not 2xx) and were sent again.",
    ),
}
# A total kept for /api/stats that a labelled metric already holds, as the sum over its label:
# name -> that metric. Exported again, the same count would have two names.
SUMMED = {"connections_closed": "connections_closed"}


class UnknownCounter(LookupError):
    """A hub counter no metric takes: counted, yet invisible to every scrape."""


def metric_of(key: str) -> tuple[str, str | None]:
    """The metric a hub counter feeds, and the label value it feeds (None: unlabelled, or a
    `SUMMED` total); `UnknownCounter` for a name that fits none of the tables."""
    if key in PLAIN:
        return PLAIN[key][0], None
    if key in SUMMED:
        return SUMMED[key], None
    for prefix, (metric, _label, _help) in LABELLED.items():
        if key.startswith(prefix) and len(key) > len(prefix):
            return metric, key[len(prefix) :]
    raise UnknownCounter(f"hub counter {key!r} feeds no metric: add it to a table in ops/metrics.py")


class Recorder:
    """The worker's Prometheus metrics, fed from its hub. Create one per hub."""

    def __init__(self, hub: Hub) -> None:
        self._hub = hub
        # Metrics of this recorder only (several apps in one process must not collide); under
        # Gunicorn a scrape reads every worker's files instead (see `registry`).
        self._own = registry = CollectorRegistry()
        self.connections_open = Gauge(
            "switchboard_connections_open",
            "Open WebSocket connections.",
            registry=registry,
            multiprocess_mode="livesum",
        )
        self.queue_high = Gauge(
            "switchboard_send_queue_high_water",
            "Most frames seen waiting in one connection's send queue, since start.",
            registry=registry,
            multiprocess_mode="max",
        )
        self.latency = Histogram(
            "switchboard_fanout_latency_seconds",
            "Time from the first frame queued for a flush run (a publish) to the last socket write of that run.",
            registry=registry,
            buckets=LATENCY_BUCKETS,
        )
        self.bytes_in = Counter("switchboard_bytes_in", "Bytes read from WebSocket clients.", registry=registry)
        self.bytes_out = Counter("switchboard_bytes_out", "Bytes written to WebSocket clients.", registry=registry)

        def counter(name: str, help: str, label: str | None = None) -> Counter:
            return Counter("switchboard_" + name, help, [label] if label else [], registry=registry)

        self._metrics = {metric: counter(metric, help, label) for metric, label, help in LABELLED.values()}
        self._metrics.update({metric: counter(metric, help) for metric, help in PLAIN.values()})
        self._children: dict[str, Any] = {}  # hub counter -> the metric (child) it feeds, or None
        self._synced: dict[str, int] = {}
        self._bytes = (0, 0)
        self._greenlet: gevent.Greenlet | None = None

    # -- feeding ---------------------------------------------------------------------------

    def start(self) -> None:
        """Sync once a second from now on (idempotent; call from the worker, after gevent patches)."""
        if self._greenlet is None:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        """A last sync, so what a stopping worker counted is kept for the others' scrapes."""
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None
        self.sync()

    def _run(self) -> None:
        while True:
            gevent.sleep(SYNC_INTERVAL)
            try:
                self.sync()
            except Exception:  # a metrics bug must not stop the counting, nor the worker
                log.exception("metrics sync failed")

    def sync(self) -> None:
        """Add what the hub counted since the last sync to the Prometheus values."""
        hub = self._hub
        for key, value in tuple(hub.counters.items()):
            delta = value - self._synced.get(key, 0)
            if delta:
                self._synced[key] = value
                child = self._children[key] if key in self._children else self._child(key)
                if child is not None:
                    child.inc(delta)
        meter = hub.flusher.meter
        bytes_in, bytes_out = self._bytes
        if meter.bytes_in != bytes_in:
            self.bytes_in.inc(meter.bytes_in - bytes_in)
        if meter.bytes_out != bytes_out:
            self.bytes_out.inc(meter.bytes_out - bytes_out)
        self._bytes = (meter.bytes_in, meter.bytes_out)
        self.queue_high.set(meter.queue_high)
        self.connections_open.set(len(hub.connections))
        latencies, meter.latencies = meter.latencies, []
        for seconds in latencies:
            self.latency.observe(seconds)

    def _child(self, key: str) -> Any:
        """The metric (child) a hub counter feeds, or None: a total a labelled metric already
        holds, or a name no metric takes, which is logged as the bug it is (once per worker)."""
        child = None
        try:
            metric, label = metric_of(key)
        except UnknownCounter as unknown:
            log.error("%s", unknown)
        else:
            if key not in SUMMED:
                child = self._metrics[metric] if label is None else self._metrics[metric].labels(label)
        self._children[key] = child
        return child

    # -- reading ---------------------------------------------------------------------------

    def registry(self) -> CollectorRegistry:
        """What a scrape reads: every worker's files under Gunicorn, else this recorder's metrics."""
        if not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
            return self._own
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return registry

    def exposition(self) -> tuple[bytes, str]:
        """The Prometheus text format and its content type, with this worker's latest counts."""
        self.sync()
        return generate_latest(self.registry()), CONTENT_TYPE_LATEST

    def snapshot(self) -> dict[str, Any]:
        """The same figures as JSON for the stats page: each metric summed over its labels
        (`totals`), and split by its label (`by_label`). Names lose the `switchboard_` prefix."""
        self.sync()
        totals: dict[str, float] = {}
        by_label: dict[str, dict[str, float]] = {}
        for metric in self.registry().collect():
            for sample in metric.samples:
                if sample.name.endswith(("_bucket", "_created")):
                    continue
                name = sample.name.removeprefix("switchboard_")
                totals[name] = totals.get(name, 0) + sample.value
                if sample.labels:
                    by_label.setdefault(name, {})[next(iter(sample.labels.values()))] = sample.value
        return {"time": time.time(), "totals": totals, "by_label": by_label}
