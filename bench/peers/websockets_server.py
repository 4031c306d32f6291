"""Peer: the `websockets` asyncio server, fanning out with `websockets.broadcast()`.

Represents the mainstream Python asyncio reference (dialect `json`, see bench/PROTOCOL.md):
one process, one event loop, library defaults (permessage-deflate is negotiated when the
client offers it; pings every 20 s, closed if no pong within 20 s). The delivery string is
built once per publish; `broadcast()` encodes it to UTF-8 once and frames it per connection.

Run from the repo root:  .venv/bin/python -m bench.peers.websockets_server PORT
"""

import asyncio
import json
import sys

from websockets.asyncio.server import broadcast, serve
from websockets.exceptions import ConnectionClosed

channels: dict[str, set] = {}  # channel name -> subscribed connections


async def pubsub(ws) -> None:
    joined: set[str] = set()
    try:
        async for raw in ws:
            try:
                msg = json.loads(raw)
                kind, channel = msg.get("type"), str(msg.get("channel"))
            except (ValueError, AttributeError):
                continue  # not a JSON object: ignore it
            if kind == "subscribe":
                channels.setdefault(channel, set()).add(ws)
                joined.add(channel)
                await ws.send(json.dumps({"type": "reply", "id": msg.get("id")}))
            elif kind == "publish":
                text = json.dumps({"type": "message", "channel": channel, "data": msg.get("data")})
                broadcast(channels.get(channel, ()), text)
    finally:
        for channel in joined:
            subs = channels.get(channel)
            if subs is not None:
                subs.discard(ws)
                if not subs:
                    del channels[channel]


async def echo(ws) -> None:
    async for message in ws:
        await ws.send(message)


async def handler(ws) -> None:
    path = ws.request.path.split("?", 1)[0]
    try:
        if path == "/ws":
            await pubsub(ws)
        elif path == "/ws/echo":
            await echo(ws)
        else:
            await ws.close(1008, "unknown path")
    except ConnectionClosed:
        pass


async def main(port: int) -> None:
    # backlog: asyncio's default is 100; 2048 matches gunicorn's default so every peer's
    # listen queue is the same when the load generator opens thousands of sockets at once.
    async with serve(handler, "127.0.0.1", port, backlog=2048) as server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main(int(sys.argv[1])))
