"""The one error type of the protocol, and how each code maps to an HTTP status.

WebSocket replies and HTTP API responses both carry `{"code", "message"}`; keeping the mapping
here means a code means the same thing on either side.
"""

from __future__ import annotations

HTTP_STATUS = {
    "bad_json": 400,
    "bad_command": 400,
    "bad_request": 400,
    "invalid_channel": 400,
    "not_subscribed": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_configured": 403,
    "not_found": 404,
    "too_many_connections": 429,
    "rate_limited": 429,
    "too_many_subscriptions": 400,
    "too_large": 413,
    "unavailable": 503,
    "server_full": 503,
    "draining": 503,
    "internal": 500,
}


class ProtocolError(Exception):
    """A request the server refuses, with a machine-readable code and a human message."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        # The id of the command that failed, so the error reply can carry it.
        self.id: object = None

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 400)
