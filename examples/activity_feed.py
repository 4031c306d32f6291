"""A back-end service telling the demo what it is doing: events on the `activity` channel, over HTTP.

    SWITCHBOARD_API_KEY=dev make run                                  # the server and its demo
    SWITCHBOARD_API_KEY=dev .venv/bin/python examples/activity_feed.py [--every 2] [--count 0]

It holds no socket: each event is one `POST /api/publish` through the HTTP client, which times
out and retries (a restart of the server costs a retry, not an event, and never a duplicate:
every publish carries an idempotency key). The demo page's activity panel shows each event as it
is published; the offset of each is printed here.
"""

from __future__ import annotations

import argparse
import itertools
import os
import time

from switchboard_client import HTTPClient
from switchboard_client.cli import endpoints

# What the imaginary shop behind the demo does, over and over.
EVENTS = [
    {"event": "order placed", "items": 3},
    {"event": "payment captured"},
    {"event": "build finished", "status": "green"},
    {"event": "user signed up"},
    {"event": "order shipped", "carrier": "post"},
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=os.environ.get("SWITCHBOARD_URL", "http://127.0.0.1:8000"))
    parser.add_argument("--api-key", default=os.environ.get("SWITCHBOARD_API_KEY"))
    parser.add_argument("--channel", default="activity")
    parser.add_argument("--every", type=float, default=2.0, help="seconds between events")
    parser.add_argument("--count", type=int, default=0, help="stop after this many (0: never)")
    args = parser.parse_args()
    if not args.api_key:
        parser.error("the HTTP API needs its key: --api-key or SWITCHBOARD_API_KEY")
    http_url, _ = endpoints(args.url)
    numbers = itertools.count(1) if not args.count else range(1, args.count + 1)
    with HTTPClient(http_url, args.api_key) as http:
        for n in numbers:
            event = {**EVENTS[(n - 1) % len(EVENTS)], "n": n}
            print(http.publish(args.channel, event), flush=True)
            if args.count == 0 or n < args.count:
                time.sleep(args.every)


if __name__ == "__main__":
    main()
