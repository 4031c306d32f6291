"""Real WebSocket clients that nobody here wrote, each through a whole session.

Each one connects as a known user, reads its welcome, subscribes, publishes, gets its own message
back with the data intact, and closes: the close must complete with the server's 1000. Then each
one, connected to a server that is shut down (SIGTERM), must be told 1012 (reconnect later: the
drain, docs/deployment.md). The clients are the
`websockets` asyncio client, `websocket-client`, aiohttp's client and Node's `ws` (through
tests/client/real_client.mjs); Chromium's own WebSocket is in tests/browser/test_browser_client_close.py.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import struct
import subprocess
import threading
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp
import pytest
import websocket
import websockets
from websockets.asyncio.client import connect

from tests.integration.servers import ROOT

# Text a sloppy client would mangle (escapes, U+2028, a NUL, astral), numbers, nesting, nulls.
DATA = {
    "text": 'héllo wörld ✓ 你好 🚀 "quoted" \\ back\nslash \u2028 \x00 end',
    "n": 42,
    "ratio": 0.25,
    "big": 2**53,
    "flags": [True, False, None],
    "nested": {"empty": {}, "list": [], "deep": [[1, [2, [3]]]]},
}
TIMEOUT = 10.0
T = TypeVar("T")


@dataclass
class Session:
    """What a client saw: its welcome, the replies to its commands, its message, the close code."""

    welcome: dict
    subscribed: dict
    published: dict
    message: dict
    close_code: int | None  # the code in the server's close frame; None if none came


def is_reply(command_id: int) -> Callable[[dict], bool]:
    return lambda frame: frame.get("id") == command_id and frame["type"] in ("reply", "error")


def is_type(kind: str) -> Callable[[dict], bool]:
    return lambda frame: frame["type"] == kind


def take(inbox: list[dict], matches: Callable[[dict], bool]) -> dict | None:
    for index, frame in enumerate(inbox):
        if matches(frame):
            return inbox.pop(index)
    return None


def wait_for(inbox: list[dict], recv: Callable[[], str], matches: Callable[[dict], bool]) -> dict:
    """The first frame that `matches`, received or already in `inbox` (where the others stay)."""
    while (frame := take(inbox, matches)) is None:
        inbox.append(json.loads(recv()))
    return frame


async def await_for(inbox: list[dict], recv: Callable[[], Awaitable[str]], matches: Callable[[dict], bool]) -> dict:
    while (frame := take(inbox, matches)) is None:
        inbox.append(json.loads(await asyncio.wait_for(recv(), TIMEOUT)))
    return frame


def run_in_own_loop(session: Coroutine[Any, Any, T]) -> T:
    """asyncio.run, in a thread of its own: the browser tests' Playwright keeps an event loop
    running in the main thread for the whole session, where asyncio.run would refuse to start."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, session).result()


SUBSCRIBE = {"type": "subscribe", "id": 1}
PUBLISH = {"type": "publish", "id": 2, "data": DATA}


# -- one session per client, each in its library's own idiom ---------------------------------------


def session_with_websockets(url: str, channel: str) -> Session:
    async def session() -> Session:
        inbox: list[dict] = []
        async with connect(url, open_timeout=TIMEOUT, close_timeout=TIMEOUT) as ws:
            welcome = await await_for(inbox, ws.recv, is_type("welcome"))
            await ws.send(json.dumps({**SUBSCRIBE, "channel": channel}))
            subscribed = await await_for(inbox, ws.recv, is_reply(1))
            await ws.send(json.dumps({**PUBLISH, "channel": channel}))
            published = await await_for(inbox, ws.recv, is_reply(2))
            message = await await_for(inbox, ws.recv, is_type("message"))
            await ws.close(1000)
        code = ws.protocol.close_rcvd.code if ws.protocol.close_rcvd is not None else None
        return Session(welcome, subscribed, published, message, code)

    return run_in_own_loop(session())


