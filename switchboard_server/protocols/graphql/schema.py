"""The GraphQL schema over the hub: its SDL and the resolvers, each one hub operation.

Resolvers check the same grants as the native protocol (core/access.py) and raise the native
error codes, which reach clients as `extensions.code`. The subscription fields do not iterate
anything themselves: their `subscribe` resolvers only read and check the arguments and name the
hub stream to join (`Source`); the session subscribes through the hub, and each event is then
executed against the selection set once per prepared subscription (hub/graphql/feed.py).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import TYPE_CHECKING, Any

import orjson
from graphql import GraphQLError, GraphQLSchema, build_schema

from switchboard_server.core.access import Grants
from switchboard_server.core.envelope import validate_channel, validate_event, validate_idempotency_key
from switchboard_server.core.errors import ProtocolError
from switchboard_server.core.hooks import Client, client_of

if TYPE_CHECKING:
    from switchboard_server.core.hub import Hub
    from switchboard_server.transport.connection import Connection

log = logging.getLogger("switchboard.hooks")

SDL = '''
"Any JSON value: a message's data, a member's info."
scalar JSON

"A message's position in its channel: 1, 2, 3, ... (a JSON number; it may pass 2^31)."
scalar Offset

type Query {
  "The messages a channel still holds after `since`, oldest first, and where the channel stands."
  history(channel: String!, since: Offset = 0, limit: Int): History!
  "Who is subscribed to a channel now, on every worker."
  presence(channel: String!): [Member!]!
  "Channels with subscribers (on every worker) that the caller may subscribe to."
  channels: [ChannelCount!]!
}

type Mutation {
  "Store a message and deliver it to every subscriber, of every protocol."
  publish(channel: String!, data: JSON!, event: String, idempotencyKey: String): Published!
  "Call the server's RPC method by name: its result, or an error with the code it refused with."
  rpc(method: String!, params: JSON): JSON
}

type Subscription {
  """
  A channel's messages as they are published. With `since` and `epoch` (from an event or from
  `history`), first exactly the messages after that offset, then live ones, with no gap and no
  duplicate; or an `error` (code `unrecoverable`) when the channel no longer holds them all.
  """
  messages(channel: String!, since: Offset, epoch: String): Message!
  "A channel's members: first every member now (MEMBERS), then each JOIN and LEAVE."
  presence(channel: String!): PresenceEvent!
}

type Message {
  channel: String!
  offset: Offset!
  "The channel's epoch: offsets are only comparable within one."
  epoch: String!
  "The event name the publisher gave, if any."
  event: String
  "The publishing user; null for the HTTP API."
  from: String
  data: JSON
}

type History {
  channel: String!
  epoch: String!
  "The channel's last offset."
  offset: Offset!
  messages: [Message!]!
}

type Member {
  user: String!
  info: JSON
}

enum PresenceKind {
  MEMBERS
  JOIN
  LEAVE
}

type PresenceEvent {
  kind: PresenceKind!
  channel: String!
  "Every member, on MEMBERS."
  members: [Member!]
  "Who joined or left, on JOIN and LEAVE."
  member: Member
}

type ChannelCount {
  name: String!
  subscribers: Int!
}

type Published {
  channel: String!
  offset: Offset!
}
'''


@dataclass(frozen=True)
class Caller:
    """Who runs an operation: a connection's user and grants, or a service holding the API key.

    `trusted` (the API key) may read and publish everywhere, as the HTTP API may.
    """

    hub: Hub
    user: str | None
    grants: Grants
    trusted: bool = False
    # The WebSocket the operation came on (None over HTTP): a publish there is the client's.
    conn: Connection | None = None

    def check_read(self, channel: str) -> str:
        """A protected channel's history or members need the grant its messages need."""
        validate_channel(channel)
        if not self.trusted and not self.grants.may_subscribe(channel):
            raise ProtocolError("forbidden", f"{channel!r} is a protected channel: it needs a grant in your token")
        return channel


@dataclass(frozen=True)
class Source:
    """What a subscription joins: a hub channel's messages or its presence, from a position.

    graphql-core asks a subscribe resolver for an async iterable; this one is never iterated
    (the hub pushes events), so `__aiter__` exists only to say so.
    """

    kind: str
    channel: str
    since: int | None = None
    epoch: str | None = None

    def __aiter__(self):
        raise TypeError("a hub source is driven by the hub, not iterated")


def error(code: str, message: str) -> GraphQLError:
    """A GraphQL error carrying a native error code, as clients read it: `extensions.code`."""
    return GraphQLError(message, extensions={"code": code})


