"""One Redis round trip for what every greenlet of a worker asks at once.

A worker's greenlets each used to wait for their own round trip: a client's thousand publishes in
one read took a thousand in turn, and a reconnect storm's subscribes queued for the connection
pool. Here a command is queued and its greenlet waits; one sender greenlet writes everything
queued as a single pipeline, and whatever is queued while that round trip is out goes in the next.
Order is kept (one pipeline at a time, commands as asked), so a greenlet's publish is stored before
its next read, whoever else is writing. Lua scripts go by their SHA; after a Redis restart forgot
them (NOSCRIPT), they are loaded and those commands sent again.

Only a failed connection (`CONNECTION_FAILURES`) is the broker's business (`on_failure`, and
`unavailable` for whoever waits). Anything else, an error reply or a bug, reaches whoever waits as
that exception, and is logged with its traceback when nobody waits: never a network blip.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable

import gevent
import redis
from gevent.event import AsyncResult

log = logging.getLogger("switchboard.redis")

# What says the connection to Redis failed (or Redis is still loading its data, a ConnectionError
# too), rather than that a command was wrong; with Redis Cluster, also that a key's slot has no
# reachable master right now (CLUSTERDOWN, or a slot the client knows no node for).
CONNECTION_FAILURES = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    OSError,
    redis.exceptions.ClusterDownError,
    redis.exceptions.SlotNotCoveredError,
)


class Script:
    """A Lua script known by its SHA1, as EVALSHA wants it."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def command(self, keys: list, args: list) -> tuple:
        return ("EVALSHA", self.sha, len(keys), *keys, *args)


class Pipeline:
    """Queues commands from any greenlet and sends them together, one pipeline at a time."""

    def __init__(self, client: redis.Redis, scripts: list[Script], on_failure: Callable[[Exception], None]) -> None:
        self._client = client
        self._scripts = scripts
        # Told when the connection failed under commands nobody waits for (`send`).
        self._on_failure = on_failure
        # Each command with where its reply goes: a waiting caller, a callback, or nowhere.
        self._queue: list[tuple[tuple, AsyncResult | Callable | None]] = []
        self._sender: gevent.Greenlet | None = None

    def call(self, *command) -> AsyncResult:
        """Queue a command; `.get()` on the result waits for its reply (or raises its error)."""
        result = AsyncResult()
        self._queue_command(command, result)
        return result

    def execute(self, *command):
        """Queue a command and wait for its reply."""
        return self.call(*command).get()

    def send(self, *command, then: Callable[[object], None] | None = None) -> None:
        """Queue a command nobody waits for; `then(reply)` runs in the sender greenlet when it is
        answered (so it must not block). A failed connection goes to `on_failure`; any other
        error is logged with its traceback."""
        self._queue_command(command, then)

    def _queue_command(self, command: tuple, result: AsyncResult | Callable | None) -> None:
        self._queue.append((command, result))
        if self._sender is None:
            self._sender = gevent.spawn(self._send)

    def _send(self) -> None:
        try:
            while self._queue:
                batch, self._queue = self._queue, []
                try:
                    replies = self._round_trip([command for command, _ in batch])
                except CONNECTION_FAILURES as exc:  # every command of the batch failed with it
                    replies = [exc] * len(batch)
                except Exception as exc:  # a bug (an argument redis-py cannot send): the batch's too
                    replies = [exc] * len(batch)
                self._answer(batch, replies)
        finally:
            self._sender = None

    def _answer(self, batch: list[tuple[tuple, AsyncResult | Callable | None]], replies: list) -> None:
        """Hand each reply to whoever waits for it, or to its callback."""
        for (command, result), reply in zip(batch, replies, strict=True):
            if isinstance(result, AsyncResult):
                if isinstance(reply, Exception):
                    result.set_exception(reply)
                else:
                    result.set(reply)
            elif isinstance(reply, CONNECTION_FAILURES):
                self._on_failure(reply)
            elif isinstance(reply, Exception):
                log.error("redis refused %s", command[0], exc_info=reply)
            elif result is not None:
                result(reply)

    def _round_trip(self, commands: list[tuple]) -> list:
        replies = self._pipeline(commands)
        forgotten = [i for i, reply in enumerate(replies) if isinstance(reply, redis.exceptions.NoScriptError)]
        if forgotten:
            self._load_scripts()
            for i, reply in zip(forgotten, self._pipeline([commands[i] for i in forgotten]), strict=True):
                replies[i] = reply
        return replies

    def _load_scripts(self) -> None:
        self._pipeline([("SCRIPT", "LOAD", script.source) for script in self._scripts])

    def _pipeline(self, commands: list[tuple]) -> list:
        pipe = self._client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)
