"""What only the asyncio client has: coroutine tokens and callbacks, `async with` and `async for`."""

from __future__ import annotations

import asyncio

from switchboard_client import AsyncHTTPClient, Join
from switchboard_client.asyncio import connect

from tests.integration.servers import API_KEY
from tests.pyclient.flavours import run_async


def test_an_async_session(server):
    async def session() -> tuple:
        async with AsyncHTTPClient(server.url, API_KEY) as http:
            fetched = []

            async def token() -> str:  # awaited before every connection
                fetched.append(1)
                return await http.token("ann", channels=["presence-*"], publish=True)

            async with connect(server.ws_url + "/ws", token) as client:
                async with client.subscribe("presence-async", presence=True) as subscription:
                    async with connect(server.ws_url + "/ws", await http.token("bob", channels=["presence-*"])) as bob:
                        await bob.subscribe("presence-async")
                        joined = await subscription.recv(10)
                    offsets = [await client.publish("presence-async", n) for n in range(3)]
                    got = []
                    async for item in subscription:
                        if not isinstance(item, Join):
                            got.append(item)
                        if len(got) == 4:  # bob's leave, then the three messages
                            break
            return client.user, fetched, joined, offsets, got

    user, fetched, joined, offsets, got = run_async(session())
    assert user == "ann" and fetched == [1]
    assert joined == Join("presence-async", "bob", None)
    assert type(got[0]).__name__ == "Leave" and got[0].user == "bob"
    assert [(m.offset, m.data) for m in got[1:]] == [(offset, n) for n, offset in enumerate(offsets)]


def test_a_coroutine_is_told_of_a_restart(start_server):
    server = start_server()

    async def session() -> tuple:
        told = []

        async def on_unrecovered(gap) -> None:
            told.append(gap)

        async with connect(server.ws_url + "/ws", min_delay=0.05) as client:
            subscription = await client.subscribe("room", on_unrecovered=on_unrecovered)
            await client.publish("room", "before")
            before = await subscription.recv(10)
            await asyncio.to_thread(server.stop)
            await asyncio.to_thread(start_server, port=server.port)
            await client.publish("room", "after")
            after = await subscription.recv(10)
            return before.data, after.data, [gap.since for gap in told]

    assert run_async(session()) == ("before", "after", [1])
