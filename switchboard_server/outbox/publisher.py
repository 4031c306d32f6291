"""The relay's way to the server: `POST /api/publish` on one kept-alive HTTP connection.

Tells a row the server will never take (a bad channel, too large: `PublishRefused`) from a server
that cannot take it now (down, wrong key, overloaded: `ServerUnavailable`), because the relay drops
the first and retries the second. Never touches the database.
"""

from __future__ import annotations

import http.client
from urllib.parse import urlsplit

import orjson

# Codes the server gives a publish that would be refused again however often it is sent.
REFUSED_FOR_GOOD = frozenset({"bad_json", "bad_command", "bad_request", "invalid_channel", "too_large", "forbidden"})


class ServerUnavailable(Exception):
    """The server did not take the publish now; the same row is sent again later."""


class PublishRefused(Exception):
    """The server refused this publish for good (its code is in REFUSED_FOR_GOOD)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code


class HttpPublisher:
    """Publishes through a Switchboard server's HTTP API with its API key."""

    def __init__(self, server_url: str, api_key: str, timeout: float = 10.0) -> None:
        parts = urlsplit(server_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"the server URL must be http(s)://host[:port][/prefix], not {server_url!r}")
        self._scheme, self._host, self._port = parts.scheme, parts.hostname, parts.port
        self._path = parts.path.rstrip("/") + "/api/publish"
        self._timeout = timeout
        self._headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self._connection: http.client.HTTPConnection | None = None

    def publish(self, channel: str, data_json: str, event: str | None, idempotency_key: str) -> int:
        """Publish one message whose data is already JSON text (spliced in, never re-encoded);
        returns its offset."""
        body = b'{"channel":%s,"data":%s,"idempotency_key":%s%s}' % (
            orjson.dumps(channel),
            data_json.encode(),
            orjson.dumps(idempotency_key),
            b',"event":' + orjson.dumps(event) if event is not None else b"",
        )
        status, reply = self._post(body)
        if status == 200:
            return reply["offset"]
        code, message = str(reply.get("code", status)), str(reply.get("message", ""))
        if code in REFUSED_FOR_GOOD:
            raise PublishRefused(code, message)
        raise ServerUnavailable(f"HTTP {status} {code}: {message}")

    def _post(self, body: bytes) -> tuple[int, dict]:
        connection = self._connection or self._connect()
        try:
            connection.request("POST", self._path, body, self._headers)
            response = connection.getresponse()
            raw = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.close()
            raise ServerUnavailable(f"{type(error).__name__}: {error}") from None
        try:
            reply = orjson.loads(raw)
        except orjson.JSONDecodeError:
            reply = {}
        return response.status, reply if isinstance(reply, dict) else {}

    def _connect(self) -> http.client.HTTPConnection:
        kind = http.client.HTTPSConnection if self._scheme == "https" else http.client.HTTPConnection
        self._connection = kind(self._host, self._port, timeout=self._timeout)
        return self._connection

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None