def session_with_websocket_client(url: str, channel: str) -> Session:
    inbox: list[dict] = []
    ws = websocket.create_connection(url, timeout=TIMEOUT)
    welcome = wait_for(inbox, ws.recv, is_type("welcome"))
    ws.send(json.dumps({**SUBSCRIBE, "channel": channel}))
    subscribed = wait_for(inbox, ws.recv, is_reply(1))
    ws.send(json.dumps({**PUBLISH, "channel": channel}))
    published = wait_for(inbox, ws.recv, is_reply(2))
    message = wait_for(inbox, ws.recv, is_type("message"))
    ws.close(websocket.STATUS_NORMAL, timeout=TIMEOUT)
    # close() waits for the server's close frame and keeps it.
    reply = getattr(ws, "close_frame", None)
    code = struct.unpack("!H", reply.data[:2])[0] if reply is not None and len(reply.data) >= 2 else None
    return Session(welcome, subscribed, published, message, code)


def session_with_aiohttp(url: str, channel: str) -> Session:
    async def session() -> Session:
        inbox: list[dict] = []
        timeout = aiohttp.ClientWSTimeout(ws_receive=TIMEOUT, ws_close=TIMEOUT)
        async with aiohttp.ClientSession() as http, http.ws_connect(url, timeout=timeout) as ws:
            welcome = await await_for(inbox, ws.receive_str, is_type("welcome"))
            await ws.send_json({**SUBSCRIBE, "channel": channel})
            subscribed = await await_for(inbox, ws.receive_str, is_reply(1))
            await ws.send_json({**PUBLISH, "channel": channel})
            published = await await_for(inbox, ws.receive_str, is_reply(2))
            message = await await_for(inbox, ws.receive_str, is_type("message"))
            await ws.close(code=aiohttp.WSCloseCode.OK)
            # close() waits for the server's close frame and records its code.
            return Session(welcome, subscribed, published, message, ws.close_code)

    return run_in_own_loop(session())


def node() -> str:
    found = shutil.which("node")
    if found is None:
        pytest.fail("the Node client needs Node.js 20 or later on PATH (apt-get install -y nodejs)")
    if not (ROOT / "node_modules" / "ws").is_dir():
        pytest.fail("the Node client needs the npm package `ws`: run `npm ci` (or `make system-deps`)")
    return found


NODE_CLIENT = "tests/client/real_client.mjs"


