"""Switchboard's Python client: subscribe, publish and see who is online, from a service.

    from switchboard_client import connect               # threads and gevent
    from switchboard_client.asyncio import connect       # asyncio
    from switchboard_client import HTTPClient            # publish-only services, over /api

The protocol is docs/protocol.md; this client's API and guarantees are docs/python-client.md.
"""

from switchboard_client.errors import (
    BadCommandError,
    BadJsonError,
    BadRequestError,
    ClientClosed,
    CommandTimeout,
    ConnectionFailed,
    ForbiddenError,
    InternalError,
    InvalidChannelError,
    NotConfiguredError,
    NotFoundError,
    NotSubscribedError,
    RateLimitedError,
    RecoveryError,
    ServerFullError,
    SwitchboardError,
    TooLargeError,
    TooManyConnectionsError,
    TooManySubscriptionsError,
    UnauthorizedError,
    UnavailableError,
)
from switchboard_client.http_api import AsyncHTTPClient, HTTPClient
from switchboard_client.protocol import Join, Leave, Member, Message
from switchboard_client.sync import Client, Subscription, connect

__all__ = [
    "AsyncHTTPClient",
    "BadCommandError",
    "BadJsonError",
    "BadRequestError",
    "Client",
    "ClientClosed",
    "CommandTimeout",
    "ConnectionFailed",
    "ForbiddenError",
    "HTTPClient",
    "InternalError",
    "InvalidChannelError",
    "Join",
    "Leave",
    "Member",
    "Message",
    "NotConfiguredError",
    "NotFoundError",
    "NotSubscribedError",
    "RateLimitedError",
    "RecoveryError",
    "ServerFullError",
    "Subscription",
    "SwitchboardError",
    "TooLargeError",
    "TooManyConnectionsError",
    "TooManySubscriptionsError",
    "UnauthorizedError",
    "UnavailableError",
    "connect",
]
