"""Why a connection attempt failed, and whether another attempt can help: shared by both clients.

Worth retrying: the network (refused, reset, timed out) and the statuses a restart, a proxy or a
full server answer with (429, 500, 502, 503, 504). Not worth it: everything else the server says
before the upgrade (a foreign Origin is 403), which would only be said again.
"""

from __future__ import annotations

from urllib.parse import quote

from websockets.exceptions import InvalidMessage, InvalidStatus, InvalidURI
from websockets.uri import parse_uri

from switchboard_client.errors import ConnectionFailed, SwitchboardError, status_error

RETRY_STATUSES = frozenset((429, 500, 502, 503, 504))


def check_url(url: str) -> str:
    """Refuse a URL that is not ws:// or wss:// at once, rather than on every reconnect."""
    try:
        parse_uri(url)
    except InvalidURI as exc:
        raise ValueError(f"not a WebSocket URL (ws://host:port/ws): {url!r}") from exc
    return url


def classify(exc: Exception) -> tuple[SwitchboardError, bool]:
    """The error to report for a failed attempt, and whether retrying may succeed."""
    if isinstance(exc, InvalidStatus):
        status = exc.response.status_code
        return status_error(status, exc.response.body), status in RETRY_STATUSES
    if isinstance(exc, (OSError, TimeoutError, EOFError, InvalidMessage)):
        return ConnectionFailed(f"could not connect: {exc}"), True
    return ConnectionFailed(f"the WebSocket handshake failed: {exc}"), False


def connection_url(url: str, token: str | None) -> str:
    """The `/ws` URL with the token in its query, where the server reads it."""
    if not token:
        return url
    return f"{url}{'&' if '?' in url else '?'}token={quote(token, safe='')}"
