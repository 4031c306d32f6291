"""Peer: uWebSockets through socketify, fanning out with uWS's native pub/sub.

The "native ceiling" (dialect `json`, see bench/PROTOCOL.md): subscribing is
`ws.subscribe(channel)`, publishing is `app.publish(channel, text, OpCode.TEXT)`, and uWS's
C++ topic tree does the fan-out (one shared buffer, writes coalesced per socket per loop
iteration). Compression is off (socketify's default, `compression=0`), so permessage-deflate
is declined even when offered. uWS drops a socket after `idle_timeout` (120 s) without
traffic; `send_pings_automatically=True` (uWS's own C++ default, socketify's is False) makes
the server ping before that, so a receive-only client that answers pings stays connected.
uWS unsubscribes closed sockets by itself. Needs Debian's `libuv1` at run time.

Run from the repo root:  .venv/bin/python -m bench.peers.socketify_server PORT
"""

import json
import sys

from socketify import App, AppListenOptions, OpCode


def make_app() -> App:
    app = App()

    def pubsub_message(ws, message, opcode) -> None:
        try:
            msg = json.loads(message)
            kind, channel = msg.get("type"), str(msg.get("channel"))
        except (ValueError, AttributeError, TypeError):
            return  # not a JSON object: ignore it
        if kind == "subscribe":
            ws.subscribe(channel)
            ws.send(json.dumps({"type": "reply", "id": msg.get("id")}), OpCode.TEXT)
        elif kind == "publish":
            text = json.dumps({"type": "message", "channel": channel, "data": msg.get("data")})
            app.publish(channel, text, OpCode.TEXT)

    def echo_message(ws, message, opcode) -> None:
        ws.send(message, opcode)

    for path, on_message in (("/ws", pubsub_message), ("/ws/echo", echo_message)):
        app.ws(path, {"message": on_message, "send_pings_automatically": True})
    app.any("/*", lambda res, req: res.write_status(404).end("Not Found"))
    return app


if __name__ == "__main__":
    port = int(sys.argv[1])
    app = make_app()
    app.listen(
        AppListenOptions(port=port, host="127.0.0.1"),
        lambda config: print(f"socketify peer listening on 127.0.0.1:{port}", flush=True),
    )
    app.run()