def session_with_node_ws(url: str, channel: str) -> Session:
    result = subprocess.run(
        [node(), NODE_CLIENT, "session", url, channel, json.dumps(DATA)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    seen = json.loads(result.stdout)
    return Session(seen["welcome"], seen["subscribed"], seen["published"], seen["message"], seen["close"]["code"])


SESSIONS: dict[str, Callable[[str, str], Session]] = {
    "websockets": session_with_websockets,
    "websocket-client": session_with_websocket_client,
    "aiohttp": session_with_aiohttp,
    "node-ws": session_with_node_ws,
}


@pytest.mark.parametrize("client", SESSIONS)
def test_a_real_client_subscribes_publishes_hears_itself_and_closes_with_1000(server, client):
    user = f"{client}-user"
    channel = f"room-{client}"
    seen = SESSIONS[client](f"{server.ws_url}/ws?token={server.token(user)}", channel)

    assert seen.welcome["user"] == user
    assert seen.subscribed["type"] == "reply", seen.subscribed
    assert seen.published["type"] == "reply", seen.published
    offset = seen.published["result"]["offset"]
    assert seen.message == {"type": "message", "channel": channel, "offset": offset, "data": DATA, "from": user}
    assert seen.close_code == 1000
    # And the server let go of it: the channel has no subscriber left.
    server.wait_until(lambda: channel not in {c["name"] for c in server.api("GET", "/api/channels")[1]["channels"]})


# -- held open until the server shuts down ---------------------------------------------------------


def hold_with_websockets(url: str, channel: str, subscribed: threading.Event) -> int | None:
    async def hold() -> int | None:
        inbox: list[dict] = []
        async with connect(url, open_timeout=TIMEOUT) as ws:
            await await_for(inbox, ws.recv, is_type("welcome"))
            await ws.send(json.dumps({**SUBSCRIBE, "channel": channel}))
            assert (await await_for(inbox, ws.recv, is_reply(1)))["type"] == "reply"
            subscribed.set()
            try:
                async for _ in ws:
                    pass
            except websockets.ConnectionClosed:
                pass
        return ws.protocol.close_rcvd.code if ws.protocol.close_rcvd is not None else None

    return asyncio.run(hold())


def hold_with_websocket_client(url: str, channel: str, subscribed: threading.Event) -> int | None:
    inbox: list[dict] = []
    ws = websocket.create_connection(url, timeout=TIMEOUT)
    wait_for(inbox, ws.recv, is_type("welcome"))
    ws.send(json.dumps({**SUBSCRIBE, "channel": channel}))
    assert wait_for(inbox, ws.recv, is_reply(1))["type"] == "reply"
    subscribed.set()
    ws.settimeout(30)
    while True:
        # With control frames, the server's close frame comes back here (answered with our own).
        opcode, frame = ws.recv_data_frame(control_frame=True)
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            ws.shutdown()
            return struct.unpack("!H", frame.data[:2])[0] if len(frame.data) >= 2 else None


def hold_with_aiohttp(url: str, channel: str, subscribed: threading.Event) -> int | None:
    async def hold() -> int | None:
        inbox: list[dict] = []
        timeout = aiohttp.ClientWSTimeout(ws_receive=30, ws_close=TIMEOUT)
        async with aiohttp.ClientSession() as http, http.ws_connect(url, timeout=timeout) as ws:
            await await_for(inbox, ws.receive_str, is_type("welcome"))
            await ws.send_json({**SUBSCRIBE, "channel": channel})
            assert (await await_for(inbox, ws.receive_str, is_reply(1)))["type"] == "reply"
            subscribed.set()
            while (await ws.receive()).type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                pass
            return ws.close_code

    return asyncio.run(hold())


def hold_with_node_ws(url: str, channel: str, subscribed: threading.Event) -> int | None:
    process = subprocess.Popen(
        [node(), NODE_CLIENT, "hold", url, channel], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert json.loads(process.stdout.readline()) == {"subscribed": True}, process.stderr.read()
        subscribed.set()
        said = json.loads(process.stdout.readline())  # the script gives up by itself after 30 s
        assert "close" in said, said
        return said["close"]["code"]
    finally:
        if process.poll() is None:
            process.kill()
        process.wait()
        process.stdout.close()
        process.stderr.close()


HOLDS: dict[str, Callable[[str, str, threading.Event], int | None]] = {
    "websockets": hold_with_websockets,
    "websocket-client": hold_with_websocket_client,
    "aiohttp": hold_with_aiohttp,
    "node-ws": hold_with_node_ws,
}


def test_every_real_client_is_told_1012_when_the_server_shuts_down(start_server):
    server = start_server()
    ready = {client: threading.Event() for client in HOLDS}

    def hold(client: str) -> int | None:
        try:
            return HOLDS[client](f"{server.ws_url}/ws?token={server.token(client)}", "lobby", ready[client])
        finally:
            ready[client].set()  # subscribed, or failed: either way the test may go on

    with ThreadPoolExecutor(len(HOLDS)) as pool:
        codes = {client: pool.submit(hold, client) for client in HOLDS}
        for client, event in ready.items():
            assert event.wait(30), f"{client} never got subscribed"
        failed = {client: future.exception() for client, future in codes.items() if future.done()}
        assert not failed, failed
        assert server.api("GET", "/api/channels")[1]["channels"] == [{"name": "lobby", "subscribers": len(HOLDS)}]

        assert server.stop(signal.SIGTERM) == 0
        seen = {client: future.result(timeout=30) for client, future in codes.items()}
    assert seen == {client: 1012 for client in HOLDS}
