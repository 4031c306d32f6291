"""GraphQL for one hub: the schema, the checked documents, the interned feeds, and requests.

One per hub (the app keeps it beside the hub). Feeds are interned in a weak table: a feed lives
as long as a channel holds it for a subscriber, so the last subscriber out drops it with no
bookkeeping here. Queries and mutations run the same way over the WebSocket and over HTTP.
"""

from __future__ import annotations

import hmac
import weakref
from typing import TYPE_CHECKING

import orjson
from graphql import (
    Executor,
    GraphQLError,
    OperationType,
    create_source_event_stream,
    execute_root_selection_set,
    get_operation_ast,
)

from switchboard_server.core.access import Grants
from switchboard_server.core.auth import ANONYMOUS
from switchboard_server.core.errors import ProtocolError
from switchboard_server.protocols.graphql import schema
from switchboard_server.protocols.graphql.documents import Document, Documents
from switchboard_server.protocols.graphql.feed import MessagesFeed, PresenceFeed
from switchboard_server.protocols.graphql.schema import Caller, Source

if TYPE_CHECKING:
    from switchboard_server.core.hub import Hub
    from switchboard_server.transport.connection import Connection

FEEDS = {"messages": MessagesFeed, "presence": PresenceFeed}


class Refused(Exception):
    """An operation that does not run: its errors, formatted, for an `error` message or a 400."""

    def __init__(self, errors: list[GraphQLError]) -> None:
        super().__init__(errors[0].message)
        self.errors = [item.formatted for item in errors]


class GraphQLServer:
    """Everything GraphQL that a hub's connections and HTTP requests share."""

    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.schema = schema.build()
        self.documents = Documents(self.schema, hub.config.graphql_max_depth, hub.config.graphql_max_fields)
        self._feeds: weakref.WeakValueDictionary[tuple, MessagesFeed | PresenceFeed] = weakref.WeakValueDictionary()

    def caller(self, conn: Connection) -> Caller:
        return Caller(self.hub, conn.user, conn.grants, conn=conn)

    def http_caller(self, authorization: str) -> Caller:
        """The API key is trusted; a connection token is its user; no token is anonymous, where allowed."""
        scheme, _, given = authorization.partition(" ")
        given = given.strip()
        if not given or scheme.lower() != "bearer":
            identity = ANONYMOUS
        else:
            key = self.hub.config.api_key
            if key and hmac.compare_digest(given.encode(), key.encode()):
                return Caller(self.hub, None, Grants(), trusted=True)
            identity = self.hub.tokens.verify(given)
        if identity.user is None and not self.hub.config.allow_anonymous:
            raise ProtocolError("unauthorized", "send 'Authorization: Bearer <connection token or API key>'")
        return Caller(self.hub, identity.user, identity.grants())

    def prepare(self, query: str, operation_name: str | None) -> tuple[Document, OperationType]:
        """The checked document and the kind of the operation to run; `Refused` if it may not."""
        document = self.documents.get(query)
        if document.errors:
            raise Refused(document.errors)
        operation = get_operation_ast(document.node, operation_name)
        if operation is None:
            raise Refused([GraphQLError("Unable to identify operation: name one of the document's operations")])
        return document, operation.operation

    def execute(self, document: Document, operation_name: str | None, variables: dict | None, caller: Caller) -> dict:
        """Run a query or a mutation; field errors are in the result, as GraphQL has them, and
        variables that do not fit are `Refused` before anything runs."""
        executor = Executor.build(self.schema, document.node, None, caller, variables, operation_name)
        if isinstance(executor, list):
            raise Refused(executor)
        return execute_root_selection_set(executor).formatted

    def source(
        self, query: str, document: Document, operation_name: str | None, variables: dict | None
    ) -> tuple[Source, MessagesFeed | PresenceFeed]:
        """Where a subscription joins the hub, and the (interned) feed its events are framed by."""
        executor = Executor.build(self.schema, document.node, None, None, variables, operation_name)
        if isinstance(executor, list):
            raise Refused(executor)
        source = create_source_event_stream(executor)
        if not isinstance(source, Source):
            raise Refused(source.errors)
        coerced = executor.variable_values.coerced
        shared = {name: value for name, value in coerced.items() if name not in document.resume_variables}
        key = (query, operation_name, orjson.dumps(shared, option=orjson.OPT_SORT_KEYS))
        feed = self._feeds.get(key)
        if feed is None:
            feed = self._feeds[key] = FEEDS[source.kind](executor)
        return source, feed

    def feed_count(self) -> int:
        """Feeds alive: one per prepared subscription that has subscribers."""
        return len(self._feeds)
