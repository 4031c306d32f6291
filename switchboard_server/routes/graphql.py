"""`/graphql`: the `graphql-transport-ws` WebSocket, and queries and mutations over HTTP POST.

The WebSocket needs the `graphql-transport-ws` subprotocol; a client that does not offer it is
closed with 4406 after the upgrade (browsers cannot read a refused handshake). Connection limits
refuse before the upgrade, as on `/ws`; who the client is comes later, in `connection_init`.
POST takes `{"query", "operationName", "variables"}` with `Authorization: Bearer <connection
token or API key>` and answers GraphQL's JSON: 200 with `data` (and any field `errors`), 400
with only `errors` when the request cannot run, 401 for a bad token.
"""

from __future__ import annotations

import orjson
from flask import Response, request
from graphql import OperationType

from switchboard_server.core.auth import ANONYMOUS
from switchboard_server.core.errors import ProtocolError
from switchboard_server.protocols.graphql import SUBPROTOCOL, GraphQLServer
from switchboard_server.protocols.graphql.schema import error
from switchboard_server.protocols.graphql.server import Refused
from switchboard_server.protocols.graphql.session import GraphQLSession
from switchboard_server.routes import current_hub, current_state
from switchboard_server.routes.blueprint import blueprint
from switchboard_server.routes.errors import error_response
from switchboard_server.routes.websocket import handshake, upgrade
from switchboard_server.transport.handshake import log_refusal

bp = blueprint("graphql", __name__)


def current_graphql() -> GraphQLServer:
    return current_state().graphql


def _bearer() -> str | None:
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@bp.route("/graphql", websocket=True)
def websocket():
    hub = current_hub()
    try:
        hub.admit(ANONYMOUS, request.remote_addr or "")
    except ProtocolError as refused:
        if refused.code != "unauthorized":  # who the client is, connection_init says
            log_refusal(hub.counters, request.remote_addr or "", refused.code, refused.message)
            return error_response(refused.code, refused.message, refused.http_status)
    session = GraphQLSession(current_graphql(), _bearer(), handshake())
    offered = {part.strip() for part in request.headers.get("Sec-WebSocket-Protocol", "").split(",")}
    if SUBPROTOCOL not in offered:
        return upgrade(session.refuse_subprotocol, ANONYMOUS)
    return upgrade(session.serve, ANONYMOUS, subprotocol=SUBPROTOCOL)


def _graphql_response(value: dict, status: int = 200) -> Response:
    accepts = request.headers.get("Accept", "")
    mimetype = "application/graphql-response+json" if "application/graphql-response+json" in accepts else None
    return Response(orjson.dumps(value), status=status, mimetype=mimetype or "application/json")


def _refusal(code: str, message: str, status: int) -> Response:
    return _graphql_response({"errors": [error(code, message).formatted]}, status)


@bp.post("/graphql")
def http():
    server = current_graphql()
    try:
        caller = server.http_caller(request.headers.get("Authorization", ""))
    except ProtocolError as refused:
        return _refusal(refused.code, refused.message, 401)
    try:
        body = orjson.loads(request.get_data(cache=False))
    except orjson.JSONDecodeError as exc:
        return _refusal("bad_json", f"body is not valid JSON: {exc}", 400)
    if not isinstance(body, dict) or not isinstance(body.get("query"), str):
        return _refusal("bad_request", 'body must be a JSON object with a "query" string', 400)
    name, variables = body.get("operationName"), body.get("variables")
    if not isinstance(name, str | None) or not isinstance(variables, dict | None):
        return _refusal("bad_request", '"operationName" must be a string and "variables" an object', 400)
    try:
        document, kind = server.prepare(body["query"], name)
        if kind is OperationType.SUBSCRIPTION:
            return _refusal("bad_request", "subscriptions need the WebSocket: /graphql with graphql-transport-ws", 400)
        return _graphql_response(server.execute(document, name, variables, caller))
    except Refused as refused:
        return _graphql_response({"errors": refused.errors}, 400)
