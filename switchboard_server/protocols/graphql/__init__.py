"""GraphQL on the hub: the `graphql-transport-ws` protocol and queries over HTTP (docs/graphql.md).

`schema.py` is the schema over the hub's operations, `documents.py` parses, validates and limits
documents once per text, `messages.py` reads and frames the protocol's messages, `feed.py` holds the
seam's codecs (one per prepared subscription, shared by every subscriber of it), `session.py`
runs one connection and `server.py` ties them to a hub. Nothing here imports Flask or touches a
socket other than through the hub's connections.
"""

from switchboard_server.protocols.graphql.messages import SUBPROTOCOL
from switchboard_server.protocols.graphql.server import GraphQLServer

__all__ = ["SUBPROTOCOL", "GraphQLServer"]
