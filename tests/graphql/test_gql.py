"""The `gql` Python client over its graphql-transport-ws transport, and GraphQL over HTTP POST.

gql runs on asyncio; each session runs in a thread of its own, because the browser tests'
Playwright keeps an event loop running in the main thread for the whole test session.
"""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from gql import Client, GraphQLRequest, gql
from gql.transport.exceptions import TransportQueryError
from gql.transport.websockets import WebsocketsTransport

from tests.graphql.clients import MESSAGES, PRESENCE, PUBLISH
from tests.integration.servers import API_KEY, Endpoint


def run(session) -> Any:
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, session).result()


def transport(endpoint: Endpoint, token: str | None = None) -> WebsocketsTransport:
    return WebsocketsTransport(
        url=endpoint.ws_url + "/graphql",
        init_payload={"token": token} if token else {},
        subprotocols=[WebsocketsTransport.GRAPHQLWS_SUBPROTOCOL],
    )


def post(endpoint: Endpoint, query: str, key: str | None = API_KEY, **variables: Any) -> tuple[int, dict]:
    return endpoint.api("POST", "/graphql", key=key, raw=json.dumps({"query": query, "variables": variables}).encode())


def test_gql_subscribes_publishes_and_sees_native_clients(server):
    token = server.token("mia")
    with server.client(token=server.token("ned")) as ned:
        ned.command("subscribe", channel="presence-gql")

        async def session() -> tuple[list, list, dict]:
            async with Client(transport=transport(server, token)) as client:
                where = (await client.execute(gql('{ history(channel: "presence-gql", limit: 0) { epoch offset } }')))[
                    "history"
                ]
                position = {"since": where["offset"], "epoch": where["epoch"]}
                feed = client.subscribe(
                    GraphQLRequest(MESSAGES, variable_values={"channel": "presence-gql", **position})
                )
                await client.execute(
                    GraphQLRequest(PUBLISH, variable_values={"channel": "presence-gql", "data": {"n": 1}})
                )
                ned.command("publish", channel="presence-gql", data={"n": 2})
                seen = []
                async for event in feed:
                    seen.append(event["messages"])
                    if len(seen) == 2:
                        break
                await feed.aclose()  # sends `complete`
                who = client.subscribe(GraphQLRequest(PRESENCE, variable_values={"channel": "presence-gql"}))
                first = await anext(who)
                await who.aclose()
                try:
                    await client.execute(gql('subscription { messages(channel: "private-x") { offset } }'))
                except TransportQueryError as refused:
                    private = refused.errors[0]
                return seen, first["presence"]["members"], private

        seen, members, private = run(session())
        assert [(m["from"], m["data"]) for m in seen] == [("mia", {"n": 1}), ("ned", {"n": 2})]
        assert sorted(member["user"] for member in members) == ["mia", "ned"]
        assert private["extensions"]["code"] == "forbidden"
        assert [m["data"] for m in ned.messages(2)] == [{"n": 1}, {"n": 2}]


def test_gql_gets_validation_errors_and_a_too_deep_query_refused(server):
    deep = "{ __schema { queryType { " + "ofType { " * 15 + "name" + " }" * 15 + " } } }"

    async def session() -> list[dict]:
        refusals = []
        async with Client(transport=transport(server)) as client:
            for query in (deep, "{ nothing }"):
                with pytest.raises(TransportQueryError) as refused:
                    await client.execute(gql(query))
                refusals.append(refused.value.errors[0])
            assert (await client.execute(gql("{ channels { name } }")))["channels"] is not None
        return refusals

    too_deep, unknown = run(session())
    assert too_deep["extensions"]["code"] == "too_deep"
    assert "nothing" in unknown["message"]


def test_http_post_runs_queries_and_mutations_with_a_key_or_a_token(server):
    status, body = post(server, PUBLISH, channel="private-ops", data={"by": "service"})
    assert status == 200 and body["data"]["publish"]["offset"] >= 1
    query = 'query { history(channel: "private-ops") { messages { from data } } }'
    status, body = post(server, query)
    assert (status, body["data"]["history"]["messages"][-1]) == (200, {"from": None, "data": {"by": "service"}})
    # A connection token is its user, with its grants: this one has none for private-ops.
    status, body = post(server, query, key=server.token("oli", channels=[]))
    assert status == 200 and body["data"] is None and body["errors"][0]["extensions"]["code"] == "forbidden"
    status, body = post(server, PUBLISH, key=server.token("oli"), channel="open", data=1)
    assert status == 200 and body["data"]["publish"]["offset"] >= 1
    status, body = post(server, "{ channels { name } }", key="forged")
    assert status == 401 and body["errors"][0]["extensions"]["code"] == "unauthorized"


def test_http_post_refuses_what_cannot_run_with_400(server):
    deep = "{ __schema { queryType { " + "ofType { " * 15 + "name" + " }" * 15 + " } } }"
    for query, variables in (
        ("{ channels {", {}),
        (deep, {}),
        ('query ($n: Int!) { history(channel: "a", limit: $n) { offset } }', {}),
        ('subscription { messages(channel: "a") { offset } }', {}),
    ):
        status, body = post(server, query, **variables)
        assert status == 400 and "data" not in body and body["errors"][0]["message"], (query, body)
    status, body = server.api("POST", "/graphql", raw=b"not json")
    assert status == 400 and body["errors"][0]["extensions"]["code"] == "bad_json"
