"""One exception class per error code of docs/protocol.md, and the few the client adds itself.

The server answers every refusal with `{"code", "message"}`, over the WebSocket and over HTTP
alike; `error_for` turns that pair into an instance of the class for the code, so a caller can
`except ForbiddenError` whichever way the request went. A code this module does not know (a newer
server) still becomes a `SwitchboardError` carrying it.
"""

from __future__ import annotations

import json


class SwitchboardError(Exception):
    """Base of every error the client raises: `.code` is the protocol's code, `.message` its text."""

    code = "error"

    def __init__(self, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


# -- the server's codes (docs/protocol.md, "Errors" and "HTTP API") -------------------------------


class BadJsonError(SwitchboardError):
    """Not JSON, or `data` nested deeper than the server reads (254 levels)."""

    code = "bad_json"


class BadCommandError(SwitchboardError):
    """A command the server cannot run: a bad `since`, `epoch` or idempotency key."""

    code = "bad_command"


class BadRequestError(SwitchboardError):
    """An HTTP API request the server cannot run (a bad body or query)."""

    code = "bad_request"


class InvalidChannelError(SwitchboardError):
    """A channel name outside `[A-Za-z0-9_-=@,.;:]{1,128}`."""

    code = "invalid_channel"


class NotSubscribedError(SwitchboardError):
    """Unsubscribing from a channel the connection is not subscribed to."""

    code = "not_subscribed"


class UnauthorizedError(SwitchboardError):
    """A bad, missing or expired token, or a wrong API key."""

    code = "unauthorized"


class ForbiddenError(SwitchboardError):
    """A protected channel without a grant, a publish without a publish grant, a foreign Origin."""

    code = "forbidden"


class NotConfiguredError(SwitchboardError):
    """The HTTP API is off: the server has no SWITCHBOARD_API_KEY."""

    code = "not_configured"


class NotFoundError(SwitchboardError):
    """No such HTTP route."""

    code = "not_found"


class RateLimitedError(SwitchboardError):
    """More messages per second than the server allows one connection; the command was dropped."""

    code = "rate_limited"


class TooManySubscriptionsError(SwitchboardError):
    """More channels at once than SWITCHBOARD_MAX_SUBSCRIPTIONS."""

    code = "too_many_subscriptions"


class TooManyConnectionsError(SwitchboardError):
    """More sockets from this address than SWITCHBOARD_MAX_CONNECTIONS_PER_ADDRESS (HTTP 429)."""

    code = "too_many_connections"


class ServerFullError(SwitchboardError):
    """The worker is at SWITCHBOARD_MAX_CONNECTIONS (HTTP 503)."""

    code = "server_full"


class UnavailableError(SwitchboardError):
    """The Redis broker cannot be reached: nothing was published or subscribed; retry."""

    code = "unavailable"


class TooLargeError(SwitchboardError):
    """A body over SWITCHBOARD_MAX_MESSAGE_SIZE (HTTP 413), or a WebSocket message the server
    closed the connection for (1009)."""

    code = "too_large"


class InternalError(SwitchboardError):
    """The server's own code failed on this request (an application hook or RPC method raised):
    the server logged it; the connection goes on (HTTP 500)."""

    code = "internal"


# -- the client's own ----------------------------------------------------------------------------


class CommandTimeout(SwitchboardError, TimeoutError):
    """No reply within the timeout. A publish may still have happened: retry it with the same
    idempotency key (`.idempotency_key`) and it lands once."""

    code = "timeout"

    def __init__(self, message: str, idempotency_key: str | None = None) -> None:
        super().__init__(message)
        self.idempotency_key = idempotency_key


class ConnectionFailed(SwitchboardError):
    """The server could not be reached: refused, unreachable, or the HTTP client's retries ran out."""

    code = "connection_failed"


class ClientClosed(SwitchboardError):
    """The client was closed, by `close()` or by a fatal error (then `__cause__` says which)."""

    code = "closed"


class RecoveryError(SwitchboardError):
    """A subscription could not resume where it was: messages may be missing.

    Raised from the subscription's iterator (which goes on working afterwards) or passed to its
    `on_unrecovered` callback. `since` is the last offset the subscription had delivered (in
    `previous_epoch`), `epoch` and `offset` are where the channel stands now; reload what is
    missing from history (`HTTPClient.history`) if it matters.
    """

    code = "unrecovered"

    def __init__(
        self, channel: str, reason: str, since: int | None, previous_epoch: str | None, epoch: str, offset: int
    ) -> None:
        super().__init__(
            f"{channel}: could not resume after offset {since} of epoch {previous_epoch}: {reason} "
            f"(the channel is at offset {offset} of epoch {epoch})"
        )
        self.channel = channel
        self.reason = reason
        self.since = since
        self.previous_epoch = previous_epoch
        self.epoch = epoch
        self.offset = offset


# What a token callable may raise that a later connection attempt may not: the network, or a token
# service that is away (this package's HTTPClient says so with these). Anything else it raises is
# the application's bug: the clients raise it to the caller instead of retrying.
TOKEN_FAILURES_RETRIED = (OSError, ConnectionFailed, UnavailableError)


_BY_CODE = {
    cls.code: cls
    for cls in (
        BadJsonError,
        BadCommandError,
        BadRequestError,
        InvalidChannelError,
        NotSubscribedError,
        UnauthorizedError,
        ForbiddenError,
        NotConfiguredError,
        NotFoundError,
        RateLimitedError,
        TooManySubscriptionsError,
        TooManyConnectionsError,
        ServerFullError,
        UnavailableError,
        TooLargeError,
        InternalError,
    )
}


def error_for(code: str, message: str) -> SwitchboardError:
    """The exception for a server's `{"code", "message"}`."""
    return _BY_CODE.get(code, SwitchboardError)(message, code)


def status_error(status: int, body: bytes | str) -> SwitchboardError:
    """The error an HTTP response carries: its `{"code", "message"}`, else its status and text
    (a proxy's own error page, say)."""
    try:
        parsed = json.loads(body)
        return error_for(parsed["code"], parsed["message"])
    except (ValueError, TypeError, KeyError):
        text = body.decode(errors="replace") if isinstance(body, bytes) else body
        return SwitchboardError(f"HTTP {status}: {text.strip()[:200]}", f"http_{status}")
