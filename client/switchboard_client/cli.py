"""`switchboard`: tail a channel, publish a message, see who is online; for people at a terminal.

    switchboard tail CHANNEL [--since N] [--json]
    switchboard publish CHANNEL JSON
    switchboard online CHANNEL

`--url` (or SWITCHBOARD_URL; default http://127.0.0.1:8000) is the server, as http:// or ws://;
`--token` (SWITCHBOARD_TOKEN) a connection token for the WebSocket; `--api-key`
(SWITCHBOARD_API_KEY) the HTTP API's key. `publish` and `online` use the HTTP API when there is
a key, else the WebSocket (as the token's user, or anonymously). Exit status: 0; 1 when the
server refused (its code and message go to stderr); 2 for a usage error.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any
from urllib.parse import urlsplit

from switchboard_client.errors import RecoveryError, SwitchboardError
from switchboard_client.http_api import HTTPClient
from switchboard_client.protocol import Join, Message
from switchboard_client.sync import connect


def endpoints(url: str) -> tuple[str, str]:
    """(the HTTP base URL, the /ws URL) of a server named by either."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "ws", "wss") or not parts.netloc:
        raise ValueError(f"--url must look like http://host:port or ws://host:port/ws, not {url!r}")
    secure = parts.scheme in ("https", "wss")
    path = parts.path.rstrip("/").removesuffix("/ws")
    return (
        f"{'https' if secure else 'http'}://{parts.netloc}{path}",
        f"{'wss' if secure else 'ws'}://{parts.netloc}{path}/ws",
    )


def _compact(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _show(item: Any, as_json: bool) -> str:
    if isinstance(item, Message):
        if as_json:
            return _compact(
                {
                    "channel": item.channel,
                    "offset": item.offset,
                    "epoch": item.epoch,
                    "from": item.sender,
                    "data": item.data,
                }
            )
        return f"#{item.offset} {item.sender or '(service)'}: {_compact(item.data)}"
    kind = "join" if isinstance(item, Join) else "leave"
    if as_json:
        return _compact({"type": kind, "channel": item.channel, "user": item.user, "info": item.info})
    return f"* {item.user} {'joined' if kind == 'join' else 'left'}"


def tail(args: argparse.Namespace) -> int:
    _, ws_url = endpoints(args.url)
    with connect(ws_url, args.token or None, timeout=args.timeout) as client:
        subscription = client.subscribe(args.channel, since=args.since, presence=True)
        while True:
            try:
                for item in subscription:
                    print(_show(item, args.json), flush=True)
                return 0
            except RecoveryError as gap:
                print(f"switchboard: {gap.message}", file=sys.stderr, flush=True)


def publish(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.data)
    except ValueError as exc:
        print(f"switchboard: the message is not JSON ({exc}); a string needs quotes: '\"hi\"'", file=sys.stderr)
        return 2
    http_url, ws_url = endpoints(args.url)
    if args.api_key:
        with HTTPClient(http_url, args.api_key, timeout=args.timeout) as http:
            offset = http.publish(args.channel, data)
    else:
        with connect(ws_url, args.token or None, timeout=args.timeout) as client:
            offset = client.publish(args.channel, data)
    print(offset)
    return 0


def online(args: argparse.Namespace) -> int:
    http_url, ws_url = endpoints(args.url)
    if args.api_key:
        with HTTPClient(http_url, args.api_key, timeout=args.timeout) as http:
            members = http.presence(args.channel)
    else:
        with connect(ws_url, args.token or None, timeout=args.timeout) as client:
            members = client.presence(args.channel)
    for member in sorted(members, key=lambda m: m.user):
        print(member.user if member.info is None else f"{member.user} {_compact(member.info)}")
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="switchboard", description="Tail, publish to and list Switchboard channels.")
    top.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8000"))
    top.add_argument("--token", default=os.environ.get("SWITCHBOARD_TOKEN"), help="a connection token (JWT)")
    top.add_argument("--api-key", default=os.environ.get("SWITCHBOARD_API_KEY"), help="the HTTP API key")
    top.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server (default 10)")
    commands = top.add_subparsers(dest="command", required=True)
    each = commands.add_parser("tail", help="print a channel's messages as they come")
    each.add_argument("channel")
    each.add_argument("--since", type=int, help="start after this offset (0: everything the channel holds)")
    each.add_argument("--json", action="store_true", help="one JSON object per line")
    each.set_defaults(run=tail)
    each = commands.add_parser("publish", help="publish one message and print its offset")
    each.add_argument("channel")
    each.add_argument("data", help="the message, as JSON")
    each.set_defaults(run=publish)
    each = commands.add_parser("online", help="list who is subscribed to a channel")
    each.add_argument("channel")
    each.set_defaults(run=online)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        endpoints(args.url)
    except ValueError as error:
        print(f"switchboard: {error}", file=sys.stderr)
        return 2
    try:
        return args.run(args)
    except SwitchboardError as error:
        print(f"switchboard: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
