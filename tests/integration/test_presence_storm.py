"""A crowd on one presence channel: thousands of clients subscribing at once, beside a stream.

Join/leave are pushed only while a channel has at most SWITCHBOARD_PRESENCE_PUSH_LIMIT members
(docs/protocol.md, "Presence past the push limit"), so a crowd costs O(N) frames, not O(N^2);
and the hub takes subscribes in batches, writing what they queued in between, so a client that
reads is never cut as a slow consumer by a burst the server made, and other channels flow on.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import multiprocessing
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as EventType

import jwt
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.integration.servers import TOKEN_SECRET, Client, Endpoint, RedisServer, Server

PUSH_LIMIT = 100  # the default
CHANNEL = "presence-storm"


class Member:
    """One client of the crowd: it reads everything at once, and counts what it was sent."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.reply: dict | None = None
        self.presence_frames = 0  # join, leave and presence notices
        self.answered = asyncio.Event()
        self.closed_by_server = False
        self.leaving = False
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                frame = json.loads(raw)
                if frame["type"] in ("join", "leave", "presence"):
                    self.presence_frames += 1
                elif frame["type"] in ("reply", "error"):
                    self.reply = frame
                    self.answered.set()
        except ConnectionClosed:
            pass
        self.closed_by_server = not self.leaving
        self.answered.set()

    async def leave(self) -> None:
        self.leaving = True
        await self.ws.close()
        await self.reader


def stream(port: int, received: Synchronized, stop: EventType, report: Connection) -> None:
    """A bystander on another channel, and a publisher sending it numbered messages, each once the
    bystander has the one before, at most about 60 a second (a connection may send 100). Run in a
    process of its own, so that the crowd's client never delays it; `received` counts what the
    bystander has, and `report` gets the numbers and any refusals once `stop` is set."""
    endpoint = Endpoint(port)
    numbers: list[int] = []
    refused: list[dict] = []
    with endpoint.client() as publisher, endpoint.client() as bystander:
        bystander.command("subscribe", channel="ticker")
        for number in itertools.count():
            reply = publisher.command("publish", channel="ticker", data=number, timeout=60)
            if reply["type"] == "error":
                refused.append(reply)
            else:
                numbers.append(bystander.next_push("message", timeout=60)["data"])
                received.value = len(numbers)
            if stop.wait(0.015):
                break
    report.send((numbers, refused))


@dataclass
class StormResult:
    replies: list[dict | None]
    closed_by_server: int
    presence_frames: int
    streamed: list[int]
    stream_refused: list[dict]
    streamed_during_storm: int
    members_listed: int


def tokens(count: int) -> list[str]:
    """Connection tokens for `count` users, each granted presence- channels (signed here, as the
    server's /api/tokens would)."""
    expires = int(time.time()) + 3600
    claims = {"channels": ["presence-*"], "exp": expires}
    return [jwt.encode({"sub": f"member-{i}", **claims}, TOKEN_SECRET, algorithm="HS256") for i in range(count)]


async def _open(endpoint: Endpoint, path: str) -> ClientConnection:
    ws = await connect(endpoint.ws_url + path, open_timeout=60, ping_interval=None, compression=None, max_queue=None)
    await ws.recv()  # welcome
    return ws


async def storm(endpoint: Endpoint, count: int) -> StormResult:
    """`count` clients, connected first, all send their subscribe to CHANNEL at once while a
    stream flows on another channel; returns once every one has its answer (or was closed)."""
    gate = asyncio.Semaphore(200)

    async def join(token: str) -> Member:
        async with gate:
            return Member(await _open(endpoint, f"/ws?token={token}"))

    members = await asyncio.gather(*(join(token) for token in tokens(count)))
    spawn = multiprocessing.get_context("spawn")
    received, stop = spawn.Value("i", 0), spawn.Event()
    report, report_end = spawn.Pipe(duplex=False)
    streamer = spawn.Process(target=stream, args=(endpoint.port, received, stop, report_end))
    streamer.start()
    try:
        while not received.value:  # the stream flows before the storm starts
            await asyncio.sleep(0.01)
        frame = json.dumps({"type": "subscribe", "channel": CHANNEL, "id": 1})
        for member in members:
            await member.ws.send(frame)
        streamed_before = received.value
        await asyncio.wait_for(asyncio.gather(*(member.answered.wait() for member in members)), 120)
        streamed_during = received.value - streamed_before
        listed = await asyncio.to_thread(endpoint.api, "GET", f"/api/channels/{CHANNEL}/presence")
    finally:
        stop.set()
    streamed, refused = await asyncio.to_thread(report.recv)
    streamer.join()
    result = StormResult(
        replies=[member.reply for member in members],
        closed_by_server=sum(member.closed_by_server for member in members),
        presence_frames=sum(member.presence_frames for member in members),
        streamed=streamed,
        stream_refused=refused,
        streamed_during_storm=streamed_during,
        members_listed=len(listed[1]["members"]),
    )
    await asyncio.gather(*(member.leave() for member in members))
    return result