def _coded(resolver: Callable[..., Any]) -> Callable[..., Any]:
    """Turn the hub's ProtocolError into a GraphQL error with its code."""

    @wraps(resolver)
    def resolve(*args: Any, **kwargs: Any) -> Any:
        try:
            return resolver(*args, **kwargs)
        except ProtocolError as refused:
            raise error(refused.code, refused.message) from None

    return resolve


@_coded
def _history(_root: Any, info: Any, channel: str, since: int = 0, limit: int | None = None) -> dict:
    caller: Caller = info.context
    if limit is not None and limit < 0:
        raise ProtocolError("bad_request", "limit must not be negative")
    # limit 0 asks only where the channel stands: a read without messages (since None).
    epoch, last, payloads = caller.hub.history(caller.check_read(channel), None if limit == 0 else since, limit)
    messages = [orjson.loads(payload) for payload in payloads]
    for message in messages:
        message["epoch"] = epoch
    return {"channel": channel, "epoch": epoch, "offset": last, "messages": messages}


@_coded
def _presence(_root: Any, info: Any, channel: str) -> list[dict]:
    caller: Caller = info.context
    return caller.hub.presence(caller.check_read(channel))


@_coded
def _channels(_root: Any, info: Any) -> list[dict]:
    caller: Caller = info.context
    counts = caller.hub.channel_counts()
    return [
        {"name": name, "subscribers": count}
        for name, count in sorted(counts.items())
        if caller.trusted or caller.grants.may_subscribe(name)
    ]


@_coded
def _publish(
    _root: Any, info: Any, channel: str, data: Any, event: str | None = None, idempotencyKey: str | None = None
) -> dict:
    caller: Caller = info.context
    validate_channel(channel)
    idempotency_key = validate_idempotency_key(idempotencyKey)
    validate_event(event)
    hub = caller.hub
    if not caller.trusted and not hub.may_client_publish(caller.grants, channel):
        raise ProtocolError("forbidden", f"clients may not publish on {channel!r}")
    offset = hub.publish(channel, data, caller.user, idempotency_key, event, by=caller.conn, api=caller.conn is None)
    hub.counters["publishes_graphql"] += 1
    return {"channel": channel, "offset": offset}


@_coded
def _rpc(_root: Any, info: Any, method: str, params: Any = None) -> Any:
    caller: Caller = info.context
    function = caller.hub.hooks.rpc.get(method)
    if function is None:
        raise ProtocolError("not_found", f"no RPC method {method[:64]!r} on this server")
    if caller.conn is not None:
        client = client_of(caller.conn)
    else:  # over HTTP: the token's user, or the API key's holder
        client = Client("", caller.user or "", None, "")
    caller.hub.counters["in_rpc"] += 1
    result = caller.hub.hooks.call(f"rpc {method!r}", function, client, params)
    try:
        orjson.dumps(result)
    except TypeError:  # orjson's JSONEncodeError
        log.error("RPC method %r returned %r, which is not JSON", method, type(result).__name__)
        raise ProtocolError("internal", f"the server's rpc {method!r} hook failed") from None
    return result


@_coded
def _subscribe_messages(_root: Any, _info: Any, channel: str, since: int | None = None, epoch: str | None = None):
    validate_channel(channel)
    if (since is None) != (epoch is None):
        raise ProtocolError(
            "bad_request", "resume with both since and epoch (from an event or from history), or with neither"
        )
    return Source("messages", channel, since, epoch)


@_coded
def _subscribe_presence(_root: Any, _info: Any, channel: str) -> Source:
    return Source("presence", validate_channel(channel))


def _event(root: Any, _info: Any, **_args: Any) -> Any:
    """A subscription event's root field is the event itself."""
    return root


def _offset(value: Any) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise GraphQLError(f"an Offset is a non-negative integer, not {value!r}")
    return value


def build() -> GraphQLSchema:
    """The schema, with the resolvers attached to the fields the SDL names."""
    schema = build_schema(SDL)
    offset = schema.type_map["Offset"]
    offset.coerce_output_value = offset.coerce_input_value = _offset
    query, mutation, subscription = schema.query_type, schema.mutation_type, schema.subscription_type
    query.fields["history"].resolve = _history
    query.fields["presence"].resolve = _presence
    query.fields["channels"].resolve = _channels
    mutation.fields["publish"].resolve = _publish
    mutation.fields["rpc"].resolve = _rpc
    for name, subscribe in (("messages", _subscribe_messages), ("presence", _subscribe_presence)):
        subscription.fields[name].subscribe = subscribe
        subscription.fields[name].resolve = _event
    return schema
