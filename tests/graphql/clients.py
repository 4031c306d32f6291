"""GraphQL clients for the tests: the `graphql-ws` npm client in Node, and a raw one for the bytes
no polite client sends. Both read like a user's session: connect, subscribe, see events arrive."""

from __future__ import annotations

import json
import queue
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

from tests.integration.servers import ROOT, Endpoint

SUBPROTOCOL = "graphql-transport-ws"
MESSAGES = (
    "subscription Feed($channel: String!, $since: Offset, $epoch: String) {"
    " messages(channel: $channel, since: $since, epoch: $epoch) { channel offset epoch event from data } }"
)
PRESENCE = (
    "subscription Who($channel: String!) { presence(channel: $channel) { kind members { user } member { user } } }"
)
PUBLISH = "mutation Say($channel: String!, $data: JSON!) { publish(channel: $channel, data: $data) { offset } }"


class NodeGraphQL:
    """tests/graphql/gqlws_driver.mjs: `graphql-ws` clients in one Node process."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            pytest.fail("the GraphQL client tests need Node.js 20 or later on PATH (apt-get install -y nodejs)")
        if not (ROOT / "node_modules" / "graphql-ws").is_dir():
            pytest.fail("the GraphQL client tests need the npm package `graphql-ws`: run `npm ci`")
        self.process = subprocess.Popen(
            [node, "tests/graphql/gqlws_driver.mjs"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._events: queue.Queue[dict] = queue.Queue()
        self.seen: list[dict] = []  # events read while waiting for another
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self._events.put(json.loads(line))

    def _do(self, **command: Any) -> None:
        self.process.stdin.write(json.dumps(command) + "\n")
        self.process.stdin.flush()

    def connect(self, name: str, endpoint: Endpoint, token: str | None = None) -> dict:
        """Connect and wait for the server's connection_ack (returns its payload)."""
        self._do(do="connect", client=name, url=endpoint.ws_url + "/graphql", token=token)
        return self.expect(lambda e: e.get("client") == name and e["event"] in ("connected", "closed"))

    def subscribe(self, name: str, sub: str, query: str, resume: bool = False, **variables: Any) -> None:
        self._do(do="subscribe", client=name, sub=sub, query=query, variables=variables, resume=resume)

    def dispose(self, name: str) -> None:
        self._do(do="dispose", client=name)

    def expect(self, matches: Callable[[dict], bool], timeout: float = 15.0) -> dict:
        """The next event that `matches`, from those already seen first."""
        for index, event in enumerate(self.seen):
            if matches(event):
                return self.seen.pop(index)
        deadline = time.monotonic() + timeout
        while True:
            try:
                event = self._events.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no matching event within {timeout} s; seen {self.seen}") from None
            if matches(event):
                return event
            self.seen.append(event)

    def next(self, sub: str, timeout: float = 15.0) -> dict:
        """The subscription's next result's data; an error or completion fails the test."""
        event = self.expect(lambda e: e.get("sub") == sub, timeout)
        assert "next" in event, event
        return event["next"]["data"]

    def outcome(self, sub: str) -> dict:
        """The subscription's next event of any kind: next, error or complete."""
        return self.expect(lambda e: e.get("sub") == sub)

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


class RawGraphQL:
    """A `websockets` connection speaking the protocol by hand, message by message."""

    def __init__(self, endpoint: Endpoint, subprotocols: list[str] | None = None, **kwargs: Any) -> None:
        protocols = [SUBPROTOCOL] if subprotocols is None else subprotocols
        self.ws: ClientConnection = connect(
            endpoint.ws_url + "/graphql", subprotocols=protocols or None, open_timeout=10, legacy=True, **kwargs
        )

    def send(self, message: dict | str | bytes) -> None:
        self.ws.send(message if isinstance(message, (str, bytes)) else json.dumps(message))

    def recv(self, timeout: float = 10.0) -> dict:
        return json.loads(self.ws.recv(timeout=timeout))

    def init(self, token: str | None = None) -> dict:
        self.send({"type": "connection_init", "payload": {"token": token} if token else None})
        ack = self.recv()
        assert ack["type"] == "connection_ack", ack
        return ack

    def subscribe(self, op_id: str, query: str, **variables: Any) -> None:
        self.send({"id": op_id, "type": "subscribe", "payload": {"query": query, "variables": variables}})

    def close_code(self, timeout: float = 15.0) -> tuple[int | None, str]:
        """Read until the server closes; its close code and reason."""
        try:
            while True:
                self.ws.recv(timeout=timeout)
        except ConnectionClosed as closed:
            return (closed.rcvd.code, closed.rcvd.reason) if closed.rcvd else (None, "")

    def close(self) -> None:
        self.ws.close()

    def __enter__(self) -> RawGraphQL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
