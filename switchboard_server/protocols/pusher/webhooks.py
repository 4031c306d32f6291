"""Pusher webhooks: what the brokers and client events report, POSTed to each app's URL in batches.

The dispatcher is a BrokerObserver (brokers/base.py): the brokers tell exactly one worker of a
cluster that a channel was occupied or vacated, or that a member was added or removed (also when a
dead worker's reaping removed them), so each occurrence becomes one webhook event, sent from that
worker; `client_event`s are reported by the session that received them. A worker killed before it
sends loses what it held: webhooks are at most once under crashes.

It never blocks the hub: reporting appends to a bounded queue per app and wakes that app's sender
greenlet (started on first use, stopped by `stop`). The sender waits a moment so a burst becomes one
request of up to `MAX_BATCH` events, `{"time_ms", "events"}`, signed with the app's secret
(`X-Pusher-Key`, `X-Pusher-Signature`); a failed request (no answer, or not 2xx) is retried with
exponential backoff and jitter, re-signed each time, and given up after `ATTEMPTS`. A full queue
drops its oldest event. Everything dropped or given up is counted and logged, never silent.
"""

from __future__ import annotations

import logging
import random
import time
import urllib.error
import urllib.request
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import gevent
import orjson
from gevent.event import Event

from switchboard_server.protocols.pusher.apps import App, Apps
from switchboard_server.protocols.pusher.events import PRESENCE, wire_data
from switchboard_server.protocols.pusher.signing import sign

log = logging.getLogger("switchboard.pusher.webhooks")

MAX_QUEUE = 10_000  # events waiting per app
MAX_BATCH = 100  # events per request
BATCH_WAIT = 0.05  # seconds the sender lets a burst gather
ATTEMPTS = 8  # about a minute and a half of retries at most
TIMEOUT = 5.0  # seconds per request


def body(events: list[dict], time_ms: int) -> bytes:
    return orjson.dumps({"time_ms": time_ms, "events": events})


def headers(app: App, payload: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        "X-Pusher-Key": app.key,
        "X-Pusher-Signature": sign(app.secret, payload),
    }


def retry_delay(attempt: int, rand: Callable[[], float] = random.random) -> float:
    """Seconds before retry `attempt` (1, 2, ...): 0.5 s doubling to at most 30 s, times 0.5-1.5."""
    return min(0.5 * 2 ** (attempt - 1), 30.0) * (0.5 + rand())


def post(url: str, payload: bytes, request_headers: dict[str, str]) -> int:
    """POST and return the status; OSError when there is no answer (gevent makes it cooperative)."""
    request = urllib.request.Request(url, data=payload, headers=request_headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


class _Outbox:
    """One app's waiting events and the greenlet that sends them."""

    __slots__ = ("app", "events", "wake", "sender", "busy")

    def __init__(self, app: App) -> None:
        self.app = app
        self.events: deque[dict] = deque(maxlen=MAX_QUEUE)
        self.wake = Event()
        self.sender: gevent.Greenlet | None = None
        self.busy = False


class WebhookDispatcher:
    """Pusher webhook events for every app that has a webhook URL; one per worker."""

    def __init__(self, apps: Apps, counters: Counter[str], send: Callable[..., int] = post) -> None:
        self.apps = apps
        self.counters = counters
        self._send = send
        self._outboxes = {app.id: _Outbox(app) for app in apps.all if app.webhook_url}

    # -- what the brokers report (BrokerObserver) ------------------------------------------

    def channel_occupied(self, channel: str) -> None:
        self._channel_event("channel_occupied", channel)

    def channel_vacated(self, channel: str) -> None:
        self._channel_event("channel_vacated", channel)

    def member_added(self, channel: str, member: dict) -> None:
        self._member_event("member_added", channel, member)

    def member_removed(self, channel: str, member: dict) -> None:
        self._member_event("member_removed", channel, member)

    # -- what the sessions report ----------------------------------------------------------

    def client_event(self, app: App, channel: str, event: str, data: Any, socket_id: str, user_id: str | None) -> None:
        """A `client-*` event a connection of `app` sent on `channel` (its Pusher name)."""
        entry = {"name": "client_event", "channel": channel, "event": event, "data": wire_data(data)}
        entry["socket_id"] = socket_id
        if user_id is not None:
            entry["user_id"] = user_id
        self._queue(app, entry)

    # -- queueing and sending --------------------------------------------------------------

    def _channel_event(self, name: str, hub_channel: str) -> None:
        found = self.apps.for_hub_channel(hub_channel)
        if found is not None:
            self._queue(found[0], {"name": name, "channel": found[1]})

    def _member_event(self, name: str, hub_channel: str, member: dict) -> None:
        found = self.apps.for_hub_channel(hub_channel)
        if found is not None and found[1].startswith(PRESENCE):
            self._queue(found[0], {"name": name, "channel": found[1], "user_id": member["user"]})

    def _queue(self, app: App, entry: dict) -> None:
        outbox = self._outboxes.get(app.id)
        if outbox is None:
            return
        if len(outbox.events) == MAX_QUEUE:
            self.counters["webhooks_dropped"] += 1
            log.warning("webhook queue of app %s is full: dropped its oldest event", app.id)
        outbox.events.append(entry)
        outbox.wake.set()
        if outbox.sender is None:
            outbox.sender = gevent.spawn(self._run, outbox)

    def _run(self, outbox: _Outbox) -> None:
        while True:
            outbox.wake.wait()
            outbox.wake.clear()
            gevent.sleep(BATCH_WAIT)
            while outbox.events:
                batch = [outbox.events.popleft() for _ in range(min(MAX_BATCH, len(outbox.events)))]
                outbox.busy = True
                try:
                    self._deliver(outbox.app, batch)
                finally:
                    outbox.busy = False

    def _deliver(self, app: App, batch: list[dict]) -> None:
        """POST one batch until it is taken or `ATTEMPTS` have failed."""
        for attempt in range(1, ATTEMPTS + 1):
            payload = body(batch, int(time.time() * 1000))
            try:
                status = self._send(app.webhook_url, payload, headers(app, payload))
                problem = None if 200 <= status < 300 else f"status {status}"
            except OSError as exc:
                problem = str(exc)
            if problem is None:
                self.counters["webhooks_sent"] += len(batch)
                return
            log.warning("webhook for app %s failed (attempt %d of %d): %s", app.id, attempt, ATTEMPTS, problem)
            if attempt < ATTEMPTS:
                self.counters["webhooks_retried"] += 1
                gevent.sleep(retry_delay(attempt))
        self.counters["webhooks_failed"] += len(batch)
        log.error("gave up a webhook of %d events for app %s after %d attempts", len(batch), app.id, ATTEMPTS)

    def stop(self, timeout: float) -> None:
        """At shutdown: send what is queued (for up to `timeout` seconds), then stop the senders."""
        deadline = time.monotonic() + timeout
        outboxes = [outbox for outbox in self._outboxes.values() if outbox.sender is not None]
        while time.monotonic() < deadline and any(outbox.events or outbox.busy for outbox in outboxes):
            gevent.sleep(0.05)
        for outbox in outboxes:
            outbox.sender.kill(block=False)
            outbox.sender = None
            if outbox.events:
                self.counters["webhooks_failed"] += len(outbox.events)
                log.error("shutdown: %d webhook events of app %s were not sent", len(outbox.events), outbox.app.id)
