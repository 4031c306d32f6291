"""Peer: aiohttp.web with WebSocketResponse, one `await ws.send_str()` per subscriber.

Represents the other common asyncio stack (dialect `json`, see bench/PROTOCOL.md): one
process, library defaults (`compress=True`, so permessage-deflate is accepted when the client
offers it; no heartbeat). The delivery string is built once per publish and sent to each
subscriber in turn.

Run from the repo root:  .venv/bin/python -m bench.peers.aiohttp_server PORT
"""

import json
import sys

from aiohttp import WSMsgType, web

channels: dict[str, set] = {}  # channel name -> subscribed WebSocketResponse objects


async def publish(channel: str, text: str) -> None:
    for ws in list(channels.get(channel, ())):
        try:
            await ws.send_str(text)
        except ConnectionError:  # closed or reset: forget it, keep serving the others
            channels.get(channel, set()).discard(ws)


async def pubsub(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    joined: set[str] = set()
    try:
        async for frame in ws:
            if frame.type != WSMsgType.TEXT:
                continue
            try:
                msg = json.loads(frame.data)
                kind, channel = msg.get("type"), str(msg.get("channel"))
            except (ValueError, AttributeError):
                continue  # not a JSON object: ignore it
            if kind == "subscribe":
                channels.setdefault(channel, set()).add(ws)
                joined.add(channel)
                await ws.send_str(json.dumps({"type": "reply", "id": msg.get("id")}))
            elif kind == "publish":
                text = json.dumps({"type": "message", "channel": channel, "data": msg.get("data")})
                await publish(channel, text)
    finally:
        for channel in joined:
            subs = channels.get(channel)
            if subs is not None:
                subs.discard(ws)
                if not subs:
                    del channels[channel]
    return ws


async def echo(request: web.Request) -> web.WebSocketResponse:
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    async for frame in ws:
        if frame.type == WSMsgType.TEXT:
            await ws.send_str(frame.data)
        elif frame.type == WSMsgType.BINARY:
            await ws.send_bytes(frame.data)
    return ws


def make_app() -> web.Application:
    app = web.Application()
    app.add_routes([web.get("/ws", pubsub), web.get("/ws/echo", echo)])
    return app


if __name__ == "__main__":
    # backlog: aiohttp's default is 128; 2048 matches gunicorn's default (see README).
    # shutdown_timeout: don't wait 60 s for open WebSockets when the harness stops us.
    web.run_app(
        make_app(),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        backlog=2048,
        shutdown_timeout=1,
        print=None,
    )