@pytest.mark.parametrize("crowd", [3000, 10000])
def test_a_crowd_joining_at_once_is_answered_and_costs_no_more_than_the_push_limit(server: Server, crowd: int) -> None:
    # In a thread of its own: a browser test earlier in the session leaves Playwright's loop running here.
    with ThreadPoolExecutor(1) as pool:
        result = pool.submit(asyncio.run, storm(server, crowd)).result()

    assert result.closed_by_server == 0
    assert all(reply is not None and reply["type"] == "reply" for reply in result.replies)
    assert result.members_listed == crowd
    # Each member counts the crowd when it joins: pushes were on for the first ones only.
    counts = sorted(reply["result"]["members"] for reply in result.replies)
    assert counts[-1] == crowd
    pushing = [reply["result"]["presence_pushes"] for reply in result.replies]
    assert pushing.count(True) <= PUSH_LIMIT
    # Each join reaches at most PUSH_LIMIT members on each worker, then everyone hears once that
    # pushes stop: O(N), where pushing every join to every member would be N^2.
    workers = len(server.worker_pids())
    assert result.presence_frames <= workers * PUSH_LIMIT**2 + crowd
    # The bystander's stream went on through the storm, in order, nothing lost.
    assert result.stream_refused == []
    assert result.streamed == list(range(len(result.streamed)))
    assert result.streamed_during_storm > 0


# -- the push limit, small enough to watch --------------------------------------------------


@pytest.fixture(scope="module", params=["local", "redis"])
def limit_of_3(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose channels push join/leave while they have at most 3 members."""
    tmp_path = tmp_path_factory.mktemp("server")
    redis = RedisServer(tmp_path) if request.param == "redis" else None
    env = {"SWITCHBOARD_PRESENCE_PUSH_LIMIT": "3"}
    if redis is not None:
        env.update({"SWITCHBOARD_REDIS_URL": redis.url, "SWITCHBOARD_WORKERS": "2"})
    instance = Server(tmp_path, env).wait_ready()
    yield instance
    instance.stop()
    if redis is not None:
        redis.stop()


def pushes_until(client: Client, wanted: dict) -> list[dict]:
    """Take `client`'s pushes up to `wanted`; returns those before it. With Redis, a join sent
    just before a client subscribed may still reach it: presence there is eventually consistent."""
    before = []
    while (push := client.next_push()) != wanted:
        before.append(push)
    return before


def test_pushes_stop_past_the_limit_and_resume_within_it(limit_of_3: Server) -> None:
    server = limit_of_3
    channel = "presence-small"

    def join(user: str) -> dict:
        return {"type": "join", "channel": channel, "member": {"user": user, "info": None}}

    def leave(user: str) -> dict:
        return {"type": "leave", "channel": channel, "member": {"user": user, "info": None}}

    def notice(pushes: bool) -> dict:
        return {"type": "presence", "channel": channel, "pushes": pushes}

    clients = {user: server.client(token=server.token(user)) for user in ("ann", "bob", "cy", "dee", "eve")}
    ann, bob, cy, dee, eve = clients.values()
    try:
        first = ann.command("subscribe", channel=channel)["result"]
        assert (first["members"], first["presence_pushes"]) == (1, True)
        bob.command("subscribe", channel=channel)
        pushes_until(ann, join("bob"))
        third = cy.command("subscribe", channel=channel)["result"]
        assert (third["members"], third["presence_pushes"]) == (3, True)
        for member in (ann, bob):
            pushes_until(member, join("cy"))

        # The fourth member passes the limit: one notice instead of its join.
        fourth = dee.command("subscribe", channel=channel)["result"]
        assert (fourth["members"], fourth["presence_pushes"]) == (4, False)
        for member in (ann, bob, cy):
            assert join("dee") not in pushes_until(member, notice(False))

        # Past it, nothing: neither eve's join nor dee's leave is pushed. Back within it, a notice
        # says pushes resume (and the client asks for the members again).
        eve.command("subscribe", channel=channel)
        dee.command("unsubscribe", channel=channel)
        eve.command("unsubscribe", channel=channel)
        for member in (ann, bob, cy):
            assert pushes_until(member, notice(True)) == []
        members = ann.command("presence", channel=channel)["result"]["members"]
        assert sorted(member["user"] for member in members) == ["ann", "bob", "cy"]

        cy.command("unsubscribe", channel=channel)
        assert pushes_until(ann, leave("cy")) == []
    finally:
        for client in clients.values():
            client.close()
