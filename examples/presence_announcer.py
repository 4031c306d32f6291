"""Watch who comes and goes in a demo room and say so in the room: "ann joined", "ann left".

    SWITCHBOARD_API_KEY=dev make run                                  # the server and its demo
    SWITCHBOARD_API_KEY=dev .venv/bin/python examples/presence_announcer.py --room lobby

An independent process, as a service would be. It mints its own connection token over the HTTP
API (a callable, so every reconnect gets a fresh one), subscribes to the room's channel
(`presence-<room>`, the one the demo page chats in) with join and leave events, and publishes a
chat message for each, which every browser in the room shows. It is a member of the room too,
under its own name. Joins and leaves that happen while it is disconnected are not replayed
(presence is state, not history), so it announces only what it sees.
"""

from __future__ import annotations

import argparse
import logging
import os

from switchboard_client import HTTPClient, Join, Leave, connect
from switchboard_client.cli import endpoints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("SWITCHBOARD_API_KEY"))
    parser.add_argument("--room", default="lobby")
    parser.add_argument("--name", default="announcer", help="the user it appears as")
    args = parser.parse_args()
    if not args.api_key:
        parser.error("the HTTP API key is needed to mint a token: --api-key or SWITCHBOARD_API_KEY")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    http_url, ws_url = endpoints(args.url)
    channel = f"presence-{args.room}"
    with HTTPClient(http_url, args.api_key) as http:

        def token() -> str:
            return http.token(args.name, info={"bot": True}, channels=[channel], publish=[channel])

        with connect(ws_url, token) as client, client.subscribe(channel, presence=True) as room:
            logging.info("watching %s as %s", channel, client.user)
            for event in room:
                if isinstance(event, Join):
                    client.publish(channel, {"text": f"{event.user} joined"})
                elif isinstance(event, Leave):
                    client.publish(channel, {"text": f"{event.user} left"})


if __name__ == "__main__":
    main()
